"""Runs: (task, backbone, seed, lr) -> one record. ``evaluate`` plans and executes them.

The package: ``config`` (RunOptions, what the user asked for; RunConfig, what one run trains with),
``plan`` (PlannedRun, plan_run: a run's key and record path), ``execute`` (one run trained, its record
written), ``records`` (the record files), ``claims`` (who runs what), ``feature_store`` (frozen features).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from benchmark.backbones import parse_spec
from benchmark.runs.config import TRAIN_LOSSES, RunConfig, RunOptions, _overrides, resolve
from benchmark.runs.execute import (
    NonFiniteValidationLossError,
    check_validation_losses,
    dist_info,
    execute,
    from_rank0,
)
from benchmark.runs.plan import PlannedRun, check_dataset_prepared, plan_run, record_identity
from benchmark.runs.records import read_record
from tasks.registry import TaskSpec

# the names re-exported from the submodules (those defined below are public too)
__all__ = [
    "TRAIN_LOSSES",
    "NonFiniteValidationLossError",
    "PlannedRun",
    "RunConfig",
    "RunOptions",
    "_overrides",
    "check_dataset_prepared",
    "check_validation_losses",
    "dist_info",
    "execute",
    "from_rank0",
    "plan_run",
    "record_identity",
    "resolve",
]


def existing_ok(run: PlannedRun) -> dict | None:
    """The record of a run already finished successfully, if any (so a sweep resumes)."""
    if run.path.exists():
        try:
            rec = read_record(run.path)
        except (json.JSONDecodeError, OSError):
            return None
        if rec.get("status") == "ok":
            return rec
    return None


def claim_or_record(run: PlannedRun, out_dir, echo=print, poll_s: float = 2.0):
    """Before training ``run``, take its claim (:mod:`benchmark.runs.claims`), waiting while another process (a
    second ``evaluate`` on the same output folder, a sweep worker, a Slurm job) holds it.

    Returns:
        ``(None, record)`` when the run is recorded ok, or was recorded by the other process while this
        one waited (ok or failed: it is not trained twice); else ``(claim, None)``: train the run, then
        release the claim.
    """
    from benchmark.runs.claims import claim_path, try_claim

    path = claim_path(out_dir, run.key)
    waited_since = None
    while True:
        done = existing_ok(run)
        if done is not None:
            return None, done
        claim = try_claim(path, worker="evaluate", task=run.task.id, key=run.key)
        if claim is not None:
            done = existing_ok(run)  # recorded between our look and our claim
            if done is None and waited_since is not None:
                done = _recorded_since(run, waited_since)  # the other process's run failed: not retrained
            if done is not None:
                claim.release()
                return None, done
            return claim, None
        if waited_since is None:
            waited_since = time.time()
            echo(f"    another process is running it (claim {path}); waiting for its record")
        time.sleep(poll_s)


def _recorded_since(run: PlannedRun, since: float) -> dict | None:
    try:
        if run.path.stat().st_mtime >= since - 1.0:
            return read_record(run.path)
    except (OSError, ValueError):
        pass
    return None


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
        phase = "lr search" if run.phase == "lr_search" else "final"
        self.echo(
            f"[{self.done + 1}/{self.total}{eta}] {run.task.id} ({phase}) seed={run.seed} lr={run.lr:g} "
            f"backbone={run.backbone.name}"
        )

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
            self.echo(
                f"    {val_text}test {record['primary_metric']}={record['test_score']:.4f} "
                f"({record['wall_time_s']:.0f} s) -> {run.path}"
            )
        else:
            self.echo(f"    FAILED: {record['reason']} -> {run.path}")


def choose_lr(search: list[dict]) -> float | None:
    """The grid value whose run scored best on validation (first in grid order on ties)."""
    scored = [
        r
        for r in search
        if r.get("status") == "ok" and r.get("val_score") is not None and r["val_score"] == r["val_score"]
    ]
    if not scored:
        return None
    return max(scored, key=lambda r: r["val_score"])["lr"]


def evaluate(
    backbone_spec: str,
    tasks: list[TaskSpec],
    data_root,
    out_dir,
    seeds: list[int],
    lr: float | None = None,
    options: RunOptions = RunOptions(),
    echo=print,
    lr_search: bool = True,
    search_seed: int = 1000,
) -> list[dict]:
    """The protocol for one backbone: per task, a learning-rate search, then the seeds at the chosen lr.

    The search trains one run per value of the task's grid (seed ``search_seed``, distinct from the final
    seeds) and keeps the value with the best validation metric; the final runs use ``seeds``. With ``lr``
    given, ``lr_search=False`` or a task without a grid (its lr is fixed) the search is skipped. Runs
    already recorded are skipped, so an interrupted sweep resumes where it stopped; a failed run is
    recorded and the sweep goes on.

    Returns:
        The records of all runs (search and final), in execution order.
    """
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    backbone = parse_spec(backbone_spec)
    echo(backbone.describe())
    for task in tasks:
        check_dataset_prepared(data_root, task)
    searching = {t.id: lr is None and lr_search and bool(t.lr_grid) for t in tasks}
    total = sum(len(t.lr_grid) * searching[t.id] + len(seeds) for t in tasks)
    progress = SweepProgress(total, echo)
    records: list[dict] = []

    def run_or_skip(run: PlannedRun) -> dict:
        progress.start(run)
        rank = dist_info()[0]
        claim, done = claim_or_record(run, out_dir, echo) if rank == 0 else (None, None)
        done = from_rank0(done)  # under torchrun all ranks take rank 0's decision
        try:
            record = done if done is not None else execute(run, out_dir, options)
        finally:
            if claim is not None:
                claim.release()
        progress.finish(run, record, skipped=done is not None)
        records.append(record)
        return record

    for task in tasks:
        sweep = {"seeds": list(seeds), "lr_search": searching[task.id]}
        chosen, source = lr, None
        if searching[task.id]:
            sweep |= {"search_seed": search_seed, "grid": list(task.lr_grid)}
            search = [
                run_or_skip(
                    plan_run(
                        task,
                        backbone,
                        data_root,
                        out_dir,
                        search_seed,
                        g,
                        options,
                        "grid",
                        "lr_search",
                        sweep,
                    )
                )
                for g in task.lr_grid
            ]
            sweep["search_val_scores"] = {f"{r['lr']:g}": r.get("val_score") for r in search}
            chosen = choose_lr(search)
            if chosen is None:
                chosen, source = task.lr, "default (every lr-search run failed)"
                echo(
                    f"    {task.id}: every learning-rate search run failed; final runs use the default lr {task.lr:g}"
                )
            else:
                source = "search"
                echo(f"    {task.id}: learning rate {chosen:g} chosen on validation")
        for seed in seeds:
            run_or_skip(
                plan_run(task, backbone, data_root, out_dir, seed, chosen, options, source, "final", sweep)
            )
    return records


def summarize(records: list[dict]) -> list[dict]:
    """Per task, over the final runs that succeeded: n, mean, population std, 95 % t-interval (in %)."""
    from benchmark.leaderboard import stats

    rows = []
    by_task: dict[str, list[dict]] = {}
    for r in records:
        if r.get("phase", "final") == "final":
            by_task.setdefault(r["task"], []).append(r)
    for task_id, recs in by_task.items():
        values = np.array(
            [100 * r["test_score"] for r in recs if r["status"] == "ok" and r.get("test_score") is not None]
        )
        n = len(values)
        rows.append(
            {
                "task": task_id,
                "metric": recs[0]["primary_metric"],
                "n": n,
                "failed": len(recs) - n,
                "lr": recs[0]["lr"],
                "mean": stats.mean(values),
                "std": stats.std_population(values),
                "ci95": stats.t_interval(values),
            }
        )
    return rows


def default_num_workers(device: str) -> int:
    return 0 if device == "cpu" else min(8, os.cpu_count() or 1)
