"""What does one run train with? ``RunOptions`` (what the user asked for, shared by the runs of a sweep)
and ``RunConfig`` (everything one run trains with, resolved once by :func:`resolve` from a planned run and
the options; ``benchmark.openmmlab.build_config`` turns it into the mmengine config, ``execute`` into the
record)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.backbones import BackboneInfo, normalization_plan
from tasks.prepare import load_stats
from tasks.registry import TRAIN_LOSSES, TaskSpec

if TYPE_CHECKING:
    from benchmark.runs.plan import PlannedRun



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


@dataclass(frozen=True)
class RunConfig:
    """Everything besides the task that shapes one training run, resolved once (:func:`resolve`).

    ``normalization`` is computed from the backbone and the statistics when the config is made (the data
    preprocessor's mean / std, :class:`CXRBackbone`'s ``input_norm`` and the record's ``normalization``).
    """

    backbone: BackboneInfo
    prepared: Path
    classes: tuple[str, ...]
    multi_label: bool
    seed: int
    lr: float
    train_subset: str
    n_train: int  # training images (after ``train_limit``)
    mean: float  # of the whole training split (also for label fractions), on [0, 1]
    std: float
    work_dir: Path
    experiment_name: str
    max_epochs: int
    batch_size: int  # per process (the task's, or the override, split over ``world_size`` processes)
    world_size: int = 1
    notes: tuple[str, ...] = ()  # what resolving changed (a batch size reduced to the training images, ...)
    overrides: dict = field(default_factory=dict)  # the options that changed the protocol (key and record)
    device: str = "cpu"
    num_workers: int = 0
    pin_memory: bool = False  # page-locked batches: faster host-to-GPU copies (CUDA runs; same numbers)
    amp: bool = False
    train_limit: int | None = None  # use only the first N training images (smoke tests, quick looks)
    keep_checkpoints: bool = False
    verbose: bool = False
    progress: bool = True
    feature_cache: str | None = None  # cache folder: frozen tasks train on cached features (None: off)
    feature_cache_dtype: str = "float16"
    launcher: str = "none"  # "pytorch": one run over several processes (torchrun, DDP)
    unet_widths: tuple[int, ...] | None = None  # U-Net decoder widths (None: the protocol's)
    train_loss: str = "protocol"  # "lovt": LoVT's YOLOv3 loss / Dice pooled over the classes
    normalization: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plan = normalization_plan(self.backbone, self.mean, self.std, "prepared train statistics")
        object.__setattr__(self, "normalization", plan)


def resolve(
    run: PlannedRun, out_dir, options: RunOptions, experiment_name: str = "", world_size: int = 1
) -> RunConfig:
    """The configuration ``run`` trains with: the task's protocol values with the options applied, the
    training statistics, the batch size split over ``world_size`` processes (torchrun)."""
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
    if world_size > 1:
        per_process = max(1, batch_size // world_size)
        if per_process * world_size != batch_size:
            notes.append(
                f"batch size {batch_size} is not divisible by {world_size} processes: "
                f"{per_process} per process, {per_process * world_size} in all"
            )
        batch_size = per_process
    max_epochs = task.max_epochs if options.max_epochs is None else options.max_epochs
    return RunConfig(
        backbone=run.backbone,
        prepared=run.prepared,
        classes=tuple(run.manifest["classes"]),
        multi_label=bool(run.manifest.get("multi_label")),
        seed=run.seed,
        lr=run.lr,
        train_subset=subset,
        n_train=n_train,
        mean=norm["mean"],
        std=norm["std"],
        work_dir=Path(out_dir) / "work" / run.backbone.name / task.id / run.key,
        experiment_name=experiment_name,
        max_epochs=max_epochs,
        batch_size=batch_size,
        world_size=world_size,
        notes=tuple(notes),
        overrides=_overrides(options, task),
        device=options.device,
        num_workers=options.num_workers,
        pin_memory=options.device == "cuda",
        amp=options.amp,
        train_limit=options.train_limit,
        keep_checkpoints=options.keep_checkpoints,
        verbose=options.verbose,
        progress=options.progress,
        feature_cache=options.feature_cache,
        feature_cache_dtype=options.feature_cache_dtype,
        launcher=options.launcher,
        unet_widths=options.unet_widths,
        train_loss=options.train_loss,
    )
