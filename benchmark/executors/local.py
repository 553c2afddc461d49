"""Local workers: a sweep spread over N processes on this machine, each pulling ready runs.

Every worker runs the protocol walk of :mod:`benchmark.runs.protocol` over the records on disk: it takes
the first ready run it can claim, executes it, and walks again, until every run of the sweep is settled.
The file system is the only shared state (records, claims, failure markers; the protocol module says what
makes a run settled), so workers never talk to each other and any of them (or the whole sweep) may die at
any point: a sweep killed at any point (even with SIGKILL) and started again, with any number of workers,
ends with the records an uninterrupted sequential ``evaluate`` writes. Slurm job arrays
(:mod:`benchmark.executors.slurm`) run the same protocol.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import uuid
from pathlib import Path

from benchmark.backbones import parse_spec
from benchmark.runs.claims import CLAIMS_DIR
from benchmark.runs.progress import worker_line
from benchmark.runs.protocol import Sweep, collect, run_claimed, scan, settled


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
    waiting: dict[str, float] = {}  # key -> when we first found its claim held by another process

    def show_lr_line(task_id: str, line: str) -> None:
        if task_id not in shown:
            shown.add(task_id)
            echo(f"[{worker}] {line}")

    while True:
        if parent_pid is not None and os.getppid() != parent_pid:
            echo(f"[{worker}] the sweep process is gone; stopping")
            return executed
        state = scan(
            sweep,
            backbone,
            lambda run: settled(run, sweep.out_dir, sweep_id, waiting.get(run.key)),
            on_lr_line=show_lr_line,
        )
        if state.left == 0:
            return executed
        ran = False
        for run in state.ready:  # try_claim skips runs held by live workers and takes stale claims over
            started = time.time()
            record = run_claimed(run, sweep.out_dir, sweep.options, sweep_id, worker)
            if record is None:
                waiting.setdefault(run.key, started)
                continue
            executed += 1
            ran = True
            echo(worker_line(worker, total - state.left + 1, total, run, record, time.time() - started))
            break
        if not ran:  # the ready runs are held by live workers, or a search is finishing elsewhere
            time.sleep(poll_s)


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
