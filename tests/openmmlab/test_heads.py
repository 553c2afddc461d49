"""Heads beyond mmseg's: the U-Net decoder and the multi-label (NIH) pieces."""

from __future__ import annotations

import pytest
import torch
from mmengine.config import ConfigDict

from benchmark.backbones import ARCHS
from benchmark.openmmlab import heads  # noqa: F401  (registers the components)


def build_segmentor(arch: str, head: str, n_classes: int, multi: bool):
    from mmseg.registry import MODELS

    channels = list(ARCHS[arch].channels)
    classes = n_classes if multi else n_classes + 1
    common = dict(
        num_classes=classes,
        out_channels=n_classes if multi else 1,
        threshold=0.5,
        dropout_ratio=0.0,
        norm_cfg=None,
        align_corners=False,
        loss_decode=dict(type="CXRDiceLoss"),
    )
    if head == "unet":
        decode = dict(
            type="CXRMultiLabelUNetHead" if multi else "CXRUNetHead", in_channels=channels, **common
        )
        out_indices = (0, 1, 2, 3, 4, 5)
    else:
        decode = dict(
            type="CXRMultiLabelFCNHead" if multi else "CXRSigmoidFCNHead",
            in_channels=channels[5],
            channels=channels[5],
            num_convs=0,
            concat_input=False,
            **common,
        )
        out_indices = (5,)
    cfg = ConfigDict(
        type="CXRMultiLabelEncoderDecoder" if multi else "EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor",
            mean=[128.0],
            std=[50.0],
            bgr_to_rgb=False,
            pad_val=0,
            seg_pad_val=255,
            size=(64, 64),
        ),
        backbone=dict(type="CXRBackbone", spec=f"{arch}.random", out_indices=out_indices),
        decode_head=decode,
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmseg"):
        return MODELS.build(cfg)


def batch(n: int, n_classes: int, multi: bool):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 255, (1, 64, 64), dtype=torch.uint8))
        label = (
            (torch.rand(n_classes, 64, 64) > 0.8).long() if multi else (torch.rand(1, 64, 64) > 0.8).long()
        )
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return {"inputs": inputs, "data_samples": samples}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_unet_decoder_shapes_and_gradients(arch):
    model = build_segmentor(arch, "unet", 1, multi=False)
    head = model.decode_head
    c = ARCHS[arch].channels
    assert [b.up.in_channels for b in head.up_blocks] == [c[5], 1024, 512, 256, 128]
    assert [b.conv1[0].in_channels for b in head.up_blocks] == [
        1024 + c[4],
        512 + c[3],
        256 + c[2],
        128 + c[1],
        64 + 3,
    ]
    if arch == "resnet50":  # exactly UNetWithResnet50Encoder
        assert [b.conv1[0].in_channels for b in head.up_blocks] == [2048, 1024, 512, 192, 67]
    data = model.data_preprocessor(batch(2, 1, False), True)
    logits = model.decode_head.forward(model.extract_feat(data["inputs"]))
    assert logits.shape == (2, 1, 64, 64)  # full input resolution
    losses = model.loss(data["inputs"], data["data_samples"])
    losses["decode.loss_dice"].backward()
    assert (
        head.up_blocks[0].up.weight.grad is not None and model.backbone.encoder.conv1.weight.grad is not None
    )


@pytest.mark.parametrize("head", ["linear", "unet"])
def test_multilabel_loss_and_prediction(head):
    model = build_segmentor("resnet18", head, 8, multi=True)
    data = model.data_preprocessor(batch(2, 8, True), True)
    losses = model.loss(data["inputs"], data["data_samples"])
    assert set(losses) == {"decode.loss_dice"} and torch.isfinite(losses["decode.loss_dice"])
    model.eval()
    with torch.no_grad():
        out = model.predict(data["inputs"], data["data_samples"])
    assert out[0].pred_sem_seg.data.shape == (8, 64, 64)
    assert set(out[0].pred_sem_seg.data.unique().tolist()) <= {0.0, 1.0}


def test_multilabel_metric_per_class_averaging():
    from benchmark.openmmlab.metrics import SegMetric

    metric = SegMetric(multi_label=True)
    metric.dataset_meta = {"classes": ("a", "b", "c")}
    pred = torch.zeros(3, 2, 2)
    gt = torch.zeros(3, 2, 2, dtype=torch.long)
    pred[0, 0, 0] = 1  # class a: I=1 P=1 L=2 -> 2/3
    gt[0, 0, :] = 1
    pred[1] = 1  # class b: I=1 P=4 L=1 -> 2/5
    gt[1, 1, 1] = 1
    # class c: nothing predicted, nothing present -> 0 in the mean (LoVT's torchmetrics F1); left out of
    # dice_present_classes
    metric.process({}, [{"pred_sem_seg": {"data": pred}, "gt_sem_seg": {"data": gt}}])
    out = metric.compute_metrics(metric.results)
    assert out["dice.a"] == pytest.approx(2 / 3) and out["dice.b"] == pytest.approx(2 / 5)
    assert out["dice.c"] == 0.0 and out["dice"] == pytest.approx((2 / 3 + 2 / 5 + 0) / 3)
    assert out["dice_present_classes"] == pytest.approx((2 / 3 + 2 / 5) / 2)
    assert out["dice_per_image"] == pytest.approx(2 * 2 / (5 + 3))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_yolov3_adapts_to_declared_channels(arch, data_root, tmp_path):
    """The YOLOv3 neck takes C3..C5 as the backbone declares them (512/1024/2048 for ResNet-50)."""
    from mmengine.runner import Runner

    from benchmark.backbones import parse_spec
    from benchmark.openmmlab import build_config
    from benchmark.runs import RunOptions, plan_run, resolve
    from tasks.registry import get_task

    options = RunOptions(max_epochs=1, batch_size=2, progress=False)
    run = plan_run(
        get_task("rsna_yolov3_finetune_10"),
        parse_spec(f"{arch}.random"),
        data_root,
        tmp_path,
        0,
        None,
        options,
    )
    runner = Runner.from_cfg(build_config(run.task, resolve(run, tmp_path, options, f"yolo-{arch}")))
    neck = runner.model.neck
    assert neck.detect1.conv1.conv.in_channels == ARCHS[arch].channels[5]
    assert neck.detect2.conv1.conv.in_channels == ARCHS[arch].channels[4] + 256
    batch = next(iter(runner.train_dataloader))
    losses = runner.model.train_step(batch, runner.build_optim_wrapper(runner.optim_wrapper))
    assert torch.isfinite(losses["loss"])


def test_sigmoid_heads_lose_only_the_dice_loss_of_mmseg():
    """The suite's single-label linear head is mmseg's FCNHead with one sigmoid output; its loss is mmseg's
    loss_by_feat without the arg-max ``acc_seg`` term (meaningless for one output: the background share)."""
    from mmengine.registry import DefaultScope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    cfg = dict(
        in_channels=8, channels=8, num_convs=0, concat_input=False, num_classes=2, out_channels=1,
        threshold=0.5, dropout_ratio=0.0, norm_cfg=None, align_corners=False,
        loss_decode=dict(type="CXRDiceLoss"),
    )  # fmt: skip
    with DefaultScope.overwrite_default_scope("mmseg"):  # another test may have left mmdet's scope current
        ours = MODELS.build(dict(type="CXRSigmoidFCNHead", **cfg))
        theirs = MODELS.build(dict(type="FCNHead", **cfg))
    theirs.load_state_dict(ours.state_dict())
    torch.manual_seed(0)
    feats = [torch.randn(3, 8, 4, 4)]
    samples = []
    for i in range(3):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=(torch.rand(1, 32, 32) > 0.7 - 0.2 * i).long())
        samples.append(s)
    mine, ref = ours.loss(feats, samples, None), theirs.loss(feats, samples, None)
    assert set(mine) == {"loss_dice"} and set(ref) == {"loss_dice", "acc_seg"}
    assert torch.allclose(mine["loss_dice"], ref["loss_dice"])
    mine["loss_dice"].backward()
    assert ours.conv_seg.weight.grad is not None and torch.isfinite(ours.conv_seg.weight.grad).all()


def _yolo_head(num_classes: int, rank_by: str):
    from mmengine.config import ConfigDict

    from benchmark.openmmlab.heads import ObjectnessYOLOV3Head

    head = ObjectnessYOLOV3Head(
        num_classes=num_classes,
        in_channels=[8, 8, 8],
        out_channels=[8, 8, 8],
        anchor_generator=dict(
            type="YOLOAnchorGenerator",
            base_sizes=[[(116, 90), (156, 198), (373, 326)], [(30, 61), (62, 45), (59, 119)], [(10, 13), (16, 30), (33, 23)]],
            strides=[32, 16, 8],
        ),
        test_cfg=ConfigDict(
            nms_pre=1000, min_bbox_size=0, score_thr=0.0, conf_thr=0.2, nms=dict(type="nms", iou_threshold=0.4),
            max_per_img=1000, rank_by=rank_by,
        ),
    )  # fmt: skip
    return head


def _pred_maps(num_classes: int, seed: int, class_logit: float | None = None):
    g = torch.Generator().manual_seed(seed)
    maps = []
    for size in (4, 8, 16):  # 128 px input
        m = torch.randn(2, 3, 5 + num_classes, size, size, generator=g) * 2
        if class_logit is not None:
            m[:, :, 5:] = class_logit
        maps.append(m.reshape(2, 3 * (5 + num_classes), size, size))
    return maps


def _lovt_nms(boxes: torch.Tensor, conf: torch.Tensor, nms_thres: float = 0.4) -> torch.Tensor:
    """The suppression loop of LoVT's ``non_max_suppression`` for one class (github.com/philip-mueller/lovt @
    87b9a30750996e1e916464522221a03821ceb073, src/models/downstream/detection.py, ``bbox_iou`` with its +1),
    returning the kept boxes in order."""

    def bbox_iou(box1, box2):
        b1_x1, b1_y1, b1_x2, b1_y2 = box1[:, 0], box1[:, 1], box1[:, 2], box1[:, 3]
        b2_x1, b2_y1, b2_x2, b2_y2 = box2[:, 0], box2[:, 1], box2[:, 2], box2[:, 3]
        inter_rect_x1 = torch.max(b1_x1, b2_x1)
        inter_rect_y1 = torch.max(b1_y1, b2_y1)
        inter_rect_x2 = torch.min(b1_x2, b2_x2)
        inter_rect_y2 = torch.min(b1_y2, b2_y2)
        inter_area = torch.clamp(inter_rect_x2 - inter_rect_x1 + 1, min=0) * torch.clamp(
            inter_rect_y2 - inter_rect_y1 + 1, min=0
        )
        b1_area = (b1_x2 - b1_x1 + 1) * (b1_y2 - b1_y1 + 1)
        b2_area = (b2_x2 - b2_x1 + 1) * (b2_y2 - b2_y1 + 1)
        return inter_area / (b1_area + b2_area - inter_area + 1e-16)

    _, conf_sort_index = torch.sort(conf, descending=True)
    detections_class = boxes[conf_sort_index]
    max_detections = []
    while detections_class.size(0):
        max_detections.append(detections_class[0].unsqueeze(0))
        if len(detections_class) == 1:
            break
        ious = bbox_iou(max_detections[-1], detections_class[1:])
        detections_class = detections_class[1:][ious < nms_thres]
    return torch.cat(max_detections)


@pytest.mark.parametrize("seed", range(3))
def test_yolov3_ranks_on_objectness_as_lovt(seed):
    """Test-time boxes as LoVT: objectness >= 0.2, ranked, suppressed (IoU with +1) and scored on objectness
    alone; mmdet's own scoring (class probability x objectness) differs once class probabilities vary."""
    metas = [{"img_shape": (128, 128), "scale_factor": (1.0, 1.0)}] * 2
    ours = _yolo_head(1, "objectness").predict_by_feat(_pred_maps(1, seed), metas)
    before_nms = _yolo_head(1, "objectness").predict_by_feat(_pred_maps(1, seed), metas, with_nms=False)
    sure = _yolo_head(1, "class_x_objectness").predict_by_feat(
        _pred_maps(1, seed, class_logit=50.0), metas, with_nms=False
    )
    mmdet = _yolo_head(1, "class_x_objectness").predict_by_feat(_pred_maps(1, seed), metas)
    for a, pre, b, c in zip(ours, before_nms, sure, mmdet):
        # before NMS: mmdet's boxes with every class probability 1 (scores = objectness)
        mine, theirs = torch.argsort(pre.scores, descending=True), torch.argsort(b.scores, descending=True)
        assert torch.equal(pre.bboxes[mine], b.bboxes[theirs])
        assert torch.allclose(pre.scores[mine], b.scores[theirs])
        assert (pre.scores >= 0.2).all() and (pre.labels == 0).all() and len(pre) > 20
        # NMS: LoVT's loop on the same boxes keeps the same boxes in the same order
        assert torch.equal(a.bboxes, _lovt_nms(pre.bboxes, pre.scores)) and len(a) < len(pre)
        assert torch.equal(a.scores, torch.sort(a.scores, descending=True).values)
        assert not (len(a) == len(c) and torch.allclose(a.scores, c.scores))
    # several classes: each box once, with its most probable class (LoVT), scored by objectness
    (multi, _) = _yolo_head(3, "objectness").predict_by_feat(_pred_maps(3, seed), metas)
    assert (multi.scores >= 0.2).all() and set(multi.labels.tolist()) <= {0, 1, 2} and len(multi) > 5
    with pytest.raises(ValueError, match="rank_by"):
        _yolo_head(1, "class").predict_by_feat(_pred_maps(1, seed), metas)
