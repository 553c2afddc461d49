"""What every raw dataset reader provides.

A reader parses the official layout into a SAMPLE TABLE (a pandas DataFrame, one row per image) with
the columns of :data:`SAMPLE_COLUMNS`, decodes one image into grey levels in [0, 1], and renders its mask.
It knows nothing of OpenMMLab: ``tasks.prepare`` turns the table into the prepared layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from tasks.errors import DatasetLayoutError, Failure

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

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

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

    def load_pixels(self, sample: dict) -> np.ndarray:
        """Grey levels in [0, 1] at the original resolution, before equalisation."""
        raise NotImplementedError

    def load_mask(self, sample: dict, height: int, width: int) -> np.ndarray:
        """Class-index mask (H, W) uint8 (0 = background), or (C, H, W) binary masks if multi-label."""
        raise NotImplementedError
