"""MIMIC-CXR-JPG 2.0.0 images + MIMIC-CXR 2.0.0 reports in their official PhysioNet layout.

Images (MIMIC-CXR-JPG)::

    ROOT/files/p10/p10000032/s50414267/<dicom_id>.jpg        (p10 ... p19)
    ROOT/mimic-cxr-2.0.0-split.csv.gz                         dicom_id,study_id,subject_id,split
    ROOT/mimic-cxr-2.0.0-metadata.csv.gz                      ..., ViewPosition, ...

Reports (MIMIC-CXR), one free-text report per study, either as the release zip or unpacked::

    mimic-cxr-reports.zip  ->  files/p10/p10000032/s50414267.txt

The protocol: frontal views (ViewPosition PA or AP); text = FINDINGS + IMPRESSION (as LoVT's section
parser reads them, see :mod:`pretrain.text`) split into sentences; the studies LoVT excludes by its custom
rules and studies with neither section or fewer than 3 tokens are skipped; one frontal image per study is drawn at
random per step when a study has several. Every skipped study / image is counted with its reason.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from pretrain.data.records import SPLIT_ALIASES, PairDataError, PairRecord, PairSet
from pretrain.text import LOVT_EXCLUDED_STUDIES, count_tokens, report_sentences

SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
REPORTS_ZIP = "mimic-cxr-reports.zip"
JPG_URL = "https://physionet.org/content/mimic-cxr-jpg/2.0.0/"
REPORTS_URL = "https://physionet.org/content/mimic-cxr/2.0.0/ (mimic-cxr-reports.zip)"
FRONTAL = ("PA", "AP")
_STUDY_TXT = re.compile(r"(p\d{2}/p\d+/s\d+)\.txt$")


def _read_csv(path: Path, required: tuple[str, ...]):
    import pandas as pd

    if not path.is_file():
        raise PairDataError(
            f"{path} not found: the MIMIC-CXR-JPG root must hold {SPLIT_FILE} and {METADATA_FILE} next to "
            f"files/ (download from {JPG_URL})"
        )
    try:
        df = pd.read_csv(path, dtype=str)
    except Exception as e:  # gzip / parser errors name no file on their own
        raise PairDataError(f"{path}: cannot read it as a gzipped CSV ({e})") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PairDataError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns))})"
        )
    return df


def _report_source(root: Path, reports: str | os.PathLike | None) -> tuple[Callable[[str], str | None], str]:
    """A function study key ('p10/p10000032/s50414267') -> report text (None if absent), and its origin."""
    candidates = (
        [Path(reports)]
        if reports is not None
        else [
            root / REPORTS_ZIP,
            root.parent / REPORTS_ZIP,
            root / "mimic-cxr-reports",
            root / "files",  # the reports zip unpacked into the image tree: s50414267.txt next to s50414267/
        ]
    )
    for c in candidates:
        if c.is_file() and c.suffix == ".zip":
            try:
                zf = zipfile.ZipFile(c)
            except zipfile.BadZipFile as e:
                raise PairDataError(f"{c}: not a readable zip file ({e}); download it again") from e
            index = {}
            for name in zf.namelist():
                m = _STUDY_TXT.search(name)
                if m:
                    index[m.group(1)] = name
            if not index:
                raise PairDataError(f"{c}: no report files (files/pXX/pNNNNNNNN/sNNNNNNNN.txt) in the zip")

            def read_zip(key: str, zf=zf, index=index) -> str | None:
                name = index.get(key)
                return zf.read(name).decode("utf-8", errors="replace") if name else None

            return read_zip, str(c)
        if c.is_dir():
            base = c / "files" if (c / "files").is_dir() else c
            if next(base.glob("p1*/p*/s*.txt"), None) is None:
                if reports is not None:
                    raise PairDataError(f"{c}: no report files pXX/pNNNNNNNN/sNNNNNNNN.txt under it")
                continue

            def read_dir(key: str, base=base) -> str | None:
                p = base / f"{key}.txt"
                return p.read_text(encoding="utf-8", errors="replace") if p.is_file() else None

            return read_dir, str(base)
        if reports is not None:
            raise PairDataError(f"reports not found: {c} is neither {REPORTS_ZIP} nor a folder of reports")
    raise PairDataError(
        f"no MIMIC-CXR reports found: looked for {root / REPORTS_ZIP}, {root.parent / REPORTS_ZIP}, "
        f"{root / 'mimic-cxr-reports'}/files and report .txt files under {root / 'files'}. Download "
        f"{REPORTS_URL} and put the zip in {root} (or pass its path as reports)."
    )


def read_mimic(
    root: str | os.PathLike,
    reports: str | os.PathLike | None = None,
    *,
    views: tuple[str, ...] = FRONTAL,
    sections: tuple[str, ...] = ("findings", "impression"),
    min_tokens: int = 3,
    check_images: bool = True,
) -> PairSet:
    """Read the MIMIC-CXR-JPG tree and the reports into image-report pairs (one per study).

    Args:
        root: the MIMIC-CXR-JPG folder (``files/`` and the ``.csv.gz`` files).
        reports: ``mimic-cxr-reports.zip`` or its unpacked folder; default: looked up next to the images.
        views: ViewPosition values kept (frontal views by default).
        check_images: skip (and count) images whose file is missing.

    Raises:
        PairDataError: a required file or column is missing, or no pair is left.
    """
    root = Path(root).expanduser()
    if not (root / "files").is_dir():
        raise PairDataError(f"{root / 'files'} not found: pass the MIMIC-CXR-JPG 2.0.0 folder ({JPG_URL})")
    split = _read_csv(root / SPLIT_FILE, ("dicom_id", "study_id", "subject_id", "split"))
    meta = _read_csv(root / METADATA_FILE, ("dicom_id", "ViewPosition"))
    read_report, report_origin = _report_source(root, reports)
    out = PairSet(
        [], {"kind": "mimic-cxr", "root": str(root), "reports": report_origin, "views": list(views)}
    )

    table = split.merge(meta[["dicom_id", "ViewPosition"]], on="dicom_id", how="left")
    no_meta = ~table["dicom_id"].isin(meta["dicom_id"])
    out.skip_many(
        f"image not in {METADATA_FILE} (view unknown)", no_meta.sum(), table.loc[no_meta, "dicom_id"].head(5)
    )
    bad_split = ~table["split"].str.lower().isin(SPLIT_ALIASES)
    if bad_split.any():
        row = table[bad_split].iloc[0]
        raise PairDataError(
            f"{root / SPLIT_FILE}: split value {row['split']!r} (dicom_id {row['dicom_id']}) is not one of "
            "train / validate / test"
        )
    frontal = table["ViewPosition"].isin(views)
    other_view = ~frontal & ~no_meta
    out.skip_many(
        "image not a frontal view",
        other_view.sum(),
        (f"{r.dicom_id} ({r.ViewPosition})" for r in table[other_view].head(5).itertuples()),
    )
    images_by_study = table[frontal].groupby(["subject_id", "study_id"], sort=True)
    all_studies = table.groupby(["subject_id", "study_id"], sort=True).size()
    frontal_keys = set(images_by_study.groups)
    for subject, study in all_studies.index:
        if (subject, study) not in frontal_keys:
            out.skip("study without a frontal image", f"p{subject[:2]}/p{subject}/s{study}")

    for (subject, study), group in images_by_study:
        key = f"p{subject[:2]}/p{subject}/s{study}"
        splits = {SPLIT_ALIASES[s.lower()] for s in group["split"]}
        if len(splits) != 1:
            raise PairDataError(
                f"{root / SPLIT_FILE}: study s{study} has images in several splits ({', '.join(sorted(splits))})"
            )
        if f"s{study}" in LOVT_EXCLUDED_STUDIES:
            out.skip("report excluded by LoVT (its custom rules for mis-parsed reports)", key)
            continue
        text = read_report(key)
        if text is None:
            out.skip("report missing", key)
            continue
        if not text.strip():
            out.skip("report empty", key)
            continue
        sentences = report_sentences(text, sections)
        if not sentences:
            out.skip(f"no {' / '.join(sections)} section", key)
            continue
        if count_tokens(sentences) < min_tokens:
            out.skip(f"fewer than {min_tokens} tokens in {' + '.join(sections)}", key)
            continue
        paths = [str(root / "files" / key / f"{d}.jpg") for d in group["dicom_id"]]
        if check_images:
            present = [p for p in paths if os.path.isfile(p)]
            for p in paths:
                if p not in present:
                    out.skip("image file missing", p)
            if not present:
                out.skip("study without an existing image file", key)
                continue
            paths = present
        out.records.append(
            PairRecord(tuple(paths), tuple(sentences), splits.pop(), patient_id=subject, study_id=study)
        )
    if not out.records:
        raise PairDataError(f"{root}: no usable image-report pair.\n{out.describe()}")
    return out
