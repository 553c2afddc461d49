"""Sweeps spread over processes: N local workers pulling runs, or Slurm job arrays (``benchmark.executors.slurm``).

A sweep is the protocol of :func:`benchmark.runs.evaluate` (per task: the learning-rate search, then the
final seeds at the chosen value), seen as a set of run keys whose records live in one file each. The file
system is the only shared state, so workers never talk to each other and any of them (or the whole sweep)
may die at any point:

- a run is *settled* when its record says ``ok``, or when it failed during this sweep (a failed record from
  an earlier sweep is retried, as ``evaluate`` does);
- a worker takes a run only after creating its claim file ``OUT/claims/<key>.claim`` with ``O_EXCL``
  (:mod:`benchmark.runs.claims`), so no two workers run the same key; claims of dead workers are taken over;
- the final runs of a task become ready only when all its search runs are settled; their learning rate
  (and so their keys) come from the search records, exactly as in ``evaluate``.

So a sweep killed at any point (even with SIGKILL) and started again, with any number of workers, ends
with the records an uninterrupted sequential ``evaluate`` writes. Several ``cxrbench evaluate`` processes
started on different machines with the same ``--out`` on a shared file system cooperate the same way.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from benchmark import runs as run_mod
from benchmark.backbones import BackboneInfo, parse_spec
from benchmark.runs import PlannedRun, RunOptions, check_dataset_prepared, choose_lr, plan_run
from benchmark.runs.claims import CLAIMS_DIR, claim_path, is_stale, try_claim
from benchmark.runs.records import read_record
from tasks.datasets import get_dataset
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

    def check(self) -> BackboneInfo:
        """The checks ``evaluate`` makes before running anything; returns the resolved backbone."""
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        backbone = parse_spec(self.backbone_spec)
        for task in self.tasks:
            check_dataset_prepared(self.data_root, task)
            get_dataset(task.dataset)
        return backbone


def _attempt_marker(out_dir, key: str, sweep_id: str) -> Path:
    return Path(out_dir) / CLAIMS_DIR / f"{key}.attempted-{sweep_id}"


def mark_attempted(out_dir, key: str, sweep_id: str) -> None:
    """Note that ``key`` failed during this sweep (it is not retried until the next sweep)."""
    path = _attempt_marker(out_dir, key, sweep_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def settled(run: PlannedRun, out_dir, sweep_id: str) -> dict | None:
    """The record of ``run`` if it is settled for this sweep (ok, or failed during this sweep)."""
    if not run.path.exists():
        return None
    try:
        record = read_record(run.path)
    except (OSError, ValueError):
        return None
    if record.get("status") == "ok" or _attempt_marker(out_dir, run.key, sweep_id).exists():
        return record
    return None


def _sweep_info(sweep: Sweep, task: TaskSpec) -> dict:
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
    """The state of a sweep on disk: what is ready to run, what is settled, how much is left."""

    ready: list[PlannedRun]  # unsettled runs whose dependencies are met, in plan order
    records: list[dict]  # settled records, in plan order (search then final, task by task)
    left: int  # runs not settled yet (ready, running elsewhere, or waiting for a search)
    lr_lines: dict[str, str]  # task id -> how its learning rate was chosen


def scan(sweep: Sweep, backbone: BackboneInfo, sweep_id: str) -> Scan:
    ready, records, lr_lines = [], [], {}
    left = 0
    for task in sweep.tasks:
        search = search_runs(sweep, backbone, task)
        search_records = [settled(r, sweep.out_dir, sweep_id) for r in search]
        for r, rec in zip(search, search_records):
            if rec is None:
                ready.append(r)
            else:
                records.append(rec)
        if any(rec is None for rec in search_records):
            left += sum(rec is None for rec in search_records) + len(sweep.seeds)  # finals wait
            continue
        finals, line = final_runs(sweep, backbone, task, search_records if search else None)
        if line:
            lr_lines[task.id] = line
        for r in finals:
            rec = settled(r, sweep.out_dir, sweep_id)
            if rec is None:
                ready.append(r)
                left += 1
            else:
                records.append(rec)
    return Scan(ready, records, left, lr_lines)


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


def work(
    sweep: Sweep,
    sweep_id: str,
    worker: str = "w1",
    echo=print,
    parent_pid: int | None = None,
    poll_s: float = 2.0,
) -> int:
    """A worker: pull ready runs (plan order), claim, execute, until every run of the sweep is settled.

    Returns:
        The number of runs this worker executed.
    """
    backbone = parse_spec(sweep.backbone_spec)
    total = sweep.total()
    executed = 0
    shown: set[str] = set()
    while True:
        if parent_pid is not None and os.getppid() != parent_pid:
            echo(f"[{worker}] the sweep process is gone; stopping")
            return executed
        state = scan(sweep, backbone, sweep_id)
        for task_id, line in state.lr_lines.items():
            if task_id not in shown:
                shown.add(task_id)
                echo(f"[{worker}] {line}")
        if state.left == 0:
            return executed
        ran = False
        for run in state.ready:  # try_claim skips runs held by live workers and takes stale claims over
            phase = "lr search" if run.phase == "lr_search" else "final"
            started = time.time()
            record = run_claimed(run, sweep.out_dir, sweep.options, sweep_id, worker)
            if record is None:
                continue
            executed += 1
            ran = True
            done = total - state.left + 1
            outcome = (
                f"test {record['primary_metric']}={record['test_score']:.4f}"
                if record["status"] == "ok"
                else f"FAILED: {record.get('reason')}"
            )
            echo(
                f"[{worker}] [{done}/{total}] {run.task.id} ({phase}) seed={run.seed} lr={run.lr:g}: "
                f"{outcome} ({time.time() - started:.0f} s) -> {run.path}"
            )
            break
        if not ran:  # the ready runs are held by live workers, or a search is finishing elsewhere
            time.sleep(poll_s)


def collect(sweep: Sweep, sweep_id: str) -> list[dict]:
    """The settled records of the sweep, in ``evaluate``'s order. Once every run is settled, removes this
    sweep's failure markers (the next sweep retries failed runs anyway) and claims of dead processes."""
    state = scan(sweep, parse_spec(sweep.backbone_spec), sweep_id)
    if state.left == 0:
        claims = Path(sweep.out_dir) / CLAIMS_DIR
        for marker in claims.glob(f"*.attempted-{sweep_id}"):
            marker.unlink(missing_ok=True)
        # a worker killed between writing a record and releasing its claim leaves a claim nobody needs
        for claim in claims.glob("*.claim"):
            if is_stale(claim):
                claim.unlink(missing_ok=True)
    return state.records


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _worker_main(
    sweep: Sweep, sweep_id: str, worker: str, threads: int, parent_pid: int, quiet: bool = False
) -> None:
    import torch

    torch.set_num_threads(threads)

    def echo(*args):
        if quiet:
            return
        # one write per line: the workers share the console (or pipe), and print's separate write of the
        # newline lets lines of two workers run into one
        sys.stdout.write(" ".join(str(a) for a in args) + "\n")
        sys.stdout.flush()

    try:
        work(sweep, sweep_id, worker, echo, parent_pid=parent_pid)
    except KeyboardInterrupt:
        sys.exit(130)


def run_local(
    sweep: Sweep, workers: int, echo=print, gpus: int = 0, quiet_workers: bool = False
) -> list[dict]:
    """Run a sweep with ``workers`` local processes pulling runs; returns the records (``evaluate`` order).

    Each worker uses ``cpus // workers`` threads; with ``gpus`` > 0, worker ``i`` sees GPU ``i % gpus``.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    sweep.check()
    sweep_id = uuid.uuid4().hex[:12]
    echo(
        f"sweep {sweep_id}: {sweep.total()} run(s) of {len(sweep.tasks)} task(s) on {workers} local worker(s); "
        f"claims in {Path(sweep.out_dir) / CLAIMS_DIR}"
    )
    threads = max(1, _usable_cpus() // workers)
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked OpenMMLab / torch state
    procs = []
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        for i in range(workers):
            if gpus > 0:
                os.environ["CUDA_VISIBLE_DEVICES"] = str(i % gpus)  # inherited by the child at spawn
            p = ctx.Process(
                target=_worker_main,
                args=(sweep, sweep_id, f"w{i + 1}", threads, os.getpid(), quiet_workers),
                name=f"cxrbench-w{i + 1}",
            )
            p.start()
            procs.append(p)
    finally:
        if gpus > 0:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        raise
    crashed = [f"{p.name} (exit code {p.exitcode})" for p in procs if p.exitcode != 0]
    if crashed:
        echo(f"worker(s) ended abnormally: {', '.join(crashed)}; start the same command again to finish")
    return collect(sweep, sweep_id)
