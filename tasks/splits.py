"""Deterministic patient-level splits and nested label fractions.

Assignment depends only on the ids, never on file order: patients are ordered by a salted SHA-256 of
their id and cut at 60 % / 80 %; the training images are ordered by another salted hash and a label
fraction of f % is the first round(f/100 * n) of them, so the 1 % subset lies inside the 10 % subset,
which lies inside the full training split.
"""

from __future__ import annotations

import hashlib
import io

import pandas as pd

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ["image_id", "patient_id", "split", "fraction"]


def _hash(key: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()


def patient_split(
    samples: pd.DataFrame,
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2),
    fractions: tuple[int, ...] = (100,),
    salt: str = "cxrbench",
) -> pd.DataFrame:
    """Split ``samples`` (columns image_id, patient_id) by patient into train/val/test.

    Returns:
        A table with :data:`SPLIT_COLUMNS`, sorted by image id. ``fraction`` is, for training images, the
        smallest label fraction (percent) that contains the image; empty for val/test.
    """
    if abs(sum(ratios) - 1.0) > 1e-9:
        raise ValueError(f"split ratios must sum to 1, got {ratios}")
    patients = sorted(set(samples["patient_id"]), key=lambda p: (_hash(p, salt + ":split"), p))
    n = len(patients)
    n_train = round(ratios[0] * n)
    n_val = round(ratios[1] * n)
    which = {
        p: "train" if i < n_train else "val" if i < n_train + n_val else "test"
        for i, p in enumerate(patients)
    }
    table = pd.DataFrame(
        {"image_id": samples["image_id"].astype(str), "patient_id": samples["patient_id"].astype(str)}
    )
    table["split"] = table["patient_id"].map(which)
    return assign_fractions(table, fractions, salt)


def assign_fractions(table: pd.DataFrame, fractions: tuple[int, ...], salt: str = "cxrbench") -> pd.DataFrame:
    """Fill ``fraction`` for the training rows of a split table (nested prefixes of one hashed order)."""
    table = table.copy()
    train_ids = sorted(
        table.loc[table["split"] == "train", "image_id"], key=lambda i: (_hash(i, salt + ":fraction"), i)
    )
    return _fill_fractions(table, train_ids, fractions)


def _fill_fractions(
    table: pd.DataFrame, ordered_train_ids: list[str], fractions: tuple[int, ...]
) -> pd.DataFrame:
    rank = {image_id: i for i, image_id in enumerate(ordered_train_ids)}
    n = len(ordered_train_ids)
    cut = {f: (n if f >= 100 else max(1, round(f / 100 * n))) for f in sorted(set(fractions) | {100})}

    def smallest(image_id: str) -> object:
        if image_id not in rank:
            return pd.NA
        return min(f for f, c in cut.items() if rank[image_id] < c)

    table["fraction"] = table["image_id"].map(smallest).astype("Int64")
    return table.sort_values("image_id").reset_index(drop=True)[SPLIT_COLUMNS]


def subset(table: pd.DataFrame, split: str, fraction: int = 100) -> list[str]:
    """Image ids of a split (and, for ``train``, a label fraction in percent), sorted."""
    rows = table[table["split"] == split]
    if split == "train" and fraction < 100:
        rows = rows[rows["fraction"].notna() & (rows["fraction"] <= fraction)]
    return sorted(rows["image_id"])


def split_csv_text(table: pd.DataFrame) -> str:
    buf = io.StringIO()
    table.sort_values("image_id")[SPLIT_COLUMNS].to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def split_hash(table: pd.DataFrame) -> str:
    """Short SHA-256 of the canonical split table: the same split gives the same hash on any machine."""
    return hashlib.sha256(split_csv_text(table).encode()).hexdigest()[:16]


def read_splits(path) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "split": str})
    missing = [c for c in SPLIT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {SPLIT_COLUMNS}")
    table["fraction"] = table["fraction"].astype("Int64")
    return table[SPLIT_COLUMNS]
