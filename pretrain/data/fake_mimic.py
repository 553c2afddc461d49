"""A seeded fake MIMIC-CXR-JPG + reports download in the exact official layout (for tests and demos).

Writes, under ROOT::

    files/p10/p10000001/s50000001/<dicom_id>.jpg         phantom chest images (synthetic findings)
    mimic-cxr-2.0.0-split.csv.gz                          dicom_id,study_id,subject_id,split
    mimic-cxr-2.0.0-metadata.csv.gz                       the official columns, incl. ViewPosition
    mimic-cxr-2.0.0-chexpert.csv.gz                       subject_id,study_id + the 14 labels
    mimic-cxr-reports.zip                                 files/p10/p10000001/s50000001.txt
    (reports="dir": the reports unpacked next to the image folders instead: files/p10/p10000001/s50000001.txt)

The reports look like MIMIC-CXR's (FINAL REPORT, EXAMINATION, INDICATION, COMPARISON, FINDINGS, IMPRESSION,
line-wrapped, anonymised ``___``), their sentences describe the phantom's findings, and a fixed set of
special studies exercises every rule of the reader (:data:`SPECIAL`).
"""

from __future__ import annotations

import gzip
import io
import os
import textwrap
import zipfile
from pathlib import Path

import numpy as np

from pretrain.data.synthetic import impression, make_pair

METADATA_COLUMNS = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
CHEXPERT = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]  # fmt: skip
VIEW_NAMES = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}

# Special studies: name -> (views, what is special). The reader must keep the first three and skip the rest
# with the reason in the comment.
SPECIAL = {
    "two_frontal": (("AP", "PA"), "two frontal images: one pair with both, one drawn per step"),
    "impression_only": (("PA", "LATERAL"), "no FINDINGS section, IMPRESSION only: kept; lateral skipped"),
    "findings_only": (("AP",), "FINDINGS only: kept"),
    "no_sections": (("PA",), "skipped: neither FINDINGS nor IMPRESSION"),
    "too_short": (("PA",), "skipped: fewer than 3 tokens"),
    "lateral_only": (("LATERAL",), "skipped: no frontal image"),
    "missing_image": (("PA",), "skipped: the JPEG is not on disk"),
    "missing_report": (("PA",), "skipped: no report for the study"),
}


def _report(findings: str, impression_text: str, rng: np.random.Generator) -> str:
    def wrap(text: str) -> str:
        return "\n".join(" " + line for line in textwrap.wrap(text, 68))

    parts = [
        "                                 FINAL REPORT",
        " EXAMINATION:  CHEST (PA AND LAT)",
        " ",
        f" INDICATION:  ___ year old {'man' if rng.random() < 0.5 else 'woman'} with cough.",
        " ",
        " TECHNIQUE:  Chest PA and lateral",
        " ",
        " COMPARISON:  ___",
        " ",
    ]
    if findings:
        parts += [" FINDINGS:", " ", wrap(findings), " "]
    if impression_text:
        parts += [" IMPRESSION:", " ", wrap(impression_text), " "]
    return "\n".join(parts) + "\n"


def _csv_gz(path: Path, columns: list[str], rows: list[list]) -> None:
    import pandas as pd

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(pd.DataFrame(rows, columns=columns).to_csv(index=False).encode())
    path.write_bytes(buf.getvalue())


def make_fake_mimic(
    root: str | os.PathLike, n_patients: int = 12, seed: int = 0, reports: str = "zip", image_size: int = 96
) -> Path:
    """Write a fake MIMIC-CXR-JPG + reports tree; returns ``root``.

    ``n_patients`` ordinary patients get 1-2 studies each (PA, sometimes a lateral too); the special
    studies of :data:`SPECIAL` follow, one patient each. Splits: 70 % train, 15 % validate, 15 % test by
    patient (the special patients are in train).
    """
    from PIL import Image

    if reports not in ("zip", "dir"):
        raise ValueError("reports must be 'zip' or 'dir'")
    root = Path(root)
    rng = np.random.default_rng(seed)
    split_rows, meta_rows, chexpert_rows = [], [], []
    report_files: dict[str, str] = {}
    counter = {"study": 50000000, "image": 0}

    def add_study(subject: int, split: str, views: tuple[str, ...], kind: str = "normal") -> None:
        counter["study"] += 1
        study = counter["study"]
        key = f"p{str(subject)[:2]}/p{subject}/s{study}"
        pixels, sentences, findings = make_pair(rng, image_size)
        findings_text = " ".join(sentences)
        impression_text = impression(findings)
        if kind == "impression_only":
            findings_text = ""
        elif kind == "findings_only":
            impression_text = ""
        elif kind == "no_sections":
            findings_text = impression_text = ""
        elif kind == "too_short":
            findings_text, impression_text = "Normal.", ""
        text = _report(findings_text, impression_text, rng)
        if kind == "no_sections":
            text += " NOTIFICATION:  The findings were discussed with Dr. ___ at 10:00 am.\n"
        if kind != "missing_report":
            report_files[key] = text
        for view in views:
            counter["image"] += 1
            dicom = f"{counter['image']:08x}-{rng.integers(16**8):08x}-{rng.integers(16**8):08x}-{rng.integers(16**8):08x}-{rng.integers(16**8):08x}"
            h, w = (image_size + 24, image_size) if view in ("PA", "AP") else (image_size, image_size + 16)
            img = pixels if view in ("PA", "AP") else np.full((image_size, image_size), 90, np.uint8)
            folder = root / "files" / key
            folder.mkdir(parents=True, exist_ok=True)
            if not (kind == "missing_image" and view in ("PA", "AP")):
                canvas = np.zeros((h, w), np.uint8)
                canvas[(h - image_size) // 2 : (h - image_size) // 2 + image_size, : min(w, image_size)] = (
                    img[:, : min(w, image_size)]
                )
                Image.fromarray(canvas).save(folder / f"{dicom}.jpg", quality=90)
            split_rows.append([dicom, study, subject, split])
            meta_rows.append(
                [dicom, subject, study, "CHEST (PA AND LAT)", view, h, w, 21800101 + int(rng.integers(300)),
                 float(rng.integers(235959)), "CHEST (PA AND LAT)", VIEW_NAMES[view], "Erect"]
            )  # fmt: skip
        chexpert_rows.append([subject, study] + [rng.choice([np.nan, 1.0, 0.0, -1.0]) for _ in CHEXPERT])

    splits = ["train"] * 70 + ["validate"] * 15 + ["test"] * 15
    for i in range(n_patients):
        subject = 10000001 + i if i % 2 == 0 else 11000001 + i  # two of the p10..p19 groups
        split = splits[int(rng.integers(len(splits)))] if i >= 3 else ("train", "validate", "test")[i]
        for _ in range(1 + int(rng.random() < 0.3)):
            add_study(subject, split, ("PA", "LATERAL") if rng.random() < 0.5 else ("PA",))
    for j, (kind, (views, _)) in enumerate(SPECIAL.items()):
        add_study(19000001 + j, "train", views, kind)

    _csv_gz(
        root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows
    )
    _csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_COLUMNS, meta_rows)
    _csv_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *CHEXPERT], chexpert_rows)
    if reports == "zip":
        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for key in sorted(report_files):
                zf.writestr(f"files/{key}.txt", report_files[key])
    else:
        for key, text in report_files.items():
            (root / "files" / f"{key}.txt").write_text(text)
    return root
