"""Deterministic patient-level splits and nested label fractions.

Assignment depends only on the ids, never on file order: patients are ordered by a salted SHA-256 of
their id and cut where the reference code cut (test and val round(20 %) of the images, train the rest);
the training images are ordered by another salted hash and a label fraction of f % is the first
round(f/100 * n) of them, so the 1 % subset lies inside the 10 % subset, which lies inside the full
training split.
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

    Patients are taken in the order of a salted hash of their id and assigned whole to train until the
    training split holds ``n - round(ratios[1] * n) - round(ratios[2] * n)`` of the ``n`` images, then to
    val up to ``n - round(ratios[2] * n)``, the rest to test - so the IMAGE proportions follow the
    ratios even when patients have many images (NIH follow-ups, COVID Rural), and with one image per
    patient the cuts are exact.

    Returns:
        A table with :data:`SPLIT_COLUMNS`, sorted by image id. ``fraction`` is, for training images, the
        smallest label fraction (percent) that contains the image; empty for val/test.
    """
    if abs(sum(ratios) - 1.0) > 1e-9 or min(ratios) < 0:
        raise ValueError(f"split ratios must be >= 0 and sum to 1, got {ratios}")
    table = pd.DataFrame(
        {"image_id": samples["image_id"].astype(str), "patient_id": samples["patient_id"].astype(str)}
    )
    if table["image_id"].duplicated().any():
        dup = table.loc[table["image_id"].duplicated(), "image_id"].iloc[0]
        raise ValueError(f"image id {dup!r} appears twice in the samples")
    per_patient = table.groupby("patient_id").size().to_dict()
    patients = sorted(per_patient, key=lambda p: (_hash(p, salt + ":split"), p))
    n = len(table)
    # test = round(r_test * n), val = round(r_val * n), train = the rest, as the reference code cut
    # (lovt src/data/datasets/processing_utils.py: random_split_indices): this gives the published
    # training sizes (SIIM 7229 / 2409 / 2409 of 12,047 as in the reference repository's
    # datasets/siim-acr-pneumothorax-segmentation/dataset_statistics.json; round(0.6 * n) gave 7228)
    cut_val = n - round(ratios[2] * n)
    cut_train = cut_val - round(ratios[1] * n)
    which: dict[str, str] = {}
    before = 0  # images assigned before this patient
    for p in patients:
        which[p] = "train" if before < cut_train else "val" if before < cut_val else "test"
        before += per_patient[p]
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
