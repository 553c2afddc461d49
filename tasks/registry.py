"""The 18 localized downstream tasks of the LoVT protocol, as data.

One frozen :class:`TaskSpec` per task in one plain dict, in the order of the published tables (the
leaderboard uses this order). Every field comes from the task table of ``shared/spec/tasks.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

# Protocol constants shared by all tasks (tasks.md, "Shared protocol").
WEIGHT_DECAY = 1e-6
WARMUP_LR = 1e-3
PLATEAU_PATIENCE = 3
PLATEAU_FACTOR = 0.5
# Early stopping needs the validation metric to rise by at least this: a tie is not an
# improvement (LoVT: PyTorch Lightning EarlyStopping with min_delta 0.00001, configs/callback/early_stopping.yaml)
EARLY_STOP_MIN_DELTA = 1e-5

# YOLOv3 anchors in pixels at 224 px, per level from the coarsest (stride 32) to the finest (stride 8).
YOLO_ANCHORS = (
    ((64.64, 48.6), (84.24, 106.92), (201.42, 176.04)),
    ((16.2, 32.94), (33.48, 24.3), (31.86, 64.26)),
    ((5.4, 7.02), (8.64, 16.2), (17.82, 12.42)),
)
YOLO_CONF_THR = 0.2
YOLO_NMS_IOU = 0.4

# U-Net decoder widths of the protocol (up-blocks from the coarsest), made for ResNet-50's 2048-channel conv5
UNET_WIDTHS = (1024, 512, 256, 128, 64)
# training losses: the protocol's (mmdet's YOLOv3 loss, mean per-class Dice) or LoVT's own (its YOLOv3Loss, its
# Dice pooled over the classes); docs/protocol.md gives the measured difference
TRAIN_LOSSES = ("protocol", "lovt")
UNET_REFERENCE_C5 = 2048


def scaled_unet_widths(c5_channels: int) -> tuple[int, ...]:
    """The protocol's U-Net widths scaled by an encoder's conv5 channels relative to ResNet-50's 2048
    (a ResNet-18, 512 channels: 256/128/64/32/16; a ResNet-50: exactly the protocol's widths)."""
    return tuple(max(1, w * int(c5_channels) // UNET_REFERENCE_C5) for w in UNET_WIDTHS)


HEADS = ("yolov3", "unet", "linear")
MAX_SIZE = 2048  # px, the largest image side of a task: a prepared image alone is then 4 MB
METRICS = {
    "mAP": "mean AP over IoU 0.40:0.05:0.75 as LoVT computed it (VOC IoU with +1, 101 recall points)",
    "froc": "mean sensitivity at 0.125..8 false positives per image (hit = box centre inside the object's "
    "box), the Object-CXR challenge's definition as LoVT computed it",
    "dice": "micro Dice (pixels pooled over the split), threshold 0.5",
    "mean_class_dice": "mean over classes of the per-class micro Dice (a class in neither prediction nor "
    "label: 0)",
}


class MetricKeys(NamedTuple):
    """Where the value of a task metric is found: ``record``, the key of the primary test metric in a run
    record's ``metrics`` (also its ``primary_metric``); ``monitor``, the key of the validation metric that
    mmengine monitors (it picks the best checkpoint and stops early)."""

    record: str
    monitor: str


# the keys of each task metric (TaskSpec.metric), the one table the runs, the configs and the tests read
METRIC_KEYS = {
    "mAP": MetricKeys("mAP", "det/mAP"),
    "froc": MetricKeys("froc", "det/froc"),
    "dice": MetricKeys("dice", "seg/dice"),
    "mean_class_dice": MetricKeys("dice", "seg/dice"),
}
# Record keys of ``metrics`` besides the primary ones (``mAP``, ``froc``, ``dice``: METRIC_KEYS above,
# always the published tables' definitions), in display order; results/README.md explains each. Per-class
# (``dice.<class>``, ``iou.<class>``) and per-rate (``<froc key>@<rate>``) values come with them.
SECONDARY_METRICS = {
    "mAP_50": "LoVT's AP at IoU 0.5 alone",
    "mAP_75": "LoVT's AP at IoU 0.75 alone",
    "mAP_coco": "COCO AP over IoU 0.40:0.05:0.75 (pycocotools: continuous IoU)",
    "mAP_coco_50": "COCO AP at IoU 0.5",
    "mAP_coco_75": "COCO AP at IoU 0.75",
    "froc_all_predictions": "FROC on boxes, unreached rates filled with the sensitivity of all predictions",
    "froc_shape": "froc_all_predictions with the hit tested on the object's true shape",
    "dice_present_classes": "mean class Dice over the classes present in prediction or label (NIH)",
    "dice_per_image": "mean over images of the per-image Dice (empty prediction and label: 1)",
    "iou": "mean over classes of the per-class micro IoU",
}


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task: what is trained, on which data, how, and how it is scored.

    Attributes:
        id: unique task id (``rsna_yolov3_frozen_10``).
        number: position in the published tables (1..18).
        dataset: prepared dataset name (``rsna``, ``siim``, ``object_cxr``, ``covid_rural``, ``nih``).
        head: ``yolov3``, ``unet`` or ``linear``.
        frozen: encoder weights and BatchNorm statistics fixed for the whole run.
        warmup_steps: finetune only: iterations with a frozen encoder at ``warmup_lr`` first.
        label_fraction: percent of the training split used (1, 10 or 100).
        metric: primary test metric (a key of ``METRICS``).
        batch_size: training batch size.
        lr: default learning rate (used with ``--no-lr-search``).
        lr_grid: learning rates tried by the learning-rate search (empty: ``lr`` is fixed).
        max_epochs: epoch budget.
        patience: early-stopping patience in epochs (on the validation metric).
    """

    id: str
    number: int
    dataset: str
    head: str
    frozen: bool
    label_fraction: int
    metric: str
    batch_size: int
    lr: float
    lr_grid: tuple[float, ...]
    max_epochs: int
    patience: int
    warmup_steps: int = 0
    warmup_lr: float = WARMUP_LR
    weight_decay: float = WEIGHT_DECAY
    plateau_patience: int = PLATEAU_PATIENCE
    plateau_factor: float = PLATEAU_FACTOR
    size: int = 224
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"task {self.id}: head must be one of {HEADS}, got {self.head!r}")
        if self.metric not in METRICS:
            raise ValueError(f"task {self.id}: metric must be one of {tuple(METRICS)}, got {self.metric!r}")
        if self.frozen and self.warmup_steps:
            raise ValueError(f"task {self.id}: a frozen task has no warm-up")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 32 <= self.size <= MAX_SIZE:
            raise ValueError(f"task {self.id}: size must be an integer from 32 to {MAX_SIZE}, got {self.size!r}")
        if self.size % 32:
            raise ValueError(
                f"task {self.id}: size must be a multiple of 32 (the encoders' largest stride), got {self.size}"
            )

    @property
    def kind(self) -> str:
        """``detection`` (boxes, COCO files) or ``segmentation`` (masks)."""
        return "detection" if self.head == "yolov3" else "segmentation"

    @property
    def mode(self) -> str:
        return "frozen" if self.frozen else "finetune"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_grid"] = list(self.lr_grid)
        d["kind"] = self.kind
        return d


def _t(number, id, dataset, head, frozen, fraction, metric, batch, lr, grid, epochs, patience, warmup=0):
    return TaskSpec(
        id=id,
        number=number,
        dataset=dataset,
        head=head,
        frozen=frozen,
        label_fraction=fraction,
        metric=metric,
        batch_size=batch,
        lr=lr,
        lr_grid=tuple(grid),
        max_epochs=epochs,
        patience=patience,
        warmup_steps=warmup,
    )


TASKS: dict[str, TaskSpec] = {
    t.id: t
    for t in [
        _t(
            1,
            "rsna_yolov3_finetune_1",
            "rsna",
            "yolov3",
            False,
            1,
            "mAP",
            8,
            1e-4,
            (3e-4, 1e-4),
            500,
            20,
            100,
        ),
        _t(
            2,
            "rsna_yolov3_finetune_10",
            "rsna",
            "yolov3",
            False,
            10,
            "mAP",
            64,
            3e-4,
            (3e-4, 1e-3),
            100,
            10,
            100,
        ),
        _t(
            3,
            "rsna_yolov3_finetune_100",
            "rsna",
            "yolov3",
            False,
            100,
            "mAP",
            64,
            1e-4,
            (3e-4, 1e-4),
            50,
            10,
            100,
        ),
        _t(4, "rsna_yolov3_frozen_1", "rsna", "yolov3", True, 1, "mAP", 8, 1e-3, (1e-3, 3e-4), 500, 20),
        _t(5, "rsna_yolov3_frozen_10", "rsna", "yolov3", True, 10, "mAP", 64, 1e-3, (), 100, 10),
        _t(6, "rsna_yolov3_frozen_100", "rsna", "yolov3", True, 100, "mAP", 64, 1e-3, (3e-4, 1e-3), 50, 10),
        _t(7, "rsna_linear_1", "rsna", "linear", True, 1, "dice", 8, 1e-2, (3e-2, 1e-2, 3e-3, 1e-4), 500, 20),
        _t(
            8,
            "rsna_linear_10",
            "rsna",
            "linear",
            True,
            10,
            "dice",
            64,
            3e-2,
            (3e-2, 1e-2, 3e-3, 1e-3),
            100,
            10,
        ),
        _t(
            9,
            "rsna_linear_100",
            "rsna",
            "linear",
            True,
            100,
            "dice",
            64,
            1e-2,
            (3e-2, 1e-2, 3e-3, 1e-3),
            50,
            10,
        ),
        _t(
            10,
            "covid_unet_finetune",
            "covid_rural",
            "unet",
            False,
            100,
            "dice",
            8,
            1e-4,
            (1e-4, 3e-4),
            100,
            20,
            20,
        ),
        _t(
            11,
            "covid_unet_frozen",
            "covid_rural",
            "unet",
            True,
            100,
            "dice",
            8,
            3e-4,
            (1e-4, 3e-4, 1e-3),
            100,
            20,
        ),
        _t(
            12,
            "covid_linear",
            "covid_rural",
            "linear",
            True,
            100,
            "dice",
            8,
            3e-2,
            (3e-2, 1e-2, 3e-3, 1e-3),
            100,
            20,
        ),
        _t(13, "siim_unet_finetune", "siim", "unet", False, 100, "dice", 64, 3e-5, (3e-5, 1e-5), 50, 10, 100),
        _t(14, "siim_unet_frozen", "siim", "unet", True, 100, "dice", 64, 3e-5, (3e-5, 1e-5), 50, 10),
        _t(
            15,
            "object_cxr_yolov3_finetune",
            "object_cxr",
            "yolov3",
            False,
            100,
            "froc",
            64,
            3e-4,
            (1e-3, 3e-4),
            100,
            10,
            100,
        ),
        _t(
            16,
            "object_cxr_yolov3_frozen",
            "object_cxr",
            "yolov3",
            True,
            100,
            "froc",
            64,
            1e-3,
            (1e-3, 3e-3),
            100,
            10,
        ),
        _t(
            17,
            "object_cxr_linear",
            "object_cxr",
            "linear",
            True,
            100,
            "dice",
            64,
            1e-2,
            (3e-1, 1e-1, 3e-2, 1e-2),
            100,
            10,
        ),
        _t(
            18,
            "nih_linear",
            "nih",
            "linear",
            True,
            100,
            "mean_class_dice",
            64,
            1e-2,
            (1e-1, 3e-2, 1e-2),
            100,
            10,
        ),
    ]
}


def get_task(task_id: str) -> TaskSpec:
    """The task of an id, with an error that lists the known ids."""
    try:
        return TASKS[task_id]
    except KeyError:
        raise KeyError(f"unknown task '{task_id}'. Known tasks: {', '.join(TASKS)}") from None


def select_tasks(selector: str) -> list[TaskSpec]:
    """Tasks from a comma-separated list of ids, ``all``, dataset names (``rsna`` = its 9 tasks) or prefixes of
    task ids at an underscore (``rsna_yolov3`` = its 6 YOLOv3 tasks, ``covid`` = the COVID tasks)."""
    out: list[TaskSpec] = []
    for part in [p.strip() for p in selector.split(",") if p.strip()]:
        if part == "all":
            chosen = list(TASKS.values())
        elif part in TASKS:
            chosen = [TASKS[part]]
        elif any(t.dataset == part for t in TASKS.values()):
            chosen = [t for t in TASKS.values() if t.dataset == part]
        elif any(t.startswith(part + "_") for t in TASKS):  # a prefix of ids: covid, rsna_yolov3, rsna_linear
            chosen = [t for i, t in TASKS.items() if i.startswith(part + "_")]
        else:
            datasets = ", ".join(dict.fromkeys(t.dataset for t in TASKS.values()))
            raise KeyError(
                f"unknown task or dataset '{part}': use 'all', a dataset ({datasets}), a prefix of task ids "
                f"(e.g. rsna_yolov3, covid) or task ids: {', '.join(TASKS)}"
            )
        out += [t for t in chosen if t not in out]
    if not out:
        raise KeyError("no tasks selected")
    return out
