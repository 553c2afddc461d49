"""A generic image-report manifest (CSV or JSON lines) for any paired data besides MIMIC-CXR.

Columns / keys:

- ``image`` (or ``image_path`` / ``path``): the image file (PNG, JPEG, ...), relative paths are relative
  to the manifest's folder;
- ``report`` (or ``text``): the report; if it has findings / impression headers (LoVT's section parser,
  :func:`pretrain.text.parse_sections`, with each line's indentation made MIMIC's one space) only those
  sections are used, otherwise the whole text;
- optional ``patient_id``, ``study_id`` (rows with the same study are one pair with several images, one
  drawn per step) and ``split`` (train / validate / test; default: a deterministic split by patient).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pretrain.data.records import SPLIT_ALIASES, PairDataError, PairRecord, PairSet
from pretrain.text import count_tokens, findings_and_impression, split_sentences

IMAGE_KEYS = ("image", "image_path", "path")
TEXT_KEYS = ("report", "text")


def _rows(path: Path) -> list[dict]:
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PairDataError(f"{path}, line {i}: not valid JSON ({e.msg})") from e
                if not isinstance(row, dict):
                    raise PairDataError(f"{path}, line {i}: expected a JSON object per line")
                rows.append(row)
        return rows
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise PairDataError(f"{path}: cannot read it as CSV ({e})") from e
    return df.to_dict("records")


def _pick(row: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in row and row[k] not in (None, ""):
            return row[k]
    return None


def _hash_split(key: str, val_fraction: float, test_fraction: float) -> str:
    u = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "validate"
    return "train"


def sentences_of(text: str) -> list[str]:
    """Findings + impression when the report has those headers, else the whole text, as sentences."""
    # MIMIC's layout (what the section parser expects): every line starts with one space
    parts = findings_and_impression("\n" + "\n".join(" " + line.lstrip() for line in text.splitlines()))
    if parts["findings"] or parts["impression"]:
        return split_sentences(parts["findings"]) + split_sentences(parts["impression"])
    return split_sentences(text)


def read_manifest(
    path: str | os.PathLike,
    *,
    min_tokens: int = 3,
    val_fraction: float = 0.05,
    test_fraction: float = 0.0,
    check_images: bool = True,
) -> PairSet:
    """Read a manifest into pairs; rows without a usable report or image are skipped and counted.

    Args:
        val_fraction / test_fraction: used only when the manifest has no ``split`` column: patients (or
            images, without patient ids) are assigned by a hash of their id, so the split is stable.

    Raises:
        PairDataError: the file is missing or unreadable, a required column is missing, a split value is
            unknown, or no pair is left.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PairDataError(f"manifest not found: {path}")
    rows = _rows(path)
    if not rows:
        raise PairDataError(f"{path}: the manifest has no rows")
    keys = set().union(*(r.keys() for r in rows))
    if not keys & set(IMAGE_KEYS) or not keys & set(TEXT_KEYS):
        raise PairDataError(
            f"{path}: needs an image column ({' / '.join(IMAGE_KEYS)}) and a report column "
            f"({' / '.join(TEXT_KEYS)}); found: {', '.join(sorted(keys))}"
        )
    has_split = "split" in keys
    out = PairSet([], {"kind": "manifest", "path": str(path)})
    if not has_split:
        out.notes.append(
            f"no split column: patients assigned by hash ({val_fraction:.0%} validate, {test_fraction:.0%} test)"
        )
    studies: dict[str, dict] = {}
    for i, row in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        where = f"{path.name}:{i}"
        image = _pick(row, IMAGE_KEYS)
        text = _pick(row, TEXT_KEYS)
        if image is None:
            out.skip("no image path", where)
            continue
        image_path = Path(str(image)).expanduser()
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        if check_images and not image_path.is_file():
            out.skip("image file missing", str(image_path))
            continue
        if text is None or not str(text).strip():
            out.skip("report empty", where)
            continue
        sentences = sentences_of(str(text))
        if not sentences:
            out.skip("report without sentences", where)
            continue
        if count_tokens(sentences) < min_tokens:
            out.skip(f"fewer than {min_tokens} tokens in the report", where)
            continue
        patient = str(row.get("patient_id") or "")
        study = str(row.get("study_id") or "") or f"row{i}"
        if has_split:
            raw = str(row.get("split") or "").strip().lower()
            if raw not in SPLIT_ALIASES:
                raise PairDataError(
                    f"{path}, row {i}: split {row.get('split')!r} is not one of train / validate / test"
                )
            split = SPLIT_ALIASES[raw]
        else:
            split = _hash_split(patient or str(image), val_fraction, test_fraction)
        entry = studies.setdefault(
            study, {"images": [], "sentences": sentences, "split": split, "patient": patient}
        )
        entry["images"].append(str(image_path))
    for study, e in studies.items():
        out.records.append(
            PairRecord(tuple(e["images"]), tuple(e["sentences"]), e["split"], e["patient"], study)
        )
    if not out.records:
        raise PairDataError(f"{path}: no usable image-report pair.\n{out.describe()}")
    return out
