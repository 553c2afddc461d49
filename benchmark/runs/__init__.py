"""Runs: (task, backbone, seed, lr) -> one record. ``evaluate`` plans and executes them."""

from __future__ import annotations

import math
import os
import re
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmark.backbones import BackboneInfo, encoder_input, normalization_plan
from benchmark.runs.records import (
    CODE_VERSION,
    SCHEMA_VERSION,
    record_path,
    run_key,
    versions,
    write_record,
)
from tasks.errors import DatasetError
from tasks.prepare import DEFAULT_SIZE, check_manifest, load_manifest, load_stats, prepared_dir
from tasks.registry import TaskSpec

# record key of the primary test metric of each task metric
PRIMARY = {"mAP": "mAP", "dice": "dice", "froc": "froc", "mean_class_dice": "dice"}
# training losses: the protocol's (mmdet's YOLOv3 loss, mean per-class Dice) or LoVT's own (README)
TRAIN_LOSSES = ("protocol", "lovt")


@dataclass(frozen=True)
class RunOptions:
    """Overrides and execution settings shared by the runs of one ``evaluate`` call.

    ``max_epochs`` / ``batch_size`` override the task's protocol values and ``train_limit`` keeps only the
    first N training images (quick looks, smoke tests); ``unet_widths`` replaces the U-Net decoder's widths
    (five up-block widths; None: the protocol's 1024/512/256/128/64); ``train_loss="lovt"`` trains with LoVT's
    own losses (its YOLOv3Loss; its Dice pooled over the classes) instead of the protocol's (mmdet's YOLOv3
    loss; the mean of the per-class Dice losses). They are part of the run key and of the record
    (``overrides``; ``unet_widths`` there only for U-Net tasks, ``train_loss`` only when not "protocol").
    """

    max_epochs: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    num_workers: int = 0
    amp: bool = False
    train_limit: int | None = None
    keep_checkpoints: bool = False
    verbose: bool = False
    progress: bool = True
    # folder of the frozen-feature cache (benchmark/runs/feature_store.py); None: frozen tasks run the encoder
    feature_cache: str | None = None
    feature_cache_dtype: str = "float16"
    launcher: str = "none"  # "pytorch": each run spans the processes torchrun started (DDP)
    unet_widths: tuple[int, ...] | None = None
    train_loss: str = "protocol"

    def __post_init__(self) -> None:
        if self.train_loss not in TRAIN_LOSSES:
            raise ValueError(f"train_loss must be one of {TRAIN_LOSSES}, got {self.train_loss!r}")
        if self.unet_widths is not None:
            widths = tuple(self.unet_widths)
            if len(widths) != 5 or not all(isinstance(w, int) and w > 0 for w in widths):
                raise ValueError(f"unet_widths must be five positive integers, got {self.unet_widths!r}")
            object.__setattr__(self, "unet_widths", widths)


@dataclass
class PlannedRun:
    task: TaskSpec
    backbone: BackboneInfo
    seed: int
    lr: float
    lr_source: str
    key: str
    path: Path
    prepared: Path
    manifest: dict = field(repr=False, default_factory=dict)
    phase: str = "final"  # "lr_search" (one run per grid value) or "final" (the seeds at the chosen lr)
    sweep: dict = field(default_factory=dict)  # how the sweep chose this run (seeds, lr search results)


def _train_subset(task: TaskSpec) -> str:
    return "train" if task.label_fraction >= 100 else f"train_{task.label_fraction}pct"


def _overrides(options: RunOptions, task: TaskSpec) -> dict:
    return {
        k: v
        for k, v in {
            "max_epochs": options.max_epochs,
            "batch_size": options.batch_size,
            "train_limit": options.train_limit,
            "unet_widths": list(options.unet_widths)
            if options.unet_widths is not None and task.head == "unet"
            else None,
            "train_loss": options.train_loss if options.train_loss != "protocol" else None,
        }.items()
        if v is not None
    }


def plan_run(
    task: TaskSpec,
    backbone: BackboneInfo,
    data_root,
    out_dir,
    seed: int,
    lr: float | None,
    options: RunOptions,
    lr_source: str | None = None,
    phase: str = "final",
    sweep: dict | None = None,
) -> PlannedRun:
    """Resolve one run and its key (no training)."""
    prepared = prepared_dir(data_root, task.dataset, task.size)
    manifest = load_manifest(prepared)
    check_manifest(manifest, prepared, task.dataset, task.size)
    chosen_lr = task.lr if lr is None else float(lr)
    key = run_key(
        task=task.to_dict(),
        backbone=backbone.to_dict(),
        split_hash=manifest["split_hash"],
        seed=seed,
        lr=chosen_lr,
        size=task.size,
        overrides=_overrides(options, task),
    )
    return PlannedRun(
        task,
        backbone,
        seed,
        chosen_lr,
        lr_source or ("default" if lr is None else "given"),
        key,
        record_path(out_dir, backbone.name, task.id, key),
        prepared,
        manifest,
        phase,
        dict(sweep or {}),
    )


@dataclass
class PreparedRun:
    """The resolved settings of one run (what ``execute`` trains with)."""

    subset: str
    n_train: int
    batch_size: int
    max_epochs: int
    mean: float
    std: float
    work_dir: Path
    notes: list[str]


def resolve(run: PlannedRun, out_dir, options: RunOptions) -> PreparedRun:
    task = run.task
    subset = _train_subset(task)
    # a label fraction trains on part of the training split but normalises with the whole split's statistics,
    # as the reference code (philip-mueller/lovt src/data/dataloading_utils.py: apply_subset keeps the
    # dataset's stats); load_stats returns those
    norm = load_stats(run.prepared, subset)
    n_train = norm["n_images"]
    if options.train_limit is not None:
        n_train = min(n_train, options.train_limit)
    notes: list[str] = []
    batch_size = options.batch_size or task.batch_size
    if 0 < n_train < batch_size:
        notes.append(f"batch size {batch_size} > {n_train} training images: reduced to {n_train}")
        batch_size = n_train
    max_epochs = task.max_epochs if options.max_epochs is None else options.max_epochs
    work_dir = Path(out_dir) / "work" / run.backbone.name / task.id / run.key
    return PreparedRun(subset, n_train, batch_size, max_epochs, norm["mean"], norm["std"], work_dir, notes)


def runner_config(run: PlannedRun, resolved: PreparedRun, options: RunOptions, experiment_name: str):
    """The mmengine config of a run (imports the OpenMMLab corner)."""
    from benchmark import openmmlab
    from benchmark.openmmlab.config import RunSettings

    settings = RunSettings(
        backbone=run.backbone,
        prepared=run.prepared,
        classes=tuple(run.manifest["classes"]),
        mean=resolved.mean,
        std=resolved.std,
        train_subset=resolved.subset,
        multi_label=bool(run.manifest.get("multi_label")),
        seed=run.seed,
        lr=run.lr,
        work_dir=resolved.work_dir,
        experiment_name=experiment_name,
        max_epochs=resolved.max_epochs,
        batch_size=resolved.batch_size,
        num_workers=options.num_workers,
        pin_memory=options.device == "cuda",
        train_limit=options.train_limit,
        amp=options.amp,
        verbose=options.verbose,
        progress=options.progress,
        feature_cache=options.feature_cache,
        feature_cache_dtype=options.feature_cache_dtype,
        launcher=options.launcher,
        unet_widths=options.unet_widths,
        train_loss=options.train_loss,
    )
    return openmmlab.build_config(run.task, settings)


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
    rank, world = dist_info()
    try:
        r = resolve(run, out_dir, options)
    except DatasetError as e:  # e.g. a corrupt stats.json: this run fails with the file named, the sweep goes on
        record = {
            **record_identity(run, "failed"),
            "dataset": {"name": task.dataset, "prepared": str(run.prepared), "size": task.size},
            "split_hash": run.manifest.get("split_hash"),
            "primary_metric": PRIMARY[task.metric],
            "versions": versions(),
            "reason": f"{type(e).__name__}: {e}",
            "wall_time_s": 0.0,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if rank == 0:
            write_record(run.path, record)
        return record
    per_process = r.batch_size
    if world > 1:
        per_process = max(1, r.batch_size // world)
        if per_process * world != r.batch_size:
            r.notes.append(
                f"batch size {r.batch_size} is not divisible by {world} processes: "
                f"{per_process} per process, {per_process * world} in all"
            )
        r = replace(r, batch_size=per_process)
    record = {
        **record_identity(run, "running"),
        "dataset": {
            "name": task.dataset,
            "prepared": str(run.prepared),
            "size": task.size,
            "train_subset": r.subset,
            "n_train": r.n_train,
            "subsets": run.manifest.get("subsets"),
        },
        "split_hash": run.manifest["split_hash"],
        "encoder_input": encoder_input(run.backbone, task.size),
        "normalization": normalization_plan(run.backbone, r.mean, r.std, "prepared train statistics")[
            "record"
        ],
        "overrides": _overrides(options, task),
        "batch_size": r.batch_size * world,
        "batch_size_per_process": r.batch_size,
        "world_size": world,
        "max_epochs": r.max_epochs,
        "device": options.device,
        "amp": options.amp,
        "notes": r.notes,
        "primary_metric": PRIMARY[task.metric],
        "versions": versions(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    started = from_rank0(time.time())  # one experiment name for all ranks
    try:
        if r.n_train == 0:
            raise RuntimeError(f"the prepared {r.subset} subset of {task.dataset} has no images")
        from benchmark import openmmlab  # the only import of the OpenMMLab corner
        from benchmark.openmmlab.config import MONITORS

        cfg = runner_config(run, r, options, experiment_name=f"{task.id}-{run.key}-{int(started * 1000)}")
        outcome = openmmlab.train_and_test(cfg, MONITORS[task.metric], quiet=not options.verbose)
        check_validation_losses(outcome.history)
        primary = PRIMARY[task.metric]
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
    if not options.keep_checkpoints and rank == 0:
        for ckpt in r.work_dir.glob("*.pth"):
            ckpt.unlink()
        last = r.work_dir / "last_checkpoint"
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


def record_identity(run: PlannedRun, status: str) -> dict:
    """The fields every record of a run starts with, whether it ran here or failed elsewhere (a Slurm job)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "code_version": CODE_VERSION,  # which metric definitions (see benchmark.runs.records.metrics_as_published)
        "key": run.key,
        "status": status,
        "task": run.task.id,
        "task_spec": run.task.to_dict(),
        "backbone": run.backbone.to_dict(),
        "seed": run.seed,
        "lr": run.lr,
        "lr_source": run.lr_source,
        "phase": run.phase,
        "sweep": run.sweep,
    }


def check_dataset_prepared(data_root, task: TaskSpec) -> None:
    """Clear error when a task's dataset has not been prepared under ``data_root`` at the task's size, or
    the folder there was written by another dataset, size or source (``DatasetError``)."""
    prepared = prepared_dir(data_root, task.dataset, task.size)
    if (prepared / "manifest.json").exists():
        check_manifest(load_manifest(prepared), prepared, task.dataset, task.size)
        return
    size_flag = "" if task.size == DEFAULT_SIZE else f" --size {task.size}"
    message = (
        f"task {task.id} needs the prepared '{task.dataset}' dataset at {prepared}: run "
        f"`cxrbench prepare {task.dataset} --raw <download folder> --out {data_root}{size_flag}`"
    )
    pattern = re.compile(re.escape(task.dataset) + r"(-\d+px)?")
    other_sizes = sorted(
        p.name
        for p in Path(data_root).glob(f"{task.dataset}*")
        if pattern.fullmatch(p.name) and (p / "manifest.json").exists()
    )
    if other_sizes:
        message += (
            f" (prepared at other sizes there: {', '.join(other_sizes)}; `evaluate --size PX` reads those)"
        )
    raise FileNotFoundError(message)


def default_num_workers(device: str) -> int:
    return 0 if device == "cpu" else min(8, os.cpu_count() or 1)


# the protocol loop (benchmark.runs.protocol) and the sequential executor (benchmark.executors.sequential)
# live in their own modules; imported here, after the definitions they use, so that
# ``benchmark.runs.evaluate`` / ``summarize`` / ``choose_lr`` keep working
from benchmark.executors.sequential import evaluate as evaluate  # noqa: E402
from benchmark.runs.protocol import choose_lr as choose_lr  # noqa: E402
from benchmark.runs.protocol import summarize as summarize  # noqa: E402
