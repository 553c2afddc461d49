"""The protocol, written once: which runs a sweep makes, in which order, and what is settled or ready.

Per task: a learning-rate search (one run per value of the task's grid, seed ``search_seed``, distinct from
the final seeds) keeps the value with the best validation metric; then the final runs train ``seeds`` at
that value. With ``lr`` given, ``lr_search=False`` or a task without a grid (its lr is fixed) the search is
skipped. A sweep is this plan seen as a set of run keys whose records live in one file each.

:func:`scan` walks the plan in order and asks a ``settle`` callable for each run's record. Every executor
runs this one walk (:mod:`benchmark.executors`):

- sequential (``benchmark.runs.evaluate``): ``settle`` trains the run in this process (or waits for another
  process's claim of it), so one walk runs the whole sweep in plan order;
- local workers and Slurm: ``settle`` only looks at the records on disk (:func:`settled`); the walk says
  which runs are *ready* (their search is settled) and how many are left, and they run the ready ones.

The file system is the only shared state, so workers never talk to each other and any of them (or the whole
sweep) may die at any point:

- a run is *settled* when its record says ``ok``, or when it failed during this sweep (a failed record from
  an earlier sweep is retried, as ``evaluate`` does);
- a worker takes a run only after creating its claim file ``OUT/claims/<key>.claim`` with ``O_EXCL``
  (:mod:`benchmark.runs.claims`), so no two workers run the same key; claims of dead workers are taken over;
- the final runs of a task become ready only when all its search runs are settled; their learning rate
  (and so their keys) come from the search records, exactly as in ``evaluate``.

So a sweep killed at any point (even with SIGKILL) and started again, with any number of workers, ends
with the records an uninterrupted sequential ``evaluate`` writes. Several ``cxrbench evaluate`` processes
started on different machines with the same ``--out`` on a shared file system cooperate the same way.

:func:`summarize` condenses the final records of a sweep per task (mean, std, 95 % interval).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark import runs as run_mod
from benchmark.backbones import BackboneInfo, parse_spec
from benchmark.runs import PlannedRun, RunOptions, check_dataset_prepared, plan_run
from benchmark.runs.claims import CLAIMS_DIR, claim_path, is_stale, try_claim
from benchmark.runs.records import read_record
from tasks.registry import TaskSpec


@dataclass(frozen=True)
class Sweep:
    """Everything that defines a sweep (picklable: it is sent to worker processes and Slurm jobs).

    The arguments are those of :func:`benchmark.runs.evaluate`.
    """

    backbone_spec: str
    tasks: tuple[TaskSpec, ...]
    data_root: str
    out_dir: str
    seeds: tuple[int, ...]
    lr: float | None = None
    options: RunOptions = field(default_factory=RunOptions)
    lr_search: bool = True
    search_seed: int = 1000

    def searching(self, task: TaskSpec) -> bool:
        return self.lr is None and self.lr_search and bool(task.lr_grid)

    def total(self) -> int:
        return sum(len(t.lr_grid) * self.searching(t) + len(self.seeds) for t in self.tasks)

    def check(self, echo=None) -> BackboneInfo:
        """The checks made before running anything; returns the resolved backbone (described on ``echo``)."""
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        backbone = parse_spec(self.backbone_spec)
        if echo is not None:
            echo(backbone.describe())
        for task in self.tasks:
            check_dataset_prepared(self.data_root, task)
        return backbone


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


def _sweep_info(sweep: Sweep, task: TaskSpec) -> dict:
    """How the sweep chooses a task's runs, as recorded in each of them (``record["sweep"]``)."""
    info = {"seeds": list(sweep.seeds), "lr_search": sweep.searching(task)}
    if sweep.searching(task):
        info |= {"search_seed": sweep.search_seed, "grid": list(task.lr_grid)}
    return info


def search_runs(sweep: Sweep, backbone: BackboneInfo, task: TaskSpec) -> list[PlannedRun]:
    """The learning-rate search runs of a task (empty when it does not search), in grid order."""
    if not sweep.searching(task):
        return []
    info = _sweep_info(sweep, task)
    return [
        plan_run(
            task,
            backbone,
            sweep.data_root,
            sweep.out_dir,
            sweep.search_seed,
            g,
            sweep.options,
            "grid",
            "lr_search",
            info,
        )
        for g in task.lr_grid
    ]


def final_runs(
    sweep: Sweep, backbone: BackboneInfo, task: TaskSpec, search_records: list[dict] | None
) -> tuple[list[PlannedRun], str | None]:
    """The final runs of a task, given its search records in grid order (None when it does not search).

    Returns:
        The runs and a line saying how the learning rate was chosen (None without a search).
    """
    info = _sweep_info(sweep, task)
    chosen, source, line = sweep.lr, None, None
    if sweep.searching(task):
        info["search_val_scores"] = {f"{r['lr']:g}": r.get("val_score") for r in search_records}
        chosen = choose_lr(search_records)
        if chosen is None:
            chosen, source = task.lr, "default (every lr-search run failed)"
            line = (
                f"{task.id}: every learning-rate search run failed; final runs use the default lr {task.lr:g}"
            )
        else:
            source = "search"
            line = f"{task.id}: learning rate {chosen:g} chosen on validation"
    runs = [
        plan_run(
            task, backbone, sweep.data_root, sweep.out_dir, seed, chosen, sweep.options, source, "final", info
        )
        for seed in sweep.seeds
    ]
    return runs, line


@dataclass
class Scan:
    """The state of a sweep: what is ready to run, what is settled, how much is left."""

    ready: list[PlannedRun]  # unsettled runs whose dependencies are met, in plan order
    records: list[dict]  # settled records, in plan order (search then final, task by task)
    left: int  # runs not settled yet (ready, running elsewhere, or waiting for a search)


def scan(
    sweep: Sweep,
    backbone: BackboneInfo,
    settle: Callable[[PlannedRun], dict | None],
    on_lr_line: Callable[[str, str], None] | None = None,
) -> Scan:
    """Walk the protocol in plan order: per task its search runs, then (once they are all settled) its final
    runs at the chosen learning rate.

    ``settle(run)`` gives the record of a run, or None while it is not settled (it may also run it first:
    then the walk is the whole sequential sweep); ``on_lr_line(task_id, line)`` hears how each task's
    learning rate was chosen, when its final runs are planned (before they are settled).
    """
    ready, records = [], []
    left = 0
    for task in sweep.tasks:
        search = search_runs(sweep, backbone, task)
        search_records = [settle(r) for r in search]
        for r, rec in zip(search, search_records):
            if rec is None:
                ready.append(r)
            else:
                records.append(rec)
        if any(rec is None for rec in search_records):
            left += sum(rec is None for rec in search_records) + len(sweep.seeds)  # finals wait
            continue
        finals, line = final_runs(sweep, backbone, task, search_records if search else None)
        if line and on_lr_line is not None:
            on_lr_line(task.id, line)
        for r in finals:
            rec = settle(r)
            if rec is None:
                ready.append(r)
                left += 1
            else:
                records.append(rec)
    return Scan(ready, records, left)


# --- what is settled -----------------------------------------------------------------------------------


def _readable_record(run: PlannedRun) -> dict | None:
    """The record of ``run`` if its file exists and reads as JSON (one being written, or a torn file, reads
    as None: not settled)."""
    try:
        return read_record(run.path)
    except (OSError, ValueError):  # missing, unreadable, or not JSON (json.JSONDecodeError is a ValueError)
        return None


def existing_ok(run: PlannedRun) -> dict | None:
    """The record of a run already finished successfully, if any (so a sweep resumes)."""
    rec = _readable_record(run)
    return rec if rec is not None and rec.get("status") == "ok" else None


def _written_since(run: PlannedRun, since: float) -> bool:
    try:
        return run.path.stat().st_mtime >= since - 1.0
    except OSError:
        return False


def recorded_since(run: PlannedRun, since: float) -> dict | None:
    """The record of ``run`` if it was written at or after ``since`` (another process ran it while we
    waited for its claim: ok or failed, it is not trained twice)."""
    return _readable_record(run) if _written_since(run, since) else None


def _attempt_marker(out_dir, key: str, sweep_id: str) -> Path:
    return Path(out_dir) / CLAIMS_DIR / f"{key}.attempted-{sweep_id}"


def mark_attempted(out_dir, key: str, sweep_id: str) -> None:
    """Note that ``key`` failed during this sweep (it is not retried until the next sweep)."""
    path = _attempt_marker(out_dir, key, sweep_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def settled(run: PlannedRun, out_dir, sweep_id: str, waiting_since: float | None = None) -> dict | None:
    """The record of ``run`` if it is settled for this sweep (ok, or failed during this sweep).

    A failure is this sweep's when a process of the sweep marked it (:func:`mark_attempted`), or, with
    ``waiting_since`` (when this process first found the run claimed by another), when the record was
    written since: the other process ran it while we waited, and it is not trained twice (as
    ``evaluate`` does); it is then marked, so that the whole sweep agrees.
    """
    record = _readable_record(run)
    if record is None:
        return None
    if record.get("status") == "ok" or _attempt_marker(out_dir, run.key, sweep_id).exists():
        return record
    if waiting_since is not None and _written_since(run, waiting_since):
        mark_attempted(out_dir, run.key, sweep_id)
        return record
    return None


def run_claimed(
    run: PlannedRun, out_dir, options: RunOptions, sweep_id: str, worker: str = ""
) -> dict | None:
    """Execute ``run`` if nobody else holds or has settled it; None when it was not ours to run."""
    claim = try_claim(claim_path(out_dir, run.key), worker=worker, task=run.task.id, key=run.key)
    if claim is None:
        return None
    with claim:
        if settled(run, out_dir, sweep_id) is not None:  # finished between our scan and our claim
            return None
        record = run_mod.execute(run, out_dir, options)
        if record["status"] != "ok":
            mark_attempted(out_dir, run.key, sweep_id)
        return record


def collect(sweep: Sweep, sweep_id: str) -> list[dict]:
    """The settled records of the sweep, in ``evaluate``'s order. Once every run is settled, removes this
    sweep's failure markers (the next sweep retries failed runs anyway) and claims of dead processes."""
    state = scan(sweep, parse_spec(sweep.backbone_spec), lambda run: settled(run, sweep.out_dir, sweep_id))
    if state.left == 0:
        claims = Path(sweep.out_dir) / CLAIMS_DIR
        for marker in claims.glob(f"*.attempted-{sweep_id}"):
            marker.unlink(missing_ok=True)
        # a worker killed between writing a record and releasing its claim leaves a claim nobody needs
        for claim in claims.glob("*.claim"):
            if is_stale(claim):
                claim.unlink(missing_ok=True)
    return state.records


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
