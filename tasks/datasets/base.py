"""What every raw dataset reader provides.

A reader parses the official layout into a SAMPLE TABLE (a pandas DataFrame, one row per image) with
the columns of :data:`SAMPLE_COLUMNS`, decodes one image into grey levels in [0, 1], and renders its mask.
It knows nothing of OpenMMLab: ``tasks.prepare`` turns the table into the prepared layout.

Readers may add columns of their own (Object-CXR: ``member`` of a zip, ``official_split``; COVID Rural:
``mask_file``); each row reaches ``load_pixels`` / ``load_mask`` as a dict. Two optional hooks let a
dataset with vector shapes render them exactly at the prepared size (``prepared_mask``) and put more
than boxes into its COCO annotations (``coco_annotations``); ``split`` gives the protocol's split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from tasks.errors import DatasetLayoutError, Failure
from tasks.image import Geometry

SAMPLE_COLUMNS = {
    "image_id": "unique image id (also the prepared file name)",
    "patient_id": "patient id (splits never put one patient in two splits)",
    "file": "absolute path of the raw image file",
    "boxes": "list of [x, y, w, h] in original pixels, (x, y) = top-left corner",
    "labels": "list of 0-based class indices, one per box",
    "mask_source": "what the mask is rendered from (dataset-specific; None = from the boxes)",
    "view": "view position (PA, AP, ...) where known",
}


@dataclass
class ParseResult:
    """A parsed raw dataset: the usable samples, what could not be used, and counts vs the release."""

    samples: pd.DataFrame
    failures: list[Failure] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # label files / image folders actually read


def empty_samples() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in SAMPLE_COLUMNS})


class RawDataset:
    """Base class: declarative attributes + the three methods a dataset implements."""

    name: ClassVar[str]
    title: ClassVar[str]
    url: ClassVar[str]
    classes: ClassVar[tuple[str, ...]]
    equalize: ClassVar[bool]  # histogram equalisation in the protocol
    multi_label: ClassVar[bool] = False  # one binary mask per class (boxes of different classes overlap)
    fractions: ClassVar[tuple[int, ...]] = (100,)  # label fractions (percent) that tasks train on
    expected: ClassVar[dict[str, int]] = {}  # counts of the official release
    required: ClassVar[tuple[str, ...]] = ()  # paths (relative to the root) that must exist
    split_ratios: ClassVar[tuple[float, float, float]] = (0.6, 0.2, 0.2)  # train / val / test
    # The published split CSVs (``--splits lovt:DIR``, see ``tasks.lovt``): folder names in the reference
    # repository's ``datasets/``, whether the CSVs carry boxes, the box order they were written in, what
    # their class numbers add to our 0-based labels, and the share of validation.csv used for validation.
    lovt_folders: ClassVar[tuple[str, ...]] = ()
    lovt_detection: ClassVar[bool] = False
    lovt_box_order: ClassVar[str] = "xywh"
    lovt_class_offset: ClassVar[int] = 1
    lovt_val_fraction: ClassVar[int] = 100

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def source(self) -> dict:
        """What writes the prepared folder (recorded in its manifest; a run refuses a folder written by
        something else, e.g. a task file whose id looks like a built-in folder name)."""
        return {"kind": "built-in"}

    def check_layout(self) -> None:
        """Raise :class:`DatasetLayoutError` naming what is missing from the raw folder."""
        if not self.root.is_dir():
            raise DatasetLayoutError(
                f"{self.title}: raw folder {self.root} does not exist. Download: {self.url}"
            )
        if not any(self.root.iterdir()):
            raise DatasetLayoutError(f"{self.title}: raw folder {self.root} is empty. Download: {self.url}")
        missing = [p for p in self.required if not (self.root / p).exists()]
        if missing:
            raise DatasetLayoutError(
                f"{self.title}: {self.root} is not the official layout; missing: {', '.join(missing)}. "
                f"Point --raw at the folder the download unpacks to ({self.url})."
            )

    def parse(self) -> ParseResult:
        raise NotImplementedError

    def split(self, samples: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        """The protocol's default split of the parsed samples and a one-line description of it.

        Default: by patient, 60/20/20 of the images, patients ordered by a hash of their id (so the split
        does not depend on file order), nested label fractions.
        """
        from tasks.splits import patient_split

        r = self.split_ratios
        table = patient_split(samples, ratios=r, fractions=self.fractions)
        scheme = (
            f"by patient {round(r[0] * 100)}/{round(r[1] * 100)}/{round(r[2] * 100)} (hashed patient ids)"
        )
        return table, scheme

    def load_pixels(self, sample: dict) -> np.ndarray:
        """Grey levels in [0, 1] at the original resolution, before equalisation."""
        raise NotImplementedError

    def load_mask(self, sample: dict, height: int, width: int) -> np.ndarray:
        """Class-index mask (H, W) uint8 (0 = background), or (C, H, W) binary masks if multi-label."""
        raise NotImplementedError

    def prepared_mask(self, sample: dict, geometry: Geometry) -> np.ndarray | None:
        """The mask rendered directly at the prepared size from vector shapes, or None (the default) to
        resize :meth:`load_mask` (nearest neighbour)."""
        return None

    def coco_annotations(self, sample: dict, geometry: Geometry) -> list[dict]:
        """COCO annotations of one sample at the prepared size, without ``id`` / ``image_id``.

        Default: the boxes mapped by ``geometry`` (clipped to the square), category ``label + 1``; boxes
        that vanish (width or height <= 0 after clipping) are left out.
        """
        if not len(sample["boxes"]):
            return []
        out = []
        for box, label in zip(geometry.boxes(np.asarray(sample["boxes"])), sample["labels"]):
            x, y, w, h = (round(float(v), 3) for v in box)
            if w <= 0 or h <= 0:
                continue
            out.append(
                {"category_id": int(label) + 1, "bbox": [x, y, w, h], "area": round(w * h, 3), "iscrowd": 0}
            )
        return out
