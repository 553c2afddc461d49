"""Checkpoints save, load for the best-checkpoint test, and resume under torch's default weights_only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from benchmark import openmmlab  # noqa: F401  (registers the suite's components)
from benchmark.backbones import parse_spec
from benchmark.openmmlab import build_config
from benchmark.runs import RunOptions, plan_run, resolve
from cxrcore.mmengine_hooks import from_plain, to_plain
from cxrcore.weights import load_checkpoint
from tasks.registry import get_task


def test_plain_roundtrip():
    hb = HistoryBuffer([1.0, 2.5, 3.0], [1, 2, 1], max_length=10)
    obj = {
        "log_scalars": {"train/loss": hb},
        "runtime_info": {
            "best_score": np.float64(0.25),
            "arr": np.arange(3),
            "nested": [np.int64(3), ("a", np.float32(1.5))],
        },
    }
    plain = to_plain(obj)
    assert (
        isinstance(plain["runtime_info"]["best_score"], float)
        and type(plain["runtime_info"]["best_score"]) is float
    )
    back = from_plain(plain)
    assert isinstance(back["log_scalars"]["train/loss"], HistoryBuffer)
    assert (
        back["log_scalars"]["train/loss"].mean() == hb.mean()
        and back["log_scalars"]["train/loss"].max_length == 10
    )
    assert np.array_equal(back["runtime_info"]["arr"], np.arange(3))
    with pytest.raises(TypeError, match=r"checkpoint.x: a .*object cannot be stored"):
        to_plain({"x": object()})


@pytest.fixture()
def linear_run(data_root, tmp_path):
    options = RunOptions(max_epochs=2, batch_size=8, progress=False, keep_checkpoints=True)
    run = plan_run(
        get_task("rsna_linear_100"),
        parse_spec("resnet18.random"),
        data_root,
        tmp_path,
        seed=0,
        lr=None,
        options=options,
    )
    return run, resolve(run, tmp_path, options), options


def _runner(cfg):
    from mmengine.runner import Runner

    return Runner.from_cfg(cfg)


def test_checkpoints_load_weights_only_and_resume(linear_run):
    run, resolved, options = linear_run
    cfg = build_config(run.task, replace(resolved, experiment_name="ckpt-a"))
    cfg.default_hooks.checkpoint.interval = 1  # resumable checkpoints every epoch
    cfg.default_hooks.checkpoint.save_last = True
    runner = _runner(cfg)
    runner.train()
    last = resolved.work_dir / "epoch_2.pth"
    best = runner.message_hub.get_info("best_ckpt")
    assert last.exists() and best
    for path in (last, best):
        ckpt, _ = load_checkpoint(path)  # the one loader, strict: plain types only (weights_only=True)
        assert "state_dict" in ckpt and "message_hub" in ckpt
    ckpt, _ = load_checkpoint(last)
    assert "optimizer" in ckpt and "param_schedulers" in ckpt
    # the best checkpoint loads into the runner for the test
    runner.load_checkpoint(best)
    metrics = runner.test()
    assert np.isfinite(metrics["seg/dice"])

    # resume from epoch 2 and train a third epoch
    cfg2 = build_config(run.task, replace(resolved, experiment_name="ckpt-b"))
    cfg2.default_hooks.checkpoint.interval = 1
    cfg2.train_cfg.max_epochs = 3
    cfg2.load_from = str(last)
    cfg2.resume = True
    resumed = _runner(cfg2)
    resumed.train()
    assert resumed.epoch == 3
    history = resumed.message_hub.log_scalars["train/loss"]
    assert isinstance(history, HistoryBuffer) and len(history.data[0]) > 2  # scalars of epochs 1-2 came back
    assert resumed.optim_wrapper.optimizer.state  # Adam moments restored and stepped


def test_malicious_checkpoint_refused_by_runner(linear_run, tmp_path):
    import pickle

    run, resolved, options = linear_run
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": Evil()}, path)
    runner = _runner(build_config(run.task, replace(resolved, experiment_name="ckpt-evil")))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        runner.load_checkpoint(str(path))
    assert not marker.exists()
