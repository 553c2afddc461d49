"""The sweep every executor is compared with: its task and options, and the check that two sweeps wrote the
same records (the fixtures that run it are in conftest.py; records are read with tests.support.records)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmark.runs import RunOptions
from tasks.registry import get_task

OPTIONS = RunOptions(max_epochs=1, batch_size=2, progress=False)
# two grid values keep the sweep short: 2 lr-search runs, then 1 final run at the chosen value
TASK = replace(get_task("rsna_linear_10"), lr_grid=(3e-2, 1e-3))


def assert_same_records(got: dict[str, dict], ref: dict[str, dict]) -> None:
    assert sorted(got) == sorted(ref)  # same keys: same tasks, seeds and (chosen) learning rates
    for key, r in ref.items():
        g = got[key]
        assert g["status"] == r["status"] == "ok"
        assert (g["phase"], g["seed"], g["lr"], g["lr_source"]) == (
            r["phase"],
            r["seed"],
            r["lr"],
            r["lr_source"],
        )
        scores = "search_val_scores"
        assert {k: v for k, v in g["sweep"].items() if k != scores} == {
            k: v for k, v in r["sweep"].items() if k != scores
        }
        assert g["sweep"].get(scores, {}) == pytest.approx(r["sweep"].get(scores, {}), rel=1e-4)
        for split in ("val", "test"):
            assert g["metrics"][split] == pytest.approx(r["metrics"][split], rel=1e-4, abs=1e-5), (key, split)
