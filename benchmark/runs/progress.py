"""How a sweep reports its progress on the console: run k of N, the ETA, each run's outcome.

One reporter for every executor: :class:`SweepProgress` prints the sequential sweep (a line when a run
starts, its outcome when it ends); :func:`worker_line` is the one line a local worker prints per run it
executed (workers share the console, so a run is one line, with the worker's name). Both describe a run and
its outcome with the same words (:func:`describe`, :func:`outcome`).
"""

from __future__ import annotations

from benchmark.runs import PlannedRun


def phase_name(run: PlannedRun) -> str:
    return "lr search" if run.phase == "lr_search" else "final"


def describe(run: PlannedRun) -> str:
    """``task (phase) seed=S lr=LR``."""
    return f"{run.task.id} ({phase_name(run)}) seed={run.seed} lr={run.lr:g}"


def outcome(record: dict) -> str:
    """``test METRIC=SCORE`` of an ok record, ``FAILED: reason`` of a failed one."""
    if record["status"] == "ok":
        return f"test {record['primary_metric']}={record['test_score']:.4f}"
    return f"FAILED: {record.get('reason')}"


class SweepProgress:
    """Overall progress of a sweep on the console: runs done / left, the current task, an ETA."""

    def __init__(self, total: int, echo) -> None:
        self.total = total
        self.done = 0
        self.trained_seconds: list[float] = []
        self.echo = echo

    def start(self, run: PlannedRun) -> None:
        left = self.total - self.done
        eta = ""
        if self.trained_seconds:
            seconds = sum(self.trained_seconds) / len(self.trained_seconds) * left
            eta = f", ETA {seconds / 60:.0f} min" if seconds >= 90 else f", ETA {seconds:.0f} s"
        self.echo(f"[{self.done + 1}/{self.total}{eta}] {describe(run)} backbone={run.backbone.name}")

    def finish(self, run: PlannedRun, record: dict, skipped: bool) -> None:
        self.done += 1
        if skipped:
            self.echo(f"    already recorded ({run.path.name}), skipped")
            return
        self.trained_seconds.append(record.get("wall_time_s") or 0.0)
        cache = record.get("feature_cache") or {}
        if cache.get("used"):
            built = f"built {', '.join(cache['built'])}" if cache.get("built") else "all reused"
            self.echo(
                f"    feature cache: {cache['size']} ({built}, {cache['seconds']:.1f} s) in {cache['root']}"
            )
        if record["status"] == "ok":
            val = record.get("val_score")
            val_text = f"val {val:.4f}, " if val is not None else ""
            self.echo(f"    {val_text}{outcome(record)} ({record['wall_time_s']:.0f} s) -> {run.path}")
        else:
            self.echo(f"    {outcome(record)} -> {run.path}")


def worker_line(worker: str, done: int, total: int, run: PlannedRun, record: dict, seconds: float) -> str:
    """The line a local worker prints for a run it executed (the ``done``-th settled run of ``total``)."""
    return f"[{worker}] [{done}/{total}] {describe(run)}: {outcome(record)} ({seconds:.0f} s) -> {run.path}"
