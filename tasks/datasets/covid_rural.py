"""COVID Rural (github haimingt/opacity_segmentation_covid_chest_X_ray, folder ``covid_rural_annot``).

Layout: ``jpgs/COVID-19-AR-<patient>_<date>-XR.jpg`` (some RGB: the channels are averaged) and
``pngs_masks/<same stem>.png``, a binary opacity mask (values 0/1) of the same size as the image. The
patient id is the file-name prefix before ``_``. JPGs without a mask are not part of the annotated set
(the reference code skips them too): they are counted, not reported as failures. ``jsons/`` and the
CSVs are not needed. Either ``covid_rural_annot`` or the repository root holding it may be passed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.datasets.base import SAMPLE_COLUMNS, ParseResult, RawDataset
from tasks.datasets.common import read_grey
from tasks.errors import Failure, SampleError

IMAGES_DIR = "jpgs"
MASKS_DIR = "pngs_masks"
PREFIX = "COVID-19-AR-"


class CovidRural(RawDataset):
    name = "covid_rural"
    title = "COVID Rural (opacity segmentation, covid_rural_annot)"
    url = "https://github.com/haimingt/opacity_segmentation_covid_chest_X_ray (folder covid_rural_annot)"
    classes = ("opacity",)
    equalize = True
    expected = {"images": 221}
    required = (IMAGES_DIR, MASKS_DIR)
    lovt_folders = (
        "Opacity-Segmentation-COVID/opacity_segmentation_covid_chest_X_ray-master/covid_rural_annot",
        "covid_rural_annot",
    )

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        nested = self.root / "covid_rural_annot"
        if not (self.root / IMAGES_DIR).is_dir() and (nested / IMAGES_DIR).is_dir():
            self.root = nested  # the repository root was passed

    def parse(self) -> ParseResult:
        self.check_layout()
        images_dir, masks_dir = self.root / IMAGES_DIR, self.root / MASKS_DIR
        images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg")}
        masks = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() == ".png"}
        failures: list[Failure] = []
        out = []
        for stem, mask_path in masks.items():
            if stem not in images:
                failures.append(
                    Failure(
                        str(mask_path),
                        "file name",
                        f"mask without an image: no {IMAGES_DIR}/{stem}.jpg",
                        stem,
                    )
                )
                continue
            if "_" not in stem or not stem.startswith(PREFIX):
                failures.append(
                    Failure(
                        str(images[stem]),
                        "file name",
                        f"does not follow {PREFIX}<patient>_<date>-XR.jpg, so its patient is unknown",
                        stem,
                    )
                )
                continue
            out.append(
                {
                    "image_id": stem,
                    "patient_id": stem.split("_")[0],
                    "file": str(images[stem]),
                    "boxes": [],
                    "labels": [],
                    "mask_source": str(mask_path),
                    "view": None,
                    "mask_file": str(mask_path),
                }
            )
        samples = pd.DataFrame(out, columns=[*SAMPLE_COLUMNS, "mask_file"])
        counts = {
            "images": len(samples),
            "patients": int(samples["patient_id"].nunique()) if len(samples) else 0,
            "image_files": len(images),
            "mask_files": len(masks),
            "images_without_mask": len(set(images) - set(masks)),
        }
        sources = {"images": str(images_dir), "masks": str(masks_dir)}
        return ParseResult(samples=samples, failures=failures, counts=counts, sources=sources)

    def load_pixels(self, sample: dict) -> np.ndarray:
        return read_grey(sample["file"], sample["file"], sample["image_id"])

    def load_mask(self, sample: dict, height: int, width: int) -> np.ndarray:
        """The 0/1 mask file (a 0/255 mask is accepted as binary too); its size must be the image's."""
        path = sample["mask_file"]
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                arr = np.asarray(img)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            raise SampleError(
                path, "file", f"not a readable PNG ({type(e).__name__}: {e})", sample["image_id"]
            ) from e
        if arr.ndim == 3:  # colour (RGB / RGBA) or grey + alpha (LA): the alpha channel is not the mask
            arr = arr[..., : 3 if arr.shape[-1] >= 3 else 1].max(axis=-1)
        if arr.shape != (height, width):
            raise SampleError(
                path,
                "size",
                f"mask is {arr.shape[1]}x{arr.shape[0]} but the image {Path(sample['file']).name} is "
                f"{width}x{height}",
                sample["image_id"],
            )
        values = set(np.unique(arr).tolist())
        if not values <= {0, 1} and not values <= {0, 255}:
            raise SampleError(
                path, "values", f"a binary mask holds 0/1, found {sorted(values)[:8]}", sample["image_id"]
            )
        return (arr > 0).astype(np.uint8)
