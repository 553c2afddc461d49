"""The scaling options of ``cxrbench evaluate``: feature cache, torchrun / DDP, local workers, Slurm.

Kept out of the command line so that it stays a thin face (the options are declared in
:mod:`benchmark.cli.evaluate`): this module checks their combinations, sets up the process group under
torchrun and dispatches a sweep to an executor.

- ``--no-feature-cache`` / ``--feature-cache DIR`` / ``--feature-cache-dtype``: frozen tasks train their
  head on cached encoder features (:mod:`benchmark.runs.feature_store`), by default in
  ``$CXRBENCH_FEATURE_CACHE`` or ``OUT/feature_cache``.
- ``--launcher pytorch``: under ``torchrun --nproc-per-node N -m benchmark.cli evaluate ...`` every run
  spans the N processes (DDP through mmengine; NCCL on GPUs, gloo on CPUs); the task's batch size is split
  over them and rank 0 writes the records.
- ``--executor local --workers N``: N worker processes pull runs (:mod:`benchmark.executors.local`).
- ``--executor slurm``: job arrays through submitit (:mod:`benchmark.executors.slurm`).
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

from benchmark.runs.feature_store import default_root


def finish_distributed(wait: bool = True) -> None:
    """Tear down the process group that :func:`launcher_setup` made: every rank first waits for the others
    (``wait``; a rank leaving early aborted a peer still talking to it with gloo), then destroys it. A no-op
    without torch.distributed or an initialised group; safe to call twice."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()


def launcher_setup(args) -> str | None:
    """Resolve the scaling options in place (``args.rank``, ``args.feature_cache_dir``); an error or None."""
    args.rank = 0
    root = Path(args.feature_cache).expanduser() if args.feature_cache else default_root(args.out)
    args.feature_cache_dir = root.resolve()  # jobs and workers may start elsewhere
    if args.workers < 1:
        return "--workers must be >= 1"
    if args.executor == "slurm" and args.workers != 1:
        return (
            "--workers is for the local executor; Slurm runs one job per run (see --slurm-array-parallelism)"
        )
    if args.launcher == "pytorch":
        if args.executor != "local" or args.workers != 1:
            return "--launcher pytorch runs one run at a time over all processes: use it without --workers / --executor slurm"
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return (
                "--launcher pytorch needs the environment torchrun sets up: "
                "torchrun --nproc-per-node N -m benchmark.cli evaluate ... --launcher pytorch"
            )
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if args.device == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            # initialised here rather than by mmengine: its launcher assumes CUDA, and the sweep needs the
            # group before the first run (all ranks follow rank 0's decision to skip a recorded run)
            dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
            atexit.register(finish_distributed, wait=False)
        args.rank = dist.get_rank()
    if args.executor == "slurm" and args.device is None:
        args.device = "cuda" if args.slurm_gpus > 0 else "cpu"
    return None


def evaluate_scaled(args, tasks, seeds, options) -> tuple[list[dict], int]:
    """Run the sweep on the chosen executor (local workers, Slurm).

    Returns:
        The records in ``evaluate`` order, and how many runs of the sweep have none (workers or jobs that
        died; starting the same command again finishes them).
    """
    from benchmark.executors.local import Sweep, run_local

    sweep = Sweep(
        backbone_spec=args.backbone,
        tasks=tuple(tasks),
        data_root=str(Path(args.data).resolve()),
        out_dir=str(Path(args.out).resolve()),
        seeds=tuple(seeds),
        lr=args.lr,
        options=options,
        lr_search=not args.no_lr_search,
        search_seed=args.search_seed,
    )
    if args.executor == "local":
        gpus = 0
        if options.device == "cuda":
            import torch

            gpus = torch.cuda.device_count()
        records = run_local(sweep, args.workers, gpus=gpus)
        return records, sweep.total() - len(records)
    from benchmark.executors.slurm import SlurmSettings, run_slurm

    settings = SlurmSettings(
        folder=str(Path(args.slurm_folder or Path(args.out) / "slurm").resolve()),
        partition=args.slurm_partition,
        time_min=args.slurm_time,
        gpus=args.slurm_gpus,
        cpus=args.slurm_cpus,
        mem_gb=args.slurm_mem,
        account=args.slurm_account,
        qos=args.slurm_qos,
        array_parallelism=args.slurm_array_parallelism,
        cluster=None if args.slurm_cluster == "slurm" else args.slurm_cluster,
    )
    records = run_slurm(sweep, settings)
    return records, sweep.total() - len(records)
