"""Fake published split files (``datasets/<folder>/{train,validation,test}.csv``) written the way the LoVT
reference code wrote them - unseeded-looking random order, ``ID,boxes,classes`` with ``x;y;w;h`` boxes
(Object-CXR: ``x;y;h;w``, its known defect) for detection datasets, ``ID`` only for segmentation - so
that ``--splits lovt:DIR`` can be tested without the reference repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tasks.datasets import get_dataset


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def make_fake_lovt_splits(
    dataset: str, raw: str | os.PathLike, out: str | os.PathLike, seed: int = 0, swap_object_cxr: bool = True
) -> Path:
    """Write split CSVs for the fake (or real) raw dataset at ``raw`` into ``out/datasets/<folder>/``.

    Images are shuffled with ``seed`` and cut 60/20/20 - by patient, except for SIIM, which the reference
    code split by image (Object-CXR: its train set 80/20, test = dev).

    Args:
        swap_object_cxr: write Object-CXR boxes as (x, y, h, w) like the reference files (False writes
            (x, y, w, h), to show that the import notices).

    Returns:
        The repository-like root ``out`` (pass it as ``--splits lovt:OUT``).
    """
    cls = get_dataset(dataset)
    samples = cls(raw).parse().samples
    rng = np.random.default_rng(seed)
    records = [samples.iloc[i].to_dict() for i in rng.permutation(len(samples))]
    if dataset == "object_cxr":
        train = [r for r in records if r["official_split"] == "train"]
        n = round(0.8 * len(train))
        parts = {
            "train": train[:n],
            "validation": train[n:],
            "test": [r for r in records if r["official_split"] == "dev"],
        }
    else:
        if dataset != "siim":  # the reference code split these by patient (SIIM: by image)
            order = {p: k for k, p in enumerate(dict.fromkeys(r["patient_id"] for r in records))}
            records.sort(key=lambda r: order[r["patient_id"]])
        n1, n2 = round(0.6 * len(records)), round(0.8 * len(records))
        for cut in ("n1", "n2"):  # move each cut to a patient boundary
            n = n1 if cut == "n1" else n2
            while (
                dataset != "siim"
                and 0 < n < len(records)
                and records[n]["patient_id"] == records[n - 1]["patient_id"]
            ):
                n += 1
            n1, n2 = (n, max(n, n2)) if cut == "n1" else (n1, n)
        parts = {"train": records[:n1], "validation": records[n1:n2], "test": records[n2:]}
        for rows in parts.values():  # rows of one file in random order, not grouped by patient
            rng.shuffle(rows)
    folder = Path(out) / "datasets" / cls.lovt_folders[0]
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in parts.items():
        lines = ["ID,boxes,classes" if cls.lovt_detection else "ID"]
        for r in rows:
            if not cls.lovt_detection:
                lines.append(r["image_id"])
                continue
            boxes = []
            for x, y, w, h in r["boxes"]:
                a, b = (h, w) if dataset == "object_cxr" and swap_object_cxr else (w, h)
                boxes.append(";".join(_number(v) for v in (x, y, a, b)))
            classes = [str(int(lab) + cls.lovt_class_offset) for lab in r["labels"]]
            lines.append(f"{r['image_id']},{'|'.join(boxes)},{'|'.join(classes)}")
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return Path(out)
