"""The protocol of ``shared/spec/tasks.md`` against what the suite builds: the full task table, and the
mmengine / mmdet / mmseg configs of every task (optimiser, schedule, early stopping, checkpoint choice,
heads, test-time settings). All pure config checks: no data, no training."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.backbones import parse_spec
from tasks.registry import TASKS, YOLO_ANCHORS

# The task table of tasks.md, transcribed column by column:
# (number, id, dataset, head, frozen, label %, metric, batch, lr, lr grid, max epochs, patience, warm-up)
TABLE = [
    (1, "rsna_yolov3_finetune_1", "rsna", "yolov3", False, 1, "mAP", 8, 1e-4, (3e-4, 1e-4), 500, 20, 100),
    (2, "rsna_yolov3_finetune_10", "rsna", "yolov3", False, 10, "mAP", 64, 3e-4, (3e-4, 1e-3), 100, 10, 100),
    (3, "rsna_yolov3_finetune_100", "rsna", "yolov3", False, 100, "mAP", 64, 1e-4, (3e-4, 1e-4), 50, 10, 100),
    (4, "rsna_yolov3_frozen_1", "rsna", "yolov3", True, 1, "mAP", 8, 1e-3, (1e-3, 3e-4), 500, 20, 0),
    (5, "rsna_yolov3_frozen_10", "rsna", "yolov3", True, 10, "mAP", 64, 1e-3, (), 100, 10, 0),
    (6, "rsna_yolov3_frozen_100", "rsna", "yolov3", True, 100, "mAP", 64, 1e-3, (3e-4, 1e-3), 50, 10, 0),
    (7, "rsna_linear_1", "rsna", "linear", True, 1, "dice", 8, 1e-2, (3e-2, 1e-2, 3e-3, 1e-4), 500, 20, 0),
    (8, "rsna_linear_10", "rsna", "linear", True, 10, "dice", 64, 3e-2, (3e-2, 1e-2, 3e-3, 1e-3), 100, 10, 0),
    (9, "rsna_linear_100", "rsna", "linear", True, 100, "dice", 64, 1e-2, (3e-2, 1e-2, 3e-3, 1e-3), 50, 10, 0),
    (10, "covid_unet_finetune", "covid_rural", "unet", False, 100, "dice", 8, 1e-4, (1e-4, 3e-4), 100, 20, 20),
    (11, "covid_unet_frozen", "covid_rural", "unet", True, 100, "dice", 8, 3e-4, (1e-4, 3e-4, 1e-3), 100, 20, 0),
    (12, "covid_linear", "covid_rural", "linear", True, 100, "dice", 8, 3e-2, (3e-2, 1e-2, 3e-3, 1e-3), 100, 20, 0),
    (13, "siim_unet_finetune", "siim", "unet", False, 100, "dice", 64, 3e-5, (3e-5, 1e-5), 50, 10, 100),
    (14, "siim_unet_frozen", "siim", "unet", True, 100, "dice", 64, 3e-5, (3e-5, 1e-5), 50, 10, 0),
    (15, "object_cxr_yolov3_finetune", "object_cxr", "yolov3", False, 100, "froc", 64, 3e-4, (1e-3, 3e-4), 100, 10, 100),
    (16, "object_cxr_yolov3_frozen", "object_cxr", "yolov3", True, 100, "froc", 64, 1e-3, (1e-3, 3e-3), 100, 10, 0),
    (17, "object_cxr_linear", "object_cxr", "linear", True, 100, "dice", 64, 1e-2, (3e-1, 1e-1, 3e-2, 1e-2), 100, 10, 0),
    (18, "nih_linear", "nih", "linear", True, 100, "mean_class_dice", 64, 1e-2, (1e-1, 3e-2, 1e-2), 100, 10, 0),
]  # fmt: skip


def test_registry_is_the_task_table():
    assert len(TABLE) == len(TASKS) == 18
    for row, task in zip(TABLE, TASKS.values()):
        got = (
            task.number,
            task.id,
            task.dataset,
            task.head,
            task.frozen,
            task.label_fraction,
            task.metric,
            task.batch_size,
            task.lr,
            task.lr_grid,
            task.max_epochs,
            task.patience,
            task.warmup_steps,
        )
        assert got == row, task.id
    # 46 learning-rate trials per encoder (tasks.md: "46 learning-rate trials ... = 136 trainings")
    assert sum(len(t.lr_grid) for t in TASKS.values()) == 46
    for t in TASKS.values():
        assert (t.weight_decay, t.warmup_lr, t.plateau_factor, t.plateau_patience, t.size) == (
            1e-6,
            1e-3,
            0.5,
            3,
            224,
        )


def _settings(task, tmp_path: Path, lr: float = 1e-3):
    from benchmark.runs import RunConfig

    return RunConfig(
        backbone=parse_spec("resnet50.random"),
        prepared=tmp_path,
        classes=("Atelectasis", "Effusion") if task.dataset == "nih" else ("opacity",),
        mean=0.5,
        std=0.25,
        train_subset="train",
        n_train=10,
        multi_label=task.dataset == "nih",
        seed=0,
        lr=lr,
        work_dir=tmp_path / "work",
        experiment_name="x",
        max_epochs=task.max_epochs,
        batch_size=task.batch_size,
        progress=False,
    )


def _hook(cfg, name):
    found = [h for h in cfg.custom_hooks if h["type"] == name]
    return found[0] if found else None


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_config_follows_the_shared_protocol(task, tmp_path):
    from benchmark.openmmlab import build_config
    from tasks.registry import METRIC_KEYS

    cfg = build_config(task, _settings(task, tmp_path, lr=2e-4))
    # Adam, weight decay 1e-6, at the run's learning rate
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ("Adam", 2e-4, 1e-6)
    # lr halved when the VALIDATION LOSS has not improved for 3 epochs
    (sched,) = cfg.param_scheduler
    assert sched.type == "ReduceOnPlateauLR"
    got = (sched.monitor, sched.rule, sched.factor, sched.patience, sched.by_epoch)
    assert got == ("loss", "less", 0.5, 3, True)
    assert cfg.val_cfg.type == "CXRValLossLoop"  # the loop that reports the validation loss as "loss"
    # early stopping and checkpoint choice on the validation METRIC
    monitor = METRIC_KEYS[task.metric].monitor
    stop = _hook(cfg, "EarlyStoppingHook")
    assert (stop["monitor"], stop["rule"], stop["patience"]) == (monitor, "greater", task.patience)
    ckpt = cfg.default_hooks.checkpoint
    assert (ckpt.save_best, ckpt.rule) == (monitor, "greater")
    assert cfg.train_cfg.max_epochs == task.max_epochs and cfg.train_cfg.val_interval == 1
    # drop the last incomplete training batch; shuffle only training
    assert cfg.train_dataloader.drop_last and cfg.train_dataloader.sampler.shuffle
    assert cfg.train_dataloader.batch_size == task.batch_size
    for split in ("val", "test"):
        assert not cfg[f"{split}_dataloader"].drop_last and not cfg[f"{split}_dataloader"].sampler.shuffle
    # no augmentation in downstream training: loading, (no-op) resize to the prepared size and packing only
    steps = [s["type"] for s in cfg.train_dataloader.dataset.pipeline]
    allowed = {"LoadImageFromFile", "LoadAnnotations", "CXRLoadMultiLabelMasks", "Resize", "PackDetInputs"}
    assert set(steps) <= allowed | {"PackSegInputs"}, steps
    resize = [s for s in cfg.train_dataloader.dataset.pipeline if s["type"] == "Resize"]
    assert all(tuple(s["scale"]) == (224, 224) and s["keep_ratio"] is False for s in resize)
    # grey-scale in, normalised with the task's training mean/std (one channel), no ImageNet statistics
    pre = cfg.model.data_preprocessor
    assert pre.mean == [0.5 * 255.0] and pre.std == [0.25 * 255.0] and pre.bgr_to_rgb is False
    assert cfg.train_dataloader.dataset.pipeline[0]["color_type"] == "grayscale"
    # frozen vs finetune with warm-up at 1e-3, then the task's lr
    bb = cfg.model.backbone
    assert bb.frozen == task.frozen and bb.warmup_frozen_iters == task.warmup_steps
    warm = _hook(cfg, "CXRFinetuneWarmupHook")
    if task.frozen:
        assert warm is None
    else:
        assert (warm["warmup_iters"], warm["warmup_lr"], warm["lr"]) == (task.warmup_steps, 1e-3, 2e-4)


@pytest.mark.parametrize("task", [t for t in TASKS.values() if t.head == "yolov3"], ids=lambda t: t.id)
def test_yolov3_config(task, tmp_path):
    from benchmark.openmmlab import build_config

    cfg = build_config(task, _settings(task, tmp_path))
    m = cfg.model
    # three levels on conv5 (7x7), conv4 (14x14), conv3 (28x28); neck in coarse-to-fine order
    assert m.backbone.out_indices == (3, 4, 5)
    assert m.neck.type == "YOLOV3Neck" and m.neck.in_channels == [2048, 1024, 512]
    assert m.bbox_head.type == "CXRObjectnessYOLOV3Head" and m.bbox_head.num_classes == 1
    assert m.bbox_head.featmap_strides == [32, 16, 8]
    anchors = [[tuple(a) for a in level] for level in m.bbox_head.anchor_generator.base_sizes]
    assert anchors == [list(level) for level in YOLO_ANCHORS]
    assert anchors[0] == [(64.64, 48.6), (84.24, 106.92), (201.42, 176.04)]  # the 7x7 level
    assert anchors[2] == [(5.4, 7.02), (8.64, 16.2), (17.82, 12.42)]  # the 28x28 level
    # prediction: confidence threshold 0.2, then NMS at IoU 0.4
    assert m.test_cfg.conf_thr == 0.2 and m.test_cfg.nms.iou_threshold == 0.4 and m.test_cfg.score_thr == 0
    assert m.test_cfg.rank_by == "objectness"  # LoVT ranks and scores boxes on objectness alone
    metric = "CXRFROCMetric" if task.metric == "froc" else "CXRDetectionMetric"
    assert cfg.val_evaluator.type == cfg.test_evaluator.type == metric


@pytest.mark.parametrize("task", [t for t in TASKS.values() if t.head != "yolov3"], ids=lambda t: t.id)
def test_segmentation_head_config(task, tmp_path):
    from benchmark.openmmlab import build_config

    cfg = build_config(task, _settings(task, tmp_path))
    head = cfg.model.decode_head
    multi = task.dataset == "nih"
    assert head.threshold == 0.5 and head.dropout_ratio == 0 and head.norm_cfg is None
    assert head.loss_decode.type == "CXRDiceLoss"
    assert head.out_channels == (2 if multi else 1)  # sigmoid outputs: one per class (NIH) or foreground
    if task.head == "linear":
        # a 1x1 convolution on conv5, no extra convs, logits upsampled bilinearly (align_corners False)
        assert cfg.model.backbone.out_indices == (5,)
        assert head.type == (
            "CXRMultiLabelFCNHead" if multi else "CXRSigmoidFCNHead"
        )  # FCNHead, sigmoid loss
        assert (head.num_convs, head.concat_input, head.in_channels, head.channels) == (0, False, 2048, 2048)
        assert head.align_corners is False
    else:
        assert cfg.model.backbone.out_indices == (0, 1, 2, 3, 4, 5)  # skips down to the input image
        assert head.type == "CXRUNetHead" and list(head.in_channels) == [3, 64, 256, 512, 1024, 2048]
        assert list(head.widths) == [1024, 512, 256, 128, 64]  # the protocol's, unless a run overrides them
    assert cfg.val_evaluator.multi_label == multi


def test_unet_widths_are_a_recorded_run_option(tmp_path):
    """Other U-Net decoder widths (the demo's, scaled to a ResNet-18) are a run option: the default keeps the
    protocol's, and a U-Net run that sets them carries them in its key and in its record's ``overrides``
    (never mistaken for a protocol run); tasks without a U-Net ignore the option."""
    from dataclasses import replace

    from benchmark.openmmlab import build_config
    from benchmark.runs import RunOptions, _overrides
    from tasks.registry import UNET_WIDTHS, scaled_unet_widths

    assert scaled_unet_widths(2048) == UNET_WIDTHS  # ResNet-50: exactly the protocol
    assert scaled_unet_widths(512) == (256, 128, 64, 32, 16)  # ResNet-18
    unet, linear = TASKS["covid_unet_frozen"], TASKS["covid_linear"]
    demo = RunOptions(unet_widths=(256, 128, 64, 32, 16))
    assert _overrides(RunOptions(), unet) == {}
    assert _overrides(demo, unet) == {"unet_widths": [256, 128, 64, 32, 16]}
    assert _overrides(demo, linear) == {}
    cfg = build_config(unet, replace(_settings(unet, tmp_path), unet_widths=demo.unet_widths))
    assert list(cfg.model.decode_head.widths) == [256, 128, 64, 32, 16]
    with pytest.raises(ValueError, match="unet_widths"):
        RunOptions(unet_widths=(64, 32))


def test_train_loss_is_a_recorded_run_option_that_changes_the_loss(tmp_path):
    """``RunOptions(train_loss="lovt")`` goes into the run's key and record (``overrides``); the default
    records nothing (existing records unchanged); the built YOLOv3 head and Dice loss use LoVT's losses."""
    from dataclasses import replace

    import torch
    from mmdet.registry import MODELS as DET_MODELS
    from mmdet.structures import DetDataSample  # noqa: F401  (mmdet's registries filled)
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData

    import benchmark.openmmlab  # noqa: F401  (registers the components)
    from benchmark.openmmlab import build_config
    from benchmark.openmmlab.losses import lovt_yolov3_loss
    from benchmark.runs import RunOptions, _overrides

    yolo, nih = TASKS["rsna_yolov3_frozen_100"], TASKS["nih_linear"]
    assert _overrides(RunOptions(), yolo) == {} and _overrides(RunOptions(), nih) == {}
    assert _overrides(RunOptions(train_loss="lovt"), yolo) == {"train_loss": "lovt"}
    assert _overrides(RunOptions(train_loss="lovt"), nih) == {"train_loss": "lovt"}
    with pytest.raises(ValueError, match="train_loss"):
        RunOptions(train_loss="focal")

    seg = build_config(nih, replace(_settings(nih, tmp_path), train_loss="lovt"))
    assert seg.model.decode_head.loss_decode["variant"] == "lovt"
    assert build_config(nih, _settings(nih, tmp_path)).model.decode_head.loss_decode["variant"] == "protocol"

    torch.manual_seed(0)
    img = 64
    gt = InstanceData(bboxes=torch.tensor([[4.0, 8.0, 40.0, 60.0]]), labels=torch.tensor([0]))
    metas = [dict(batch_input_shape=(img, img), img_shape=(img, img), pad_shape=(img, img))]
    pred_maps = [torch.randn(1, 18, img // s, img // s) for s in (32, 16, 8)]
    losses = {}
    for choice in ("protocol", "lovt"):
        cfg = build_config(yolo, replace(_settings(yolo, tmp_path), train_loss=choice)).model.bbox_head
        assert cfg.train_loss == choice
        with DefaultScope.overwrite_default_scope("mmdet"):
            head = DET_MODELS.build(dict(cfg, train_cfg=dict(
                assigner=dict(type="GridAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0))))
        losses[choice] = head.loss_by_feat(pred_maps, [gt], metas)
    anchors = [torch.tensor(level, dtype=torch.float32) for level in head.prior_generator.base_sizes]
    want = lovt_yolov3_loss(pred_maps, [gt.bboxes], [gt.labels], anchors, (img, img), 1)
    for name, value in want.items():
        assert float(losses["lovt"][name]) == pytest.approx(float(value), rel=1e-6)
    protocol = sum(float(sum(v) if isinstance(v, (list, tuple)) else v) for v in losses["protocol"].values())
    assert protocol != pytest.approx(float(sum(want.values())), rel=1e-3)


def _early_stopping(cfg):
    from mmengine.registry import HOOKS

    spec = dict(_hook(cfg, "EarlyStoppingHook"))
    return HOOKS.build(spec)


def test_early_stopping_needs_a_real_improvement(tmp_path):
    """A validation metric that stays where it was is NOT an improvement: LoVT's early stopping
    (PyTorch Lightning ``EarlyStopping``, ``min_delta: 0.00001``, philip-mueller/lovt
    configs/callback/early_stopping.yaml) stops a run whose metric is stuck (e.g. mAP 0 while the head
    predicts nothing above the confidence threshold). mmengine's hook with ``min_delta=0`` counts a tie as
    an improvement and would train such a run for its whole epoch budget."""
    import types

    from benchmark.openmmlab import build_config

    task = TASKS["rsna_yolov3_frozen_10"]  # patience 10
    cfg = build_config(task, _settings(task, tmp_path))
    hook = _early_stopping(cfg)
    loop = types.SimpleNamespace(stop_training=False)
    runner = types.SimpleNamespace(train_loop=loop, logger=types.SimpleNamespace(info=lambda *a: None))
    stopped_after = None
    for epoch, value in enumerate([0.1] + [0.1] * 30, start=1):
        hook.after_val_epoch(runner, {"det/mAP": value})
        if loop.stop_training:
            stopped_after = epoch
            break
    assert stopped_after == 1 + task.patience

    # a real improvement resets the count
    hook = _early_stopping(cfg)
    loop.stop_training = False
    values = [0.1] * 5 + [0.2] + [0.2] * 20
    stopped_after = None
    for epoch, value in enumerate(values, start=1):
        hook.after_val_epoch(runner, {"det/mAP": value})
        if loop.stop_training:
            stopped_after = epoch
            break
    assert stopped_after == 6 + task.patience


def _yolo_model(tmp_path):
    import dataclasses

    from mmengine.registry import MODELS, DefaultScope

    from benchmark.openmmlab import build_config

    task = dataclasses.replace(TASKS["rsna_yolov3_frozen_10"], size=64)
    s = dataclasses.replace(_settings(task, tmp_path), backbone=parse_spec("resnet18.random"))
    cfg = build_config(task, s)
    with DefaultScope.overwrite_default_scope("mmdet"):
        model = MODELS.build(cfg.model)
    model.eval()
    return model


def _det_batch(images, boxes):
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    samples = []
    for box in boxes:
        s = DetDataSample(
            metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1.0, 1.0), img_id=0)
        )
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([box], dtype=torch.float32), labels=torch.tensor([0])
        )
        samples.append(s)
    return {"inputs": list(images), "data_samples": samples}


def test_validation_loss_is_a_per_image_mean_for_detection(tmp_path):
    """The plateau schedule monitors the validation loss, "the per-image weighted mean of the model's total
    training loss" (loops.py). mmdet's YOLOv3 losses are SUMS over the batch (reduction "sum"), so the mean
    must not depend on how the validation set is cut into batches (the last batch is usually smaller)."""
    import types

    import torch

    from benchmark.openmmlab.loops import ValLossLoop

    torch.manual_seed(0)
    model = _yolo_model(tmp_path)
    images = [torch.randint(0, 255, (1, 64, 64), dtype=torch.uint8) for _ in range(3)]
    boxes = [[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 50.0, 30.0], [8.0, 8.0, 60.0, 60.0]]

    def mean_loss(batches):
        loop = object.__new__(ValLossLoop)
        loop.fp16 = False
        loop._runner = types.SimpleNamespace(model=model, call_hook=lambda *a, **k: None)
        loop.evaluator = types.SimpleNamespace(process=lambda **k: None)
        loop._loss_sum, loop._loss_n = 0.0, 0
        start = 0
        for i, n in enumerate(batches):
            loop.run_iter(i, _det_batch(images[start : start + n], boxes[start : start + n]))
            start += n
        return loop._loss_sum / loop._loss_n

    one_batch, singles, uneven = mean_loss([3]), mean_loss([1, 1, 1]), mean_loss([2, 1])
    assert one_batch == pytest.approx(singles, rel=1e-4)
    assert uneven == pytest.approx(singles, rel=1e-4)


@pytest.mark.parametrize("task_id", ["rsna_linear_1", "rsna_yolov3_frozen_10", "rsna_linear_100"])
def test_label_fractions_are_normalised_with_the_training_split_statistics(task_id, data_root, tmp_path):
    """A 1 % / 10 % task trains on a fraction of the training split but normalises with the statistics of
    the whole training split, as the reference code does (philip-mueller/lovt
    src/data/dataloading_utils.py ``apply_subset``: ``sub_dataset.stats = dataset.stats``)."""
    import json

    from benchmark.runs import RunOptions, plan_run, resolve
    from tasks.prepare import prepared_dir

    task = TASKS[task_id]
    stats = json.loads((prepared_dir(data_root, "rsna", 224) / "stats.json").read_text())
    assert stats["train_1pct"]["mean"] != stats["train"]["mean"]  # the check below can tell them apart
    run = plan_run(task, parse_spec("resnet18.random"), data_root, tmp_path, 0, None, RunOptions())
    r = resolve(run, tmp_path, RunOptions())
    assert (r.mean, r.std) == (stats["train"]["mean"], stats["train"]["std"])
    assert r.n_train == stats[r.train_subset]["n_images"]  # the fraction still decides what is trained on
