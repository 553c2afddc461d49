"""How is one planned run trained, and what does its record hold? ``execute`` resolves the run's
configuration, trains, validates and tests it through the OpenMMLab corner and writes its record (a failed run
too); the torchrun helpers and the validation-loss check it relies on live here."""

from __future__ import annotations

import math
import time
import traceback

from benchmark.backbones import encoder_input
from benchmark.runs.config import RunOptions, resolve
from benchmark.runs.plan import PlannedRun, record_identity
from benchmark.runs.records import versions, write_record
from tasks.errors import DatasetError
from tasks.registry import METRIC_KEYS


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process in a torchrun / DDP group; (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def from_rank0(value):
    """Rank 0's ``value`` on every rank (the value itself outside a process group)."""
    if dist_info()[1] == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def execute(run: PlannedRun, out_dir, options: RunOptions) -> dict:
    """Train, validate and test one run; write and return its record (failed runs too).

    Inside a torchrun group (``options.launcher == "pytorch"``) every rank calls this for the same run:
    the task's batch size is split over the processes, and rank 0 writes the record.
    """
    task = run.task
    primary = METRIC_KEYS[task.metric].record
    rank, world = dist_info()
    started = from_rank0(time.time())  # one experiment name for all ranks
    try:
        config = resolve(run, out_dir, options, f"{task.id}-{run.key}-{int(started * 1000)}", world)
    except DatasetError as e:  # e.g. a corrupt stats.json: this run fails with the file named, the sweep goes on
        record = {
            **record_identity(run, "failed"),
            "dataset": {"name": task.dataset, "prepared": str(run.prepared), "size": task.size},
            "split_hash": run.manifest.get("split_hash"),
            "primary_metric": primary,
            "versions": versions(),
            "reason": f"{type(e).__name__}: {e}",
            "wall_time_s": 0.0,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if rank == 0:
            write_record(run.path, record)
        return record
    record = {
        **record_identity(run, "running"),
        "dataset": {
            "name": task.dataset,
            "prepared": str(run.prepared),
            "size": task.size,
            "train_subset": config.train_subset,
            "n_train": config.n_train,
            "subsets": run.manifest.get("subsets"),
        },
        "split_hash": run.manifest["split_hash"],
        "encoder_input": encoder_input(run.backbone, task.size),
        "normalization": config.normalization["record"],
        "overrides": dict(config.overrides),
        "batch_size": config.batch_size * config.world_size,
        "batch_size_per_process": config.batch_size,
        "world_size": config.world_size,
        "max_epochs": config.max_epochs,
        "device": config.device,
        "amp": config.amp,
        "notes": list(config.notes),
        "primary_metric": primary,
        "versions": versions(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    try:
        if config.n_train == 0:
            raise RuntimeError(f"the prepared {config.train_subset} subset of {task.dataset} has no images")
        from benchmark import openmmlab  # the only import of the OpenMMLab corner

        cfg = openmmlab.build_config(task, config)
        outcome = openmmlab.train_and_test(cfg, METRIC_KEYS[task.metric].monitor, quiet=not config.verbose)
        check_validation_losses(outcome.history)
        record.update(
            status="ok",
            metrics={"val": outcome.val, "test": outcome.test},
            test_score=outcome.test.get(primary),
            val_score=outcome.val.get(primary),
            best_epoch=outcome.best_epoch,
            epochs_run=outcome.epochs_run,
            iterations=outcome.iterations,
            val_history=outcome.history,
            log_file=outcome.log_file,
            feature_cache=outcome.feature_cache or {"used": False},
        )
    except Exception as e:  # a failed run is recorded with its reason; the sweep goes on
        record.update(
            status="failed", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=20)
        )
    record.setdefault("feature_cache", {"used": False})
    record["wall_time_s"] = round(time.time() - started, 2)
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if rank == 0:
        write_record(run.path, record)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if not config.keep_checkpoints and rank == 0:
        for ckpt in config.work_dir.glob("*.pth"):
            ckpt.unlink()
        last = config.work_dir / "last_checkpoint"
        if last.exists():
            last.unlink()
    return record


class NonFiniteValidationLossError(RuntimeError):
    """The validation loss is NaN or infinite: the weights diverged (after the last training step, where
    the training-loss guard cannot see it)."""


def check_validation_losses(history: list[dict]) -> None:
    """Raise :class:`NonFiniteValidationLossError` if a validation epoch's loss is not finite."""
    for h in history:
        loss = h.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteValidationLossError(
                f"validation loss is {loss} at epoch {h.get('epoch')}: the weights are no longer finite "
                "(diverged at the last training steps); the test metrics of such a model mean nothing"
            )
