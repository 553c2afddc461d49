"""OpenMMLab configs as Python dicts built from a TaskSpec and a run's RunConfig (no ``_base_`` files, no
string imports)."""

from __future__ import annotations

from mmengine.config import ConfigDict

from benchmark.runs.config import RunConfig
from tasks.registry import (
    EARLY_STOP_MIN_DELTA,
    METRIC_KEYS,
    UNET_WIDTHS,
    YOLO_ANCHORS,
    YOLO_CONF_THR,
    YOLO_NMS_IOU,
    TaskSpec,
)


def _eval_batch(s: RunConfig) -> int:
    """Validation / test batches: no gradients, so larger batches than a small training batch are cheap."""
    return max(s.batch_size, 8)


def _dataloader(
    dataset: dict, batch_size: int, num_workers: int, train: bool, limit: int | None = None, pin_memory=False
) -> dict:
    if train and limit is not None:
        dataset = dict(dataset, indices=limit)  # mmengine's BaseDataset keeps the first `limit` samples
    # serialising the annotation list only saves memory in worker processes; it costs a gc.collect()
    dataset = dict(dataset, serialize_data=num_workers > 0)
    return dict(
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        drop_last=train,  # the protocol drops the last incomplete training batch
        sampler=dict(type="DefaultSampler", shuffle=train),
        dataset=dataset,
    )


def _detection(task: TaskSpec, s: RunConfig, channels: list[int]) -> dict:
    """YOLOv3 (mmdet neck + head) on C3..C5."""
    size = task.size
    pipeline = [
        dict(type="LoadImageFromFile", color_type="grayscale"),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(
            type="Resize", scale=(size, size), keep_ratio=False
        ),  # no-op at the prepared size; sets scale_factor
        dict(
            type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")
        ),
    ]

    def dataset(subset: str, test_mode: bool) -> dict:
        return dict(
            type="CocoDataset",
            data_root=str(s.prepared),
            ann_file=f"annotations/{subset}.json",
            data_prefix=dict(img="images/"),
            metainfo=dict(classes=s.classes),
            filter_cfg=dict(filter_empty_gt=False, min_size=0),  # negatives are part of the protocol
            pipeline=pipeline,
            test_mode=test_mode,
        )

    c3, c4, c5 = channels[3:6]
    metric = "CXRFROCMetric" if task.metric == "froc" else "CXRDetectionMetric"
    norm = s.normalization
    model = dict(
        type="YOLOV3",
        data_preprocessor=dict(
            type="DetDataPreprocessor",
            mean=[norm["mean"] * 255.0],
            std=[norm["std"] * 255.0],
            bgr_to_rgb=False,
            pad_size_divisor=32,
        ),
        backbone=dict(
            type="CXRBackbone",
            spec=s.backbone.spec,
            out_indices=(3, 4, 5),
            frozen=task.frozen,
            warmup_frozen_iters=task.warmup_steps,
            input_norm=norm["input_norm"],
        ),
        neck=dict(type="YOLOV3Neck", num_scales=3, in_channels=[c5, c4, c3], out_channels=[512, 256, 128]),
        bbox_head=dict(
            type="CXRObjectnessYOLOV3Head",  # mmdet's YOLOV3Head, boxes ranked on objectness (LoVT)
            num_classes=len(s.classes),
            in_channels=[512, 256, 128],
            out_channels=[1024, 512, 256],
            anchor_generator=dict(
                type="YOLOAnchorGenerator",
                # the protocol's anchors are pixels at 224 px: other resolutions scale them (the factor first,
                # so that at 224 px they are exactly the protocol's numbers: 31.86 * 224 / 224 != 31.86)
                base_sizes=[
                    [(w * (task.size / 224), h * (task.size / 224)) for w, h in level]
                    for level in YOLO_ANCHORS
                ],
                strides=[32, 16, 8],
            ),
            bbox_coder=dict(type="YOLOBBoxCoder"),
            featmap_strides=[32, 16, 8],
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0, reduction="sum"),
            loss_conf=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0, reduction="sum"),
            loss_xy=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=2.0, reduction="sum"),
            loss_wh=dict(type="MSELoss", loss_weight=2.0, reduction="sum"),
            train_loss=s.train_loss,  # "lovt": LoVT's YOLOv3Loss replaces the four losses above
        ),
        train_cfg=dict(assigner=dict(type="GridAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0)),
        test_cfg=dict(
            nms_pre=1000,
            min_bbox_size=0,
            score_thr=0.0,
            conf_thr=YOLO_CONF_THR,
            rank_by="objectness",
            nms=dict(type="nms", iou_threshold=YOLO_NMS_IOU),
            max_per_img=100,
        ),
    )
    return dict(
        default_scope="mmdet",
        model=model,
        train_dataloader=_dataloader(
            dataset(s.train_subset, False), s.batch_size, s.num_workers, True, s.train_limit, s.pin_memory
        ),
        val_dataloader=_dataloader(
            dataset("val", True), _eval_batch(s), s.num_workers, False, pin_memory=s.pin_memory
        ),
        test_dataloader=_dataloader(
            dataset("test", True), _eval_batch(s), s.num_workers, False, pin_memory=s.pin_memory
        ),
        val_evaluator=dict(type=metric, ann_file=str(s.prepared / "annotations" / "val.json")),
        test_evaluator=dict(type=metric, ann_file=str(s.prepared / "annotations" / "test.json")),
    )


def _segmentation(task: TaskSpec, s: RunConfig, channels: list[int]) -> dict:
    """Linear (1x1 conv on C5) or U-Net (C0..C5) head with sigmoid outputs and Dice loss.

    Single-label datasets have class-index masks and one output (foreground probability); multi-label
    datasets (NIH) have one binary mask and one sigmoid output per class.
    """
    multi = s.multi_label
    classes = tuple(s.classes) if multi else ("background",) + tuple(s.classes)
    load_masks = (
        dict(type="CXRLoadMultiLabelMasks", classes=classes)
        if multi
        else dict(type="LoadAnnotations")  # reduce_zero_label comes from the dataset (False)
    )
    pipeline = [
        dict(type="LoadImageFromFile", color_type="grayscale"),
        load_masks,
        dict(type="PackSegInputs", meta_keys=("img_path", "seg_map_path", "ori_shape", "img_shape")),
    ]
    norm = s.normalization

    def dataset(subset: str, test_mode: bool) -> dict:
        return dict(
            type="BaseSegDataset",
            data_root=str(s.prepared),
            ann_file=f"annotations/{subset}.txt",
            data_prefix=dict(img_path="images", seg_map_path="masks"),
            img_suffix=".png",
            seg_map_suffix=".png",
            metainfo=dict(classes=classes, palette=[[i, i, i] for i in range(len(classes))]),
            reduce_zero_label=False,
            pipeline=pipeline,
            test_mode=test_mode,
        )

    out_channels = len(classes) if multi else 1  # sigmoid outputs; thresholded at 0.5
    head_common = dict(
        num_classes=len(classes),
        out_channels=out_channels,
        threshold=0.5,
        dropout_ratio=0.0,
        norm_cfg=None,
        align_corners=False,
        loss_decode=dict(type="CXRDiceLoss", loss_weight=1.0, variant=s.train_loss),
    )
    if task.head == "linear":
        # a 1x1 convolution on C5, logits upsampled bilinearly; no dropout, no norm
        out_indices = (5,)
        head = dict(
            type="CXRMultiLabelFCNHead" if multi else "CXRSigmoidFCNHead",
            in_channels=channels[5],
            channels=channels[5],
            num_convs=0,
            concat_input=False,
            **head_common,
        )
    elif task.head == "unet":
        out_indices = (0, 1, 2, 3, 4, 5)
        head = dict(
            type="CXRMultiLabelUNetHead" if multi else "CXRUNetHead",
            in_channels=list(channels),
            widths=list(s.unet_widths or UNET_WIDTHS),
            **head_common,
        )
    else:
        raise ValueError(f"task {task.id}: head '{task.head}' is not a segmentation head")
    model = dict(
        type="CXRMultiLabelEncoderDecoder" if multi else "EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor",
            mean=[norm["mean"] * 255.0],
            std=[norm["std"] * 255.0],
            bgr_to_rgb=False,
            pad_val=0,
            seg_pad_val=255,
            size=(task.size, task.size),
        ),
        backbone=dict(
            type="CXRBackbone",
            spec=s.backbone.spec,
            out_indices=out_indices,
            frozen=task.frozen,
            warmup_frozen_iters=task.warmup_steps,
            input_norm=norm["input_norm"],
        ),
        decode_head=head,
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )
    return dict(
        default_scope="mmseg",
        model=model,
        train_dataloader=_dataloader(
            dataset(s.train_subset, False), s.batch_size, s.num_workers, True, s.train_limit, s.pin_memory
        ),
        val_dataloader=_dataloader(
            dataset("val", True), _eval_batch(s), s.num_workers, False, pin_memory=s.pin_memory
        ),
        test_dataloader=_dataloader(
            dataset("test", True), _eval_batch(s), s.num_workers, False, pin_memory=s.pin_memory
        ),
        val_evaluator=dict(type="CXRSegMetric", multi_label=multi),
        test_evaluator=dict(type="CXRSegMetric", multi_label=multi),
    )


def build_config(task: TaskSpec, s: RunConfig) -> ConfigDict:
    """The full mmengine Runner config of one run."""
    channels = list(s.backbone.channels)  # C0..C5 as the backbone declares them
    parts = _detection(task, s, channels) if task.kind == "detection" else _segmentation(task, s, channels)
    monitor = METRIC_KEYS[task.metric].monitor
    custom_hooks = [
        dict(type="CXRPlainCheckpointHook"),
        dict(type="CXRLossGuardHook"),
        dict(type="CXRHistoryHook"),
        dict(
            type="EarlyStoppingHook",
            monitor=monitor,
            rule="greater",
            patience=task.patience,
            # mmengine counts "not worse" as an improvement when min_delta is 0: a run stuck at one value
            # (mAP 0 before the head predicts anything) would never stop
            min_delta=EARLY_STOP_MIN_DELTA,
        ),
    ]
    if task.warmup_steps:
        custom_hooks.append(
            dict(
                type="CXRFinetuneWarmupHook",
                warmup_iters=task.warmup_steps,
                warmup_lr=task.warmup_lr,
                lr=s.lr,
            )
        )
    if s.progress:
        custom_hooks.append(
            dict(type="CXRProgressHook", description=f"{task.id} seed={s.seed} lr={s.lr:g}", monitor=monitor)
        )
    cfg = dict(
        **parts,
        work_dir=str(s.work_dir),
        experiment_name=s.experiment_name,
        optim_wrapper=dict(
            type="AmpOptimWrapper" if s.amp else "OptimWrapper",
            # fused: one kernel per step instead of ~10 passes over the parameters (15x faster on CPU)
            optimizer=dict(type="Adam", lr=s.lr, weight_decay=task.weight_decay, fused=True),
        ),
        # lr halved when the validation loss has not improved for `plateau_patience` epochs
        param_scheduler=[
            dict(
                type="ReduceOnPlateauLR",
                monitor="loss",
                rule="less",
                factor=task.plateau_factor,
                patience=task.plateau_patience,
                by_epoch=True,
            )
        ],
        train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=s.max_epochs, val_interval=1),
        val_cfg=dict(type="CXRValLossLoop", fp16=s.amp),
        test_cfg=dict(type="TestLoop", fp16=s.amp),
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=50),
            param_scheduler=dict(type="ParamSchedulerHook"),
            # the best-validation checkpoint only (for the test): no periodic ones (interval -1), no last
            checkpoint=dict(
                type="CheckpointHook",
                interval=-1,
                by_epoch=True,
                max_keep_ckpts=1,
                save_last=False,
                save_best=monitor,
                rule="greater",
            ),
            sampler_seed=dict(type="DistSamplerSeedHook"),
        ),
        custom_hooks=custom_hooks,
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
            dist_cfg=dict(backend="nccl"),
        ),
        randomness=dict(seed=s.seed, deterministic=False),
        log_level="INFO" if s.verbose else "WARNING",
        log_processor=dict(by_epoch=True),
        visualizer=dict(
            type="Visualizer", vis_backends=[dict(type="LocalVisBackend")], name=s.experiment_name
        ),
    )
    if s.feature_cache and task.frozen:
        from benchmark.openmmlab.feature_cache_hook import use_feature_cache

        use_feature_cache(
            cfg,
            s.feature_cache,
            dtype=s.feature_cache_dtype,
            amp=s.amp,
            num_workers=s.num_workers,
            provenance={"backbone": s.backbone.to_dict(), "seed": s.seed},
        )
    if s.launcher != "none":
        import torch

        cfg["launcher"] = s.launcher
        cuda = torch.cuda.is_available()
        cfg["env_cfg"]["dist_cfg"] = dict(backend="nccl" if cuda else "gloo")
        # a finetune warm-up leaves the encoder out of the graph for its first iterations
        cfg["model_wrapper_cfg"] = dict(
            type="MMDistributedDataParallel",
            broadcast_buffers=False,
            find_unused_parameters=bool(task.warmup_steps),
            **({} if cuda else {"device_ids": None}),  # mmengine passes LOCAL_RANK as a CUDA device
        )
    return ConfigDict(cfg)
