"""NIH ChestX-ray14 (NIH Clinical Center, "ChestXray-NIHCC"): the bounding-box subset, multi-label.

Layout: ``BBox_List_2017.csv`` (header ``Image Index,Finding Label,Bbox [x,y,w,h],,,``: the box fills the
3rd-6th columns, trailing columns are empty; coordinates on the 1024 x 1024 PNG), ``Data_Entry_2017_v2020
.csv`` (or the older ``Data_Entry_2017.csv``), ``test_list.txt``, and the PNGs wherever they were unpacked
(``images_001/images/`` ... ``images_012/images/``, or a flat ``images/``): images are found by name.

Protocol: all 880 annotated images - AP and PA views and all follow-ups (restricting to PA or to one image
per patient keeps only 125 of them) - plus 100 "No Finding" images from ``test_list.txt``, chosen by a
hash of their names (not by what is on disk, so every user gets the same ones), split 60/20/20 by patient.
Boxes of different findings overlap, so the masks are one binary mask per class (``multi_label``).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from tasks.datasets.base import SAMPLE_COLUMNS, ParseResult, RawDataset
from tasks.datasets.common import index_files, read_csv_table, read_grey
from tasks.errors import DatasetLayoutError, Failure
from tasks.rasterize import boxes_to_mask

BBOX_CSV = "BBox_List_2017.csv"
BBOX_HEADER = ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
DATA_ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
DATA_ENTRY_HEADER = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
]
TEST_LIST = "test_list.txt"
CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
ALIASES = {"Infiltration": "Infiltrate"}  # the label file's spelling
NO_FINDING = "No Finding"


def _rank(name: str) -> str:
    return hashlib.sha256(f"cxrbench:nih-no-finding\x00{name}".encode()).hexdigest()


class NIH(RawDataset):
    name = "nih"
    title = "NIH ChestX-ray14 (bounding-box subset)"
    url = "https://nihcc.app.box.com/v/ChestXray-NIHCC (also kaggle.com/datasets/nih-chest-xrays/data)"
    classes = CLASSES
    equalize = True
    multi_label = True
    n_no_finding = 100
    expected = {
        "bbox_rows": 984,
        "boxes": 984,
        "annotated_images": 880,
        "no_finding_images": 100,
        "images": 980,
    }
    required = (BBOX_CSV, TEST_LIST)
    lovt_folders = ("NIH_CXR_pathology_detection",)
    lovt_detection = True
    lovt_class_offset = 0  # the reference files number the 8 classes 0..7

    def data_entry(self):
        for name in DATA_ENTRY_FILES:
            if (self.root / name).is_file():
                return self.root / name
        return None

    def check_layout(self) -> None:
        super().check_layout()
        if self.data_entry() is None:
            raise DatasetLayoutError(
                f"{self.title}: {self.root} has no {' or '.join(DATA_ENTRY_FILES)}. Point --raw at the folder "
                f"holding {BBOX_CSV}, the Data_Entry file, {TEST_LIST} and the images_*/ folders ({self.url})."
            )

    def parse(self) -> ParseResult:
        self.check_layout()
        failures: list[Failure] = []
        bbox_path, entry_path = self.root / BBOX_CSV, self.data_entry()

        entries: dict[str, dict] = {}
        for line, row in enumerate(
            read_csv_table(entry_path, DATA_ENTRY_HEADER, "the NIH image list"), start=2
        ):
            if len(row) < len(DATA_ENTRY_HEADER) or not row[0].strip():
                if any(c.strip() for c in row):
                    failures.append(
                        Failure(str(entry_path), f"row {line}", f"{len(row)} fields, expected at least 7")
                    )
                continue
            pid = row[3].strip()
            if not (pid.isascii() and pid.isdigit()):
                failures.append(
                    Failure(
                        str(entry_path),
                        f"row {line} Patient ID",
                        f"must be a decimal number, got {pid[:40]!r}",
                        row[0].strip()[:-4] if row[0].strip().lower().endswith(".png") else row[0].strip(),
                    )
                )
                continue
            entries[row[0].strip()] = {
                "labels": row[1].strip(),
                "patient": f"{int(pid):08d}",
                "view": row[6].strip() or None,
            }

        per_image: dict[str, dict] = {}
        bbox_rows = read_csv_table(bbox_path, BBOX_HEADER, "the NIH bounding boxes")
        for line, row in enumerate(bbox_rows, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            name = row[0].strip()
            entry = per_image.setdefault(name, {"boxes": [], "labels": [], "bad": False})
            if len(row) < 6:
                failures.append(
                    Failure(str(bbox_path), f"row {line}", f"{len(row)} fields, expected 6", name)
                )
                entry["bad"] = True
                continue
            label = ALIASES.get(row[1].strip(), row[1].strip())
            if label not in CLASSES:
                failures.append(
                    Failure(
                        str(bbox_path),
                        f"row {line} Finding Label",
                        f"unknown finding {row[1].strip()!r}; expected one of {', '.join(CLASSES)}",
                        name,
                    )
                )
                entry["bad"] = True
                continue
            try:
                box = [float(v) for v in row[2:6]]
            except ValueError:
                failures.append(
                    Failure(str(bbox_path), f"row {line} Bbox [x,y,w,h]", f"not numbers: {row[2:6]}", name)
                )
                entry["bad"] = True
                continue
            if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
                failures.append(
                    Failure(str(bbox_path), f"row {line} Bbox [x,y,w,h]", f"invalid box {box}", name)
                )
                entry["bad"] = True
                continue
            entry["boxes"].append(box)
            entry["labels"].append(CLASSES.index(label))

        test_names = {
            line.strip() for line in (self.root / TEST_LIST).read_text().splitlines() if line.strip()
        }
        candidates = sorted(
            (
                n
                for n, e in entries.items()
                if e["labels"] == NO_FINDING and n in test_names and n not in per_image
            ),
            key=lambda n: (_rank(n), n),
        )
        no_finding = candidates[: self.n_no_finding]

        on_disk, duplicates = index_files(self.root, ".png")
        out = []
        missing_entry = 0
        for name, kind in [(n, "annotated") for n in per_image] + [(n, "no_finding") for n in no_finding]:
            image_id = name[:-4] if name.lower().endswith(".png") else name
            if kind == "annotated" and per_image[name]["bad"]:
                continue  # its failure is recorded; a partial box list would be wrong
            path = on_disk.get(name)
            if path is None:
                where = BBOX_CSV if kind == "annotated" else f"{TEST_LIST} (a chosen 'No Finding' image)"
                failures.append(
                    Failure(
                        str(self.root / "images_*" / "images" / name),
                        "Image Index",
                        f"listed in {where} but no file of that name is under {self.root}",
                        image_id,
                    )
                )
                continue
            entry = entries.get(name)
            if entry is None:
                missing_entry += 1
            boxes = per_image[name]["boxes"] if kind == "annotated" else []
            out.append(
                {
                    "image_id": image_id,
                    "patient_id": entry["patient"] if entry else image_id.split("_")[0],
                    "file": str(path),
                    "boxes": boxes,
                    "labels": per_image[name]["labels"] if kind == "annotated" else [],
                    "mask_source": None,
                    "view": entry["view"] if entry else None,
                }
            )
        samples = pd.DataFrame(out, columns=list(SAMPLE_COLUMNS))
        labels = [lab for r in out for lab in r["labels"]]
        counts = {
            "bbox_rows": len([r for r in bbox_rows if any(c.strip() for c in r)]),
            "boxes": len(labels),
            "annotated_images": sum(1 for r in out if r["boxes"]),
            "no_finding_images": sum(1 for r in out if not r["boxes"]),
            "images": len(samples),
            "patients": int(samples["patient_id"].nunique()) if len(samples) else 0,
            "no_finding_candidates": len(candidates),
            "images_not_in_data_entry": missing_entry,
            "duplicate_image_files": len(duplicates),
            **{f"boxes_{c}": labels.count(i) for i, c in enumerate(CLASSES)},
            **{
                f"view_{v}": int((samples["view"] == v).sum())
                for v in sorted({str(v) for v in samples["view"] if v})
            },
        }
        sources = {
            "boxes": str(bbox_path),
            "data_entry": str(entry_path),
            "test_list": str(self.root / TEST_LIST),
        }
        return ParseResult(samples=samples, failures=failures, counts=counts, sources=sources)

    def load_pixels(self, sample: dict) -> np.ndarray:
        return read_grey(sample["file"], sample["file"], sample["image_id"])

    def load_mask(self, sample: dict, height: int, width: int) -> np.ndarray:
        """One binary mask per class (C, H, W): each class's boxes rasterised (boxes overlap across classes)."""
        masks = np.zeros((len(CLASSES), height, width), dtype=np.uint8)
        for box, label in zip(sample["boxes"], sample["labels"]):
            boxes_to_mask([box], height, width, mask=masks[label])
        return masks
