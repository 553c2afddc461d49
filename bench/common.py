"""Shared pieces of the bench scripts: a prepared fake dataset, an epoch timer, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("CXRBENCH_OFFLINE", "1")
if not os.environ.get("CXRBENCH_BENCH_CUDA"):  # bench/gpu.py sets it: it measures CUDA runs
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the other benches measure CPU runs


def fake_data(root: str | os.PathLike, n_patients: int = 100) -> Path:
    """A data root with fake RSNA (``n_patients`` images at 512 px) prepared at 224 px; reused if there."""
    from tasks.fakes import make_fake_rsna
    from tasks.prepare import prepare

    root = Path(root)
    data = root / f"data-{n_patients}"
    if not (data / "rsna" / "manifest.json").exists():
        raw = make_fake_rsna(root / f"raw-{n_patients}", n_patients=n_patients, seed=0, size=512)
        prepare("rsna", raw, data, workers=2, progress=False)
    return data


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    import torch

    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {cores} usable cores{load}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def today() -> str:
    return time.strftime("%Y-%m-%d")


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


_REGISTERED = False


def _sync() -> None:
    """Wait for queued CUDA work, so that a timer reads the time the work took (nothing on CPU)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def register_timer() -> str:
    """Register (once) and name a hook that records each epoch's train and validation seconds and every
    training iteration's loss."""
    global _REGISTERED
    if not _REGISTERED:
        from mmengine.hooks import Hook
        from mmengine.registry import HOOKS

        class BenchEpochTimer(Hook):
            priority = "VERY_LOW"

            def __init__(self):
                self.train: list[float] = []
                self.val: list[float] = []
                self.losses: list[float] = []
                self._t = 0.0

            def before_train_epoch(self, runner):
                _sync()
                self._t = time.perf_counter()

            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
                if outputs and "loss" in outputs:  # mmengine already read it (.item()) for its log
                    self.losses.append(float(outputs["loss"].detach()))

            def after_train_epoch(self, runner):
                _sync()
                self.train.append(time.perf_counter() - self._t)

            def before_val_epoch(self, runner):
                _sync()
                self._t = time.perf_counter()

            def after_val_epoch(self, runner, metrics=None):
                _sync()
                self.val.append(time.perf_counter() - self._t)

        HOOKS.register_module(name="BenchEpochTimer", module=BenchEpochTimer, force=True)
        _REGISTERED = True
    return "BenchEpochTimer"


def timed_run(task, backbone: str, data_root, out_dir, options, seed: int = 0, lr: float | None = None):
    """Train and test one run through the same code as ``evaluate``; returns (outcome, timer, wall s)."""
    from benchmark import openmmlab
    from benchmark.backbones import parse_spec
    from benchmark.openmmlab.config import MONITORS
    from benchmark.run import plan_run, resolve, runner_config

    run = plan_run(task, parse_spec(backbone), data_root, out_dir, seed, lr, options)
    resolved = resolve(run, out_dir, options)
    cfg = runner_config(run, resolved, options, f"bench-{task.id}-{time.monotonic_ns()}")
    cfg.custom_hooks.append(dict(type=register_timer()))
    started = time.perf_counter()
    from mmengine.runner import Runner

    # train_and_test builds its own Runner: catch it on the way to read the timer hook afterwards
    timers = []
    descriptor = Runner.__dict__["from_cfg"]
    real_from_cfg = Runner.from_cfg

    def from_cfg(cfg):
        runner = real_from_cfg(cfg)
        timers.extend(h for h in runner.hooks if type(h).__name__ == "BenchEpochTimer")
        return runner

    Runner.from_cfg = staticmethod(from_cfg)
    try:
        outcome = openmmlab.train_and_test(cfg, MONITORS[task.metric])
    finally:
        Runner.from_cfg = descriptor
    return outcome, timers[0], time.perf_counter() - started
