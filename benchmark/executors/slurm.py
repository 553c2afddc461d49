"""Slurm sweeps through submitit: one run per job, submitted as job arrays, in two stages.

Stage 1 submits every run that does not depend on anything (the learning-rate search runs, and the final
runs of tasks without a search) as one job array; stage 2, once those are settled, the final runs at the
chosen learning rates. The submitting process (``cxrbench evaluate --executor slurm``) waits for both; it
needs no GPU and can run on a login node (in tmux / screen: it only submits and waits).

Resume-safe: a run already recorded is never submitted again; a job claims its key before training
(:mod:`benchmark.runs.claims`), so a duplicate job (the command started twice, or started again while old jobs
are still queued) finds the claim or the record and exits at once; the driver waits for runs that jobs of
an earlier submission are still running. A job that is preempted or reaches its time limit is requeued by
submitit (checkpointing) and starts the run again; a job that dies without a record (out of memory, node
failure) gets a failed record with submitit's error, and the sweep goes on. Records go to ``OUT/runs`` on
the shared file system, one file per run; submitit's logs and pickles to ``--slurm-folder``
(default ``OUT/slurm``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from benchmark.runs import PlannedRun, RunOptions, record_identity
from benchmark.runs.claims import claim_path, is_stale
from benchmark.runs.protocol import Sweep, collect, mark_attempted, run_claimed, scan, settled
from benchmark.runs.records import write_record


@dataclass(frozen=True)
class SlurmSettings:
    """Resources of each job (one run) and where submitit keeps its files.

    ``cluster``: ``None`` / ``"slurm"`` submit to Slurm; ``"local"`` runs the jobs as processes on this
    machine and ``"debug"`` in this process (submitit's own executors, for trying a sweep out and for tests).
    """

    folder: str
    partition: str | None = None
    time_min: int = 240
    gpus: int = 1
    cpus: int = 8
    mem_gb: int | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    cluster: str | None = None
    extra: dict = field(default_factory=dict)  # more sbatch options, e.g. {"constraint": "a100"}


class RunJob(submitit.helpers.Checkpointable):
    """One run as a submitit job; requeued from scratch when preempted or out of time."""

    def __init__(self, run: PlannedRun, out_dir: str, options: RunOptions, sweep_id: str) -> None:
        self.run = run
        self.out_dir = out_dir
        self.options = options
        self.sweep_id = sweep_id

    def __call__(self) -> dict:
        if self.options.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # mmengine would put the model on a visible GPU
        worker = f"slurm:{os.environ.get('SLURM_JOB_ID', 'local')}"
        record = run_claimed(self.run, self.out_dir, self.options, self.sweep_id, worker)
        if record is None:
            return {"key": self.run.key, "status": "skipped (recorded, or running in another job)"}
        return {"key": self.run.key, "status": record["status"], "reason": record.get("reason")}


def make_executor(settings: SlurmSettings):
    cluster = None if settings.cluster in (None, "auto", "slurm") else settings.cluster
    if cluster is None and shutil.which("sbatch") is None:
        raise ValueError(
            "--executor slurm: no Slurm here (sbatch is not on PATH). Run the command on a cluster login "
            "node, or add --slurm-cluster local to run the jobs on this machine through submitit"
        )
    cluster = cluster or "slurm"
    executor = submitit.AutoExecutor(folder=settings.folder, cluster=cluster)
    params = dict(
        name="cxrbench",
        timeout_min=settings.time_min,
        gpus_per_node=settings.gpus,
        cpus_per_task=settings.cpus,
        tasks_per_node=1,
        nodes=1,
        slurm_array_parallelism=settings.array_parallelism,
    )
    if settings.mem_gb:
        params["mem_gb"] = settings.mem_gb
    if settings.partition:
        params["slurm_partition"] = settings.partition
    if settings.account:
        params["slurm_account"] = settings.account
    if settings.qos:
        params["slurm_qos"] = settings.qos
    if settings.extra:
        params["slurm_additional_parameters"] = dict(settings.extra)
    executor.update_parameters(**params)
    return executor


def _failed_record(run: PlannedRun, reason: str) -> dict:
    return {
        **record_identity(run, "failed"),
        "reason": reason,
        "split_hash": run.manifest.get("split_hash"),
        "primary_metric": None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _wait_until_gone(job, poll_s: float, limit_s: float = 900.0) -> None:
    """Wait until a finished Slurm job's processes are gone (it has left ``squeue``).

    sacct says CANCELLED (or FAILED, TIMEOUT) as soon as Slurm ends a job, but its processes live on until
    they exit: submitit's jobs ignore the SIGTERM of ``scancel`` and die only at the SIGKILL ``KillWait``
    seconds later (30 s by default), so the run may still write its record meanwhile. Only then does the
    driver know whether the job left a record or needs a failed one (found on a real cluster).
    """
    if not isinstance(job, submitit.SlurmJob) or shutil.which("squeue") is None:
        return  # submitit's local / debug jobs: done means their process has exited
    deadline = time.time() + limit_s
    while time.time() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", job.job_id], capture_output=True, text=True
        )
        if out.returncode != 0 or not out.stdout.strip():  # unknown job id (purged) or no longer queued
            return
        time.sleep(poll_s)


def _run_stage(
    runs: list[PlannedRun], sweep: Sweep, sweep_id: str, executor, echo, stage: str, poll_s: float
) -> None:
    """Submit the unsettled runs as one array, wait for the jobs and for runs held by earlier jobs."""
    since = time.time()
    todo, held = [], []
    for run in runs:
        if settled(run, sweep.out_dir, sweep_id) is not None:
            continue
        claim = claim_path(sweep.out_dir, run.key)
        (held if claim.exists() and not is_stale(claim) else todo).append(run)
    if held:
        echo(f"{stage}: {len(held)} run(s) are being run by earlier jobs; waiting for them too")
    jobs = []
    if todo:
        with executor.batch():  # one job array; each job is the Checkpointable itself, so it can be requeued
            jobs = [executor.submit(RunJob(r, sweep.out_dir, sweep.options, sweep_id)) for r in todo]
        ids = sorted({j.job_id.split("_")[0] for j in jobs})
        echo(f"{stage}: submitted {len(jobs)} run(s) as job array {', '.join(ids)}")
    for run, job in zip(todo, jobs):
        try:
            outcome = job.result()
            echo(f"  {run.task.id} seed={run.seed} lr={run.lr:g}: {outcome['status']} (job {job.job_id})")
        except Exception as e:  # the job died without writing a record: record why, go on
            _wait_until_gone(job, poll_s)
            if settled(run, sweep.out_dir, sweep_id) is not None:  # its run ended in the kill grace time
                echo(f"  {run.task.id} seed={run.seed} lr={run.lr:g}: recorded (job {job.job_id} ended: {job.state})")
                continue
            reason = (
                f"job {job.job_id} failed ({job.state}): {type(e).__name__}: "
                f"{str(e).strip().splitlines()[-1][:500]}"
            )
            echo(f"  {run.task.id} seed={run.seed} lr={run.lr:g}: FAILED ({reason})")
            if settled(run, sweep.out_dir, sweep_id) is None:
                write_record(run.path, _failed_record(run, reason))
                mark_attempted(sweep.out_dir, run.key, sweep_id)
    # runs claimed by jobs of an earlier submission (or a duplicate job skipped them): wait for the record
    for run in held + todo:
        while settled(run, sweep.out_dir, sweep_id, waiting_since=since) is None:
            claim = claim_path(sweep.out_dir, run.key)
            if not claim.exists() or is_stale(claim):
                echo(
                    f"  {run.task.id} seed={run.seed} lr={run.lr:g}: no record and nobody runs it; resubmitting"
                )
                _run_stage([run], sweep, sweep_id, executor, echo, stage, poll_s)
                break
            time.sleep(poll_s)


def run_slurm(sweep: Sweep, settings: SlurmSettings, echo=print, poll_s: float = 10.0) -> list[dict]:
    """Run a sweep as Slurm job arrays (see the module docstring); returns the records in ``evaluate`` order."""
    backbone = sweep.check()
    sweep_id = uuid.uuid4().hex[:12]
    Path(settings.folder).mkdir(parents=True, exist_ok=True)
    executor = make_executor(settings)
    echo(
        f"sweep {sweep_id}: {sweep.total()} run(s) of {len(sweep.tasks)} task(s) through submitit "
        f"({executor.cluster}); logs in {settings.folder}"
    )
    # stage 1: the runs that depend on nothing (the protocol walked as if no run were settled yet)
    first = scan(sweep, backbone, lambda run: None).ready
    _run_stage(first, sweep, sweep_id, executor, echo, "stage 1 (lr search, fixed-lr tasks)", poll_s)
    # stage 2: the final runs at the learning rates the search chose
    second = scan(
        sweep,
        backbone,
        lambda run: settled(run, sweep.out_dir, sweep_id),
        on_lr_line=lambda task_id, line: echo(f"  {line}"),
    ).ready
    if second:
        _run_stage(second, sweep, sweep_id, executor, echo, "stage 2 (final seeds)", poll_s)
    return collect(sweep, sweep_id)
