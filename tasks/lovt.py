"""The published split CSVs of the LoVT reference code (``cxrbench prepare ... --splits lovt:DIR``).

The reference code's split scripts were unseeded: its committed CSVs are the only definition of the
splits behind the published numbers. Each dataset folder holds ``train.csv``, ``validation.csv`` and
``test.csv``; detection datasets have the header ``ID,boxes,classes`` (``boxes``: ``|``-separated
``x;y;w;h`` in original pixels, ``classes``: ``|``-separated integers), segmentation datasets only ``ID``.

Import rules (shared/spec/tasks.md): label fractions are the first N rows of ``train.csv``; RSNA's
validation split is the first 10 % of ``validation.csv``; the Object-CXR boxes in those files are
(x, y, h, w) and are swapped back. Boxes and classes in the files are checked against the labels parsed
from the raw download (ours are used; a mismatch means the split files do not belong to this download and
is reported as a failure naming the file, row and field).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.datasets.base import RawDataset
from tasks.datasets.common import read_csv_table
from tasks.errors import DatasetLayoutError, Failure
from tasks.splits import SPLIT_COLUMNS, _fill_fractions

SPLIT_FILES = {"train": "train.csv", "val": "validation.csv", "test": "test.csv"}
DETECTION_HEADER = ["ID", "boxes", "classes"]
SEGMENTATION_HEADER = ["ID"]
BOX_TOLERANCE = 0.01  # pixels: the files hold the same numbers, written as text


@dataclass
class ImportedSplit:
    """A split table read from published split files, with what did not fit the raw download."""

    table: pd.DataFrame
    scheme: str
    directory: Path
    failures: list[Failure] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def find_split_dir(root: str | Path, dataset: type[RawDataset] | RawDataset) -> Path:
    """The folder holding the three split CSVs of ``dataset`` under ``root``.

    ``root`` may be that folder itself, the reference repository, or its ``datasets/`` folder (dataset
    folders named as in the reference repository, e.g. ``RSNA-Pneunomia-Detection``, or by the cxrbench
    dataset name).

    Raises:
        DatasetLayoutError: no candidate folder holds all three files.
    """
    root = Path(root).expanduser()
    names = (dataset.name, *dataset.lovt_folders)
    candidates = [root] + [base / n for base in (root, root / "datasets") for n in names]
    for c in candidates:
        if all((c / f).is_file() for f in SPLIT_FILES.values()):
            return c
    tried = "\n  ".join(str(c) for c in candidates)
    raise DatasetLayoutError(
        f"--splits lovt:{root}: no folder with {', '.join(SPLIT_FILES.values())} for {dataset.name}. Tried:\n  "
        f"{tried}\nPass the reference repository (github.com/philip-mueller/lovt), its datasets/ folder or the "
        "dataset's split folder."
    )


def parse_boxes(boxes: str, classes: str, order: str) -> tuple[list[list[float]], list[int]]:
    """``x;y;w;h|...`` and ``c|...`` -> boxes as (x, y, w, h) and class numbers.

    Args:
        order: ``xywh``, or ``xyhw`` for files that wrote height before width (Object-CXR).

    Raises:
        ValueError: malformed text (the message says what).
    """
    boxes, classes = boxes.strip(), classes.strip()
    if not boxes and not classes:
        return [], []
    out = []
    for part in boxes.split("|"):
        values = part.split(";")
        if len(values) != 4:
            raise ValueError(f"box {part!r} does not have 4 ';'-separated numbers")
        try:
            x, y, a, b = (float(v) for v in values)
        except ValueError:
            raise ValueError(f"box {part!r} holds something that is not a number") from None
        if not all(math.isfinite(v) for v in (x, y, a, b)):
            raise ValueError(f"box {part!r} is not finite")
        out.append([x, y, b, a] if order == "xyhw" else [x, y, a, b])
    try:
        labels = [int(c) for c in classes.split("|")]
    except ValueError:
        raise ValueError(f"classes {classes!r} are not '|'-separated integers") from None
    if len(labels) != len(out):
        raise ValueError(f"{len(out)} box(es) but {len(labels)} class(es)")
    return out, labels


def _same_objects(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    key = lambda o: (round(o[0][0], 1), round(o[0][1], 1), round(o[0][2], 1), round(o[0][3], 1), o[1])  # noqa: E731
    for (box_a, lab_a), (box_b, lab_b) in zip(sorted(a, key=key), sorted(b, key=key)):
        if lab_a != lab_b or not np.allclose(box_a, box_b, atol=BOX_TOLERANCE, rtol=0):
            return False
    return True


def import_lovt_splits(root: str | Path, dataset: RawDataset, samples: pd.DataFrame) -> ImportedSplit:
    """Read the published split files of ``dataset`` and turn them into a split table for ``samples``.

    Images of the download that the files do not list are left out of the prepared dataset (counted in
    ``info``); listed ids missing from the download, listed twice, or whose boxes differ from the raw
    labels are failures.
    """
    directory = find_split_dir(root, dataset)
    header = DETECTION_HEADER if dataset.lovt_detection else SEGMENTATION_HEADER
    by_id = {r["image_id"]: r for r in samples.to_dict("records")}
    failures: list[Failure] = []
    listed: dict[str, str] = {}
    ordered: dict[str, list[str]] = {s: [] for s in SPLIT_FILES}
    mismatched = 0
    for split, fname in SPLIT_FILES.items():
        path = directory / fname
        rows = read_csv_table(path, header, f"a published {dataset.name} split file", exact=True, require_rows=False)
        for line, row in enumerate(rows, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                failures.append(
                    Failure(str(path), f"row {line}", f"{len(row)} fields; the header has {len(header)}")
                )
                continue
            image_id = row[0].strip()
            if image_id in listed:
                failures.append(
                    Failure(str(path), f"row {line} ID", f"already listed in {listed[image_id]}", image_id)
                )
                continue
            if image_id not in by_id:
                failures.append(
                    Failure(
                        str(path),
                        f"row {line} ID",
                        "listed in the published split but not in the raw download (image or label missing)",
                        image_id,
                    )
                )
                continue
            if dataset.lovt_detection:
                try:
                    boxes, classes = parse_boxes(row[1], row[2], dataset.lovt_box_order)
                except ValueError as e:
                    failures.append(Failure(str(path), f"row {line} boxes/classes", str(e), image_id))
                else:
                    sample = by_id[image_id]
                    ours = [
                        (list(map(float, b)), int(lab) + dataset.lovt_class_offset)
                        for b, lab in zip(sample["boxes"], sample["labels"])
                    ]
                    theirs = list(zip(boxes, classes))
                    if not _same_objects(ours, theirs):
                        mismatched += 1
                        failures.append(
                            Failure(
                                str(path),
                                f"row {line} boxes",
                                f"differ from the raw labels: the split file has {theirs} "
                                f"(read as {dataset.lovt_box_order}), the download has {ours}",
                                image_id,
                            )
                        )
            listed[image_id] = fname
            ordered[split].append(image_id)

    excluded_val: list[str] = []
    if dataset.lovt_val_fraction < 100 and ordered["val"]:
        keep = max(1, round(dataset.lovt_val_fraction / 100 * len(ordered["val"])))
        ordered["val"], excluded_val = ordered["val"][:keep], ordered["val"][keep:]
    which = {i: s for s, ids in ordered.items() for i in ids}
    table = pd.DataFrame(
        {
            "image_id": list(which),
            "patient_id": [str(by_id[i]["patient_id"]) for i in which],
            "split": list(which.values()),
        }
    )
    table = _fill_fractions(table, ordered["train"], dataset.fractions)[SPLIT_COLUMNS]
    patients = table.groupby("patient_id")["split"].nunique()
    info = {
        "directory": str(directory),
        "listed": {s: len(ids) + (len(excluded_val) if s == "val" else 0) for s, ids in ordered.items()},
        "used": {s: len(ids) for s, ids in ordered.items()},
        "validation_rows_left_out": len(excluded_val),
        "raw_images_not_listed": len(set(by_id) - set(listed)),
        "boxes_differing_from_raw": mismatched,
        "patients_in_several_splits": int((patients > 1).sum()),
    }
    note = f", validation = first {dataset.lovt_val_fraction} % of validation.csv" if excluded_val else ""
    scheme = f"published LoVT split files ({directory}); fractions = first rows of train.csv{note}"
    return ImportedSplit(table=table, scheme=scheme, directory=directory, failures=failures, info=info)
