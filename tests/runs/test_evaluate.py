"""Sweeps: learning-rate search, resume after an interruption, failed runs recorded, frozen encoders."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import benchmark.runs as run_mod
from benchmark.backbones import parse_spec
from benchmark.runs import RunOptions, choose_lr, evaluate, plan_run, resolve
from tasks.registry import get_task
from tests.support.records import records_by_key

pytestmark = pytest.mark.slow

OPTIONS = RunOptions(max_epochs=1, batch_size=2, progress=False)
# rsna_linear_10 with a two-value grid keeps the sweeps short (2 search runs + 1 final)
TASK = replace(get_task("rsna_linear_10"), lr_grid=(3e-2, 1e-3))


@pytest.fixture(scope="module")
def searched(data_root, tmp_path_factory):
    """Two lr-search runs, then one final seed at the chosen lr."""
    out = tmp_path_factory.mktemp("sweep")
    records = evaluate(
        "resnet18.random",
        [TASK],
        data_root,
        out,
        seeds=[0],
        options=OPTIONS,
        echo=lambda *a: None,
    )
    return out, records


def test_lr_search_then_final_runs(searched):
    out, records = searched
    task = TASK
    search = [r for r in records if r["phase"] == "lr_search"]
    final = [r for r in records if r["phase"] == "final"]
    assert [r["lr"] for r in search] == list(task.lr_grid) and {r["seed"] for r in search} == {1000}
    assert all(r["status"] == "ok" and r["lr_source"] == "grid" for r in search)
    assert len(final) == 1 and final[0]["seed"] == 0 and final[0]["lr_source"] == "search"
    assert final[0]["lr"] == choose_lr(search)
    best = max(r["val_score"] for r in search)
    assert final[0]["sweep"]["search_val_scores"][f"{final[0]['lr']:g}"] == best
    assert len(records_by_key(out)) == 3


def test_choose_lr_rules():
    recs = [
        {"status": "ok", "lr": 1e-2, "val_score": 0.5},
        {"status": "ok", "lr": 3e-3, "val_score": 0.5},
        {"status": "failed", "lr": 1e-1},
        {"status": "ok", "lr": 1e-3, "val_score": float("nan")},
    ]
    assert choose_lr(recs) == 1e-2  # ties: first in grid order; failed and NaN runs never win
    assert choose_lr([{"status": "failed", "lr": 1e-2}]) is None


def test_interrupted_sweep_resumes_to_the_same_records(searched, data_root, tmp_path, monkeypatch):
    reference, _ = searched
    real_execute = run_mod.execute
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        if calls["n"] == 1:
            raise KeyboardInterrupt  # the sweep is killed during its second run
        calls["n"] += 1
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(run_mod, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            "resnet18.random",
            [TASK],
            data_root,
            tmp_path,
            seeds=[0],
            options=OPTIONS,
            echo=lambda *a: None,
        )
    assert len(records_by_key(tmp_path)) == 1
    monkeypatch.setattr(run_mod, "execute", real_execute)
    executed = []
    monkeypatch.setattr(
        run_mod, "execute", lambda *a, **k: executed.append(a[0].key) or real_execute(*a, **k)
    )
    evaluate(
        "resnet18.random",
        [TASK],
        data_root,
        tmp_path,
        seeds=[0],
        options=OPTIONS,
        echo=lambda *a: None,
    )
    resumed, ref = records_by_key(tmp_path), records_by_key(reference)
    assert len(executed) == 2  # only the runs that were missing
    assert sorted(resumed) == sorted(ref)  # same keys: same tasks, lrs (incl. the chosen one) and seeds
    for key in ref:
        assert resumed[key]["phase"] == ref[key]["phase"]
        assert resumed[key]["test_score"] == pytest.approx(ref[key]["test_score"], abs=1e-6)


def test_nan_run_is_recorded_as_failed_and_sweep_goes_on(data_root, tmp_path, monkeypatch):
    from benchmark import openmmlab

    real = openmmlab.build_config

    def poisoned(task, config):
        cfg = real(task, config)
        if config.seed == 0:
            cfg.model.data_preprocessor.std = [0.0]  # inputs / 0 -> inf / NaN features -> NaN loss
        return cfg

    monkeypatch.setattr(openmmlab, "build_config", poisoned)
    options = RunOptions(max_epochs=2, batch_size=2, progress=False)
    records = evaluate(
        "resnet18.random",
        [TASK],
        data_root,
        tmp_path,
        seeds=[0, 1],
        options=options,
        lr_search=False,
        echo=lambda *a: None,
    )
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "NonFiniteLossError" in records[0]["reason"] and "iteration 1" in records[0]["reason"]
    assert math.isfinite(records[1]["test_score"])
    assert len(records_by_key(tmp_path)) == 2  # the failure has its record too


@pytest.mark.parametrize("task_id", ["rsna_yolov3_frozen_10", "rsna_linear_10"])
def test_frozen_run_leaves_encoder_bit_identical(data_root, tmp_path, task_id):
    from mmengine.runner import Runner

    from benchmark import openmmlab

    options = RunOptions(max_epochs=2, batch_size=2, progress=False)
    run = plan_run(get_task(task_id), parse_spec("resnet18.random"), data_root, tmp_path, 0, None, options)
    runner = Runner.from_cfg(
        openmmlab.build_config(run.task, resolve(run, tmp_path, options, f"frozen-{task_id}"))
    )
    encoder = runner.model.backbone.encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head_before = {
        k: v.clone() for k, v in runner.model.state_dict().items() if not k.startswith("backbone.")
    }
    runner.train()
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm buffers
    changed = [
        k
        for k, v in runner.model.state_dict().items()
        if k in head_before and not torch.equal(v, head_before[k])
    ]
    assert changed  # the head did train
