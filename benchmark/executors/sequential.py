"""The sequential executor: the protocol of one backbone run in this process, one run after the other.

``evaluate`` walks the protocol (:func:`benchmark.runs.protocol.scan`) and settles each run as it comes:
a run recorded ok is skipped, any other is claimed and trained here (:mod:`benchmark.runs.claims`), or,
while another process (a second ``evaluate`` on the same output folder, a sweep worker, a Slurm job) holds
its claim, waited for. Under torchrun every rank walks the same plan and follows rank 0's decisions.
"""

from __future__ import annotations

import time

from benchmark import runs as run_mod
from benchmark.runs import PlannedRun, RunOptions, dist_info, from_rank0
from benchmark.runs.progress import SweepProgress
from benchmark.runs.protocol import Sweep, existing_ok, recorded_since, scan
from tasks.registry import TaskSpec


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
                done = recorded_since(run, waited_since)  # the other process's run failed: not retrained
            if done is not None:
                claim.release()
                return None, done
            return claim, None
        if waited_since is None:
            waited_since = time.time()
            echo(f"    another process is running it (claim {path}); waiting for its record")
        time.sleep(poll_s)


def evaluate(
    backbone_spec: str,
    tasks: list[TaskSpec],
    data_root,
    out_dir,
    seeds: list[int],
    lr: float | None = None,
    options: RunOptions = RunOptions(),  # noqa: B008 (frozen: an immutable default)
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
    sweep = Sweep(
        backbone_spec, tuple(tasks), data_root, out_dir, tuple(seeds), lr, options, lr_search, search_seed
    )
    backbone = sweep.check(echo)
    progress = SweepProgress(sweep.total(), echo)

    def run_or_skip(run: PlannedRun) -> dict:
        progress.start(run)
        rank = dist_info()[0]
        claim, done = claim_or_record(run, out_dir, echo) if rank == 0 else (None, None)
        done = from_rank0(done)  # under torchrun all ranks take rank 0's decision
        try:
            record = done if done is not None else run_mod.execute(run, out_dir, options)
        finally:
            if claim is not None:
                claim.release()
        progress.finish(run, record, skipped=done is not None)
        return record

    # every run is settled as the walk reaches it, so the walk is the whole sweep, in execution order
    return scan(sweep, backbone, run_or_skip, on_lr_line=lambda task_id, line: echo(f"    {line}")).records
