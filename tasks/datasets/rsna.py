"""RSNA Pneumonia Detection Challenge (Kaggle ``rsna-pneumonia-detection-challenge``), stage 2 train set.

Layout: ``stage_2_train_labels.csv`` (``patientId,x,y,width,height,Target``; one row per box, a negative
image has one row with empty coordinates and ``Target=0``) and ``stage_2_train_images/<patientId>.dcm``
(1024 x 1024, 8-bit MONOCHROME2). Both PA and AP views are used. Masks are the boxes rasterised.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import pandas as pd

from tasks.datasets.base import ParseResult, RawDataset
from tasks.datasets.common import read_csv_table
from tasks.dicom import read_dicom
from tasks.errors import Failure
from tasks.rasterize import boxes_to_mask

LABELS_CSV = "stage_2_train_labels.csv"
IMAGES_DIR = "stage_2_train_images"
COLUMNS = ["patientId", "x", "y", "width", "height", "Target"]
_Row = namedtuple("_Row", COLUMNS)


class RSNA(RawDataset):
    name = "rsna"
    title = "RSNA Pneumonia Detection Challenge"
    url = "https://www.kaggle.com/competitions/rsna-pneumonia-detection-challenge/data"
    classes = ("opacity",)
    equalize = False  # the protocol uses RSNA's 8-bit pixels as they are
    fractions = (1, 10, 100)
    expected = {"label_rows": 30227, "images": 26684, "positive_images": 6012, "boxes": 9555}
    required = (LABELS_CSV, IMAGES_DIR)
    lovt_folders = ("RSNA-Pneunomia-Detection",)  # sic, as spelled in the reference repository
    lovt_detection = True
    lovt_val_fraction = 10  # the reference code validated on the first 10 % of validation.csv

    def parse(self) -> ParseResult:
        self.check_layout()
        csv_path = self.root / LABELS_CSV
        rows = read_csv_table(csv_path, COLUMNS, "the stage 2 train labels of the Kaggle download", exact=True)
        failures: list[Failure] = []
        per_image: dict[str, dict] = {}
        n_rows = 0
        for line, cells in enumerate(rows, start=2):  # 1-based, after the header
            if not any(c.strip() for c in cells):
                continue
            n_rows += 1
            if len(cells) != len(COLUMNS):
                failures.append(
                    Failure(
                        str(csv_path),
                        f"row {line}",
                        f"{len(cells)} fields, expected {len(COLUMNS)} ({','.join(COLUMNS)})",
                        cells[0].strip() or None,
                    )
                )
                if cells[0].strip():  # a partial box list of that patient would be wrong
                    entry = per_image.setdefault(cells[0].strip(), {"target": None, "boxes": []})
                    entry["bad"] = True
                continue
            row = _Row(*cells)
            pid = row.patientId.strip()
            if not pid:
                failures.append(Failure(str(csv_path), f"row {line} patientId", "empty patient id"))
                continue
            target = row.Target.strip()
            if target not in ("0", "1"):
                failures.append(
                    Failure(str(csv_path), f"row {line} Target", f"must be 0 or 1, got {target!r}", pid)
                )
                continue
            entry = per_image.setdefault(pid, {"target": target, "boxes": [], "bad": False})
            if entry["target"] is None:
                entry["target"] = target
            if entry["target"] != target:
                failures.append(
                    Failure(
                        str(csv_path), f"row {line} Target", "rows of one patient disagree on Target", pid
                    )
                )
                entry["bad"] = True
                continue
            coords = [row.x.strip(), row.y.strip(), row.width.strip(), row.height.strip()]
            if target == "0":
                if any(coords):
                    failures.append(
                        Failure(
                            str(csv_path),
                            f"row {line} x/y/width/height",
                            "Target=0 rows must have empty coordinates",
                            pid,
                        )
                    )
                    entry["bad"] = True
                continue
            try:
                box = [float(c) for c in coords]
            except ValueError:
                failures.append(
                    Failure(str(csv_path), f"row {line} x/y/width/height", f"not numbers: {coords}", pid)
                )
                entry["bad"] = True
                continue
            if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
                failures.append(
                    Failure(str(csv_path), f"row {line} x/y/width/height", f"invalid box {box}", pid)
                )
                entry["bad"] = True
                continue
            entry["boxes"].append(box)

        images_dir = self.root / IMAGES_DIR
        on_disk = {p.stem for p in images_dir.glob("*.dcm")}
        rows = []
        for pid, entry in per_image.items():
            if entry["bad"]:
                continue  # its failure is already recorded; a partial box list would be wrong
            path = images_dir / f"{pid}.dcm"
            if pid not in on_disk:
                failures.append(
                    Failure(
                        str(path), "patientId", f"labelled in {LABELS_CSV} but the image file is missing", pid
                    )
                )
                continue
            rows.append(
                {
                    "image_id": pid,
                    "patient_id": pid,
                    "file": str(path),
                    "boxes": entry["boxes"],
                    "labels": [0] * len(entry["boxes"]),
                    "mask_source": None,
                    "view": None,
                }
            )
        samples = pd.DataFrame(
            rows, columns=["image_id", "patient_id", "file", "boxes", "labels", "mask_source", "view"]
        )
        counts = {
            "label_rows": n_rows,
            "images": len(samples),
            "positive_images": int(sum(len(b) > 0 for b in samples["boxes"])),
            "boxes": int(sum(len(b) for b in samples["boxes"])),
            "unlabelled_image_files": len(on_disk - set(per_image)),
        }
        sources = {"labels": str(csv_path), "images": str(images_dir)}
        return ParseResult(samples=samples, failures=failures, counts=counts, sources=sources)

    def load_pixels(self, sample: dict) -> np.ndarray:
        return read_dicom(sample["file"], image_id=sample["image_id"]).pixels

    def load_mask(self, sample: dict, height: int, width: int) -> np.ndarray:
        return boxes_to_mask(sample["boxes"], height, width)
