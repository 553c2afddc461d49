"""Shared pieces of the bench scripts: a prepared fake dataset, an epoch timer, machine facts."""

from __future__ import annotations

import contextlib
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


def timed_run(
    task, backbone: str, data_root, out_dir, options, seed: int = 0, lr: float | None = None, hooks=()
):
    """Train and test one run through the same code as ``evaluate``; returns (outcome, timer, wall s).
    ``hooks``: more custom hook configs for the run's Runner (before the timer)."""
    from benchmark import openmmlab
    from benchmark.backbones import parse_spec
    from benchmark.runs import plan_run, resolve
    from tasks.registry import METRIC_KEYS

    run = plan_run(task, parse_spec(backbone), data_root, out_dir, seed, lr, options)
    config = resolve(run, out_dir, options, f"bench-{task.id}-{time.monotonic_ns()}")
    cfg = openmmlab.build_config(task, config)
    cfg.custom_hooks.extend(hooks)
    cfg.custom_hooks.append(dict(type=register_timer()))
    started = time.perf_counter()
    # train_and_test builds its own Runner: catch it on the way to read the timer hook afterwards
    timers = []

    def catch_timer(runner) -> None:
        timers.extend(h for h in runner.hooks if type(h).__name__ == "BenchEpochTimer")

    with openmmlab.watch_runners(catch_timer):
        outcome = openmmlab.train_and_test(cfg, METRIC_KEYS[task.metric].monitor)
    return outcome, timers[0], time.perf_counter() - started


PHASES = ("data", "forward", "backward", "validation", "checkpoint", "test")


class PhaseProfile:
    """Where the seconds of every training run in this process go, per phase (a profile, not a result).

    ``install()`` makes every mmengine Runner built afterwards carry a hook that times: ``data`` (waiting
    for the next training batch), ``forward`` (the training step less its backward), ``backward`` (the
    optimizer wrapper's ``update_params``: backward pass and optimizer step), ``validation`` (the whole
    validation loop, checkpoint writes excluded), ``checkpoint`` (``runner.save_checkpoint``) and ``test``
    (the test loop). ``runs`` holds one dict per run: its experiment name and the seconds per phase.
    The hook is attached through the run's extension point, ``benchmark.openmmlab.watch_runners``.
    """

    def __init__(self) -> None:
        self.runs: list[dict] = []
        self._watch: contextlib.ExitStack | None = None

    def install(self) -> PhaseProfile:
        from mmengine.hooks import Hook

        from benchmark import openmmlab

        profile = self
        clock = time.perf_counter

        class _Timer(Hook):
            priority = "VERY_HIGH"

            def __init__(self, entry: dict) -> None:
                self.entry = entry
                self._t = {}

            def _add(self, phase: str, seconds: float) -> None:
                self.entry[phase] = self.entry.get(phase, 0.0) + seconds

            def before_run(self, runner) -> None:
                real_save = runner.save_checkpoint

                def save_checkpoint(*a, **k):
                    t = clock()
                    try:
                        return real_save(*a, **k)
                    finally:
                        self._add("checkpoint", clock() - t)

                runner.save_checkpoint = save_checkpoint

            def before_train(self, runner) -> None:
                wrapper = runner.optim_wrapper
                real_update = wrapper.update_params

                def update_params(*a, **k):
                    t = clock()
                    try:
                        return real_update(*a, **k)
                    finally:
                        self._add("_update", clock() - t)

                wrapper.update_params = update_params

            def before_train_epoch(self, runner) -> None:
                self._t["data"] = clock()

            def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
                now = clock()
                self._add("data", now - self._t["data"])
                self._t["step"] = now
                self._update_before = self.entry.get("_update", 0.0)

            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
                now = clock()
                update = self.entry.get("_update", 0.0) - self._update_before
                self._add("forward", now - self._t["step"] - update)
                self._add("backward", update)
                self._t["data"] = now

            def before_val(self, runner) -> None:
                self._t["val"] = clock()
                self._ckpt_before = self.entry.get("checkpoint", 0.0)

            def after_val(self, runner) -> None:
                ckpt = self.entry.get("checkpoint", 0.0) - self._ckpt_before
                self._add("validation", clock() - self._t["val"] - ckpt)

            def before_test(self, runner) -> None:
                self._t["test"] = clock()

            def after_test(self, runner) -> None:
                self._add("test", clock() - self._t["test"])

        def attach(runner) -> None:
            entry = {"name": runner.cfg.get("experiment_name", "")}
            profile.runs.append(entry)
            runner.register_hook(_Timer(entry))

        self._watch = contextlib.ExitStack()
        self._watch.enter_context(openmmlab.watch_runners(attach))
        return self

    def uninstall(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def phases(self, run: dict) -> dict[str, float]:
        return {p: run.get(p, 0.0) for p in PHASES}
