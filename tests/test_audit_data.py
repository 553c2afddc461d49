"""Format details of the raw datasets checked against the spec and the reference code (audit)."""

from __future__ import annotations

import pandas as pd

from tasks.splits import patient_split


def test_split_sizes_follow_the_published_counts():
    """The reference code cut test = round(20 %), val = round(20 %) and train = the rest
    (philip-mueller/lovt src/data/datasets/processing_utils.py: random_split_indices), which gives the
    published training sizes of tasks.md: SIIM 7229 of 12,047 (round(60 %) would give 7228), RSNA 16010,
    COVID Rural 133 / 44 / 44, NIH 588 / 196 / 196."""
    for n, want in (
        (12047, (7229, 2409, 2409)),
        (26684, (16010, 5337, 5337)),
        (221, (133, 44, 44)),
        (980, (588, 196, 196)),
    ):
        ids = [f"i{k:05d}" for k in range(n)]
        table = patient_split(pd.DataFrame({"image_id": ids, "patient_id": ids}))
        got = tuple(int((table.split == s).sum()) for s in ("train", "val", "test"))
        assert got == want, (n, got)
    ids = [f"i{k:04d}" for k in range(8000)]  # Object-CXR: 80/20 of the official train set
    table = patient_split(pd.DataFrame({"image_id": ids, "patient_id": ids}), ratios=(0.8, 0.2, 0.0))
    assert int((table.split == "train").sum()) == 6400 and not (table.split == "test").any()
