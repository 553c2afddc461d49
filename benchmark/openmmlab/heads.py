"""Heads of the protocol that mmseg / mmdet do not ship as such: the U-Net decoder, the multi-label pieces
the NIH task needs (overlapping boxes of different findings -> one sigmoid output per class), and mmdet's
YOLOv3 head with LoVT's test-time ranking (objectness alone)."""

from __future__ import annotations

import os.path as osp
from collections.abc import Sequence

import mmcv
import numpy as np
import torch
from mmcv.ops import batched_nms
from mmcv.transforms import BaseTransform
from mmdet.models.dense_heads import YOLOV3Head
from mmengine.structures import InstanceData, PixelData
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.decode_heads.fcn_head import FCNHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from torch import nn

from tasks.registry import TRAIN_LOSSES, UNET_WIDTHS


class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _UpBlock(nn.Module):
    """2x2 transposed convolution, concatenation with the skip feature, two conv blocks."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.conv1 = _ConvBlock(cout + skip, cout)
        self.conv2 = _ConvBlock(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:  # encoders whose strides do not halve exactly
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv2(self.conv1(torch.cat([x, skip], dim=1)))


class SigmoidLossMixin:
    """``loss_by_feat`` of the suite's heads, whose outputs are sigmoid probabilities (one per class): mmseg's
    own adds an arg-max ``acc_seg`` term, meaningless for them (with one output it is the share of background
    pixels) and about a fifth of a cached linear epoch. Otherwise the same: logits resized bilinearly to the
    label, every ``loss_decode`` summed by name. Labels are class-index masks (N, 1, H, W), squeezed to
    (N, H, W); multi-label heads keep their (N, C, H, W) binary masks."""

    multi_label = False

    def loss_by_feat(self, seg_logits: torch.Tensor, batch_data_samples) -> dict:
        seg_label = self._stack_batch_gt(batch_data_samples)
        seg_logits = resize(
            seg_logits, size=seg_label.shape[2:], mode="bilinear", align_corners=self.align_corners
        )
        if not self.multi_label:
            seg_label = seg_label.squeeze(1)
        losses = {}
        decoders = self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        for loss_decode in decoders:
            value = loss_decode(seg_logits, seg_label, ignore_index=self.ignore_index)
            losses[loss_decode.loss_name] = losses.get(loss_decode.loss_name, 0) + value
        return losses


class SigmoidFCNHead(SigmoidLossMixin, FCNHead):
    """mmseg's ``FCNHead`` (the linear head: ``num_convs=0``) with :class:`SigmoidLossMixin`'s loss."""


class UNetHead(SigmoidLossMixin, BaseDecodeHead):
    """U-Net decoder on a ResNet-style encoder (newly initialised).

    Bridge of two 3x3 conv+BN+ReLU on C5; five up-blocks (2x2 transposed conv, then two conv blocks) that
    concatenate with C4, C3, C2, C1 and finally the input image C0; widths 1024/512/256/128/64; then the
    1x1 classifier (``conv_seg``). For a ResNet-50 this is exactly the widely used
    ``UNetWithResnet50Encoder`` (bridge 2048, up-blocks 2048->1024, 1024->512, 512->256, 192->128, 67->64).

    Args:
        in_channels: channels of C0..C5 as the backbone declares them.
        widths: up-block widths (default: the protocol's; ``RunOptions.unet_widths`` sets others).
    """

    def __init__(self, in_channels: Sequence[int], widths: Sequence[int] = UNET_WIDTHS, **kwargs) -> None:
        if len(in_channels) != 6:
            raise ValueError(f"UNetHead needs the six levels C0..C5, got channels {list(in_channels)}")
        super().__init__(
            in_channels=list(in_channels),
            channels=widths[-1],
            in_index=list(range(6)),
            input_transform="multiple_select",
            **kwargs,
        )
        c = list(in_channels)
        self.bridge = nn.Sequential(_ConvBlock(c[5], c[5]), _ConvBlock(c[5], c[5]))
        ups, prev = [], c[5]
        for width, skip in zip(widths, reversed(c[:5])):
            ups.append(_UpBlock(prev, skip, width))
            prev = width
        self.up_blocks = nn.ModuleList(ups)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = self._transform_inputs(inputs)
        x = self.bridge(feats[5])
        for block, skip in zip(self.up_blocks, reversed(feats[:5])):
            x = block(x, skip)
        return self.cls_seg(x)


class MultiLabelLossMixin(SigmoidLossMixin):
    """The loss of multi-label heads: the label is (N, C, H, W) binary masks, one per class."""

    multi_label = True


class MultiLabelFCNHead(MultiLabelLossMixin, FCNHead):
    """``FCNHead`` with one sigmoid output per class and per-class binary masks as labels."""


class MultiLabelUNetHead(MultiLabelLossMixin, UNetHead):
    """``UNetHead`` with one sigmoid output per class and per-class binary masks as labels."""


class MultiLabelEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` whose prediction is one binary mask per class (sigmoid > threshold), shape
    (C, H, W), instead of an argmax over classes."""

    def postprocess_result(self, seg_logits: torch.Tensor, data_samples=None):
        from mmseg.structures import SegDataSample

        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(seg_logits.shape[0])]
        for i, sample in enumerate(data_samples):
            logits = seg_logits[i : i + 1]
            ori_shape = sample.metainfo.get("ori_shape")
            if ori_shape is not None and tuple(logits.shape[-2:]) != tuple(ori_shape[:2]):
                logits = resize(
                    logits,
                    size=ori_shape[:2],
                    mode="bilinear",
                    align_corners=self.align_corners,
                    warning=False,
                )
            prob = logits[0].sigmoid()
            sample.set_data(
                {
                    "seg_logits": PixelData(data=prob),
                    "pred_sem_seg": PixelData(data=(prob > self.decode_head.threshold).to(prob)),
                }
            )
        return data_samples


class LoadMultiLabelMasks(BaseTransform):
    """Load one binary mask per class from ``<mask dir>/<class>/<id>.png`` into ``gt_seg_map`` (C, H, W).

    The prepared multi-label layout (``tasks.prepare``) stores ``masks/<class>/<image_id>.png``; the dataset's
    ``seg_map_path`` points at ``masks/<image_id>.png`` and only its folder and file name are used.
    """

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = tuple(classes)

    def transform(self, results: dict) -> dict:
        folder, name = osp.split(results["seg_map_path"])
        masks = []
        for c in self.classes:
            path = osp.join(folder, c, name)
            if not osp.exists(path):
                raise FileNotFoundError(
                    f"{path}: per-class mask missing (class '{c}'); re-run `cxrbench prepare`"
                )
            masks.append(mmcv.imread(path, flag="unchanged"))
        results["gt_seg_map"] = np.stack(masks).astype(np.uint8)
        results["seg_fields"] = results.get("seg_fields", []) + ["gt_seg_map"]
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(classes={self.classes})"


class ObjectnessYOLOV3Head(YOLOV3Head):
    """mmdet's ``YOLOV3Head`` (same layers, loss and training) whose test-time boxes are ranked, suppressed
    and scored as LoVT's YOLOv3 (``non_max_suppression`` in LoVT's ``src/models/downstream/detection.py``):
    boxes with objectness >= ``conf_thr``, each labelled with its most probable class, NMS per class on the
    objectness, the objectness as the box's score. mmdet scores class probability x objectness instead
    (``test_cfg.rank_by = "class_x_objectness"`` keeps that); with one class LoVT never trains the class
    output (its class loss is 0), mmdet does, only on positive anchors.

    ``nms_pre`` keeps the boxes of highest objectness (mmdet: highest class probability). NMS uses LoVT's
    IoU, with +1 on every width and height (in the prepared image's pixels, the frame LoVT's boxes are in).

    ``train_loss="lovt"`` (``--train-loss lovt``) trains with LoVT's own YOLOv3 loss
    (:func:`benchmark.openmmlab.losses.lovt_yolov3_loss`) instead of mmdet's; ``"protocol"`` keeps mmdet's.
    """

    def __init__(self, *args, train_loss: str = "protocol", **kwargs) -> None:
        if train_loss not in TRAIN_LOSSES:
            raise ValueError(f"train_loss must be one of {TRAIN_LOSSES}, got {train_loss!r}")
        super().__init__(*args, **kwargs)
        self.train_loss = train_loss

    def loss_by_feat(self, pred_maps, batch_gt_instances, batch_img_metas, batch_gt_instances_ignore=None):
        if self.train_loss == "protocol":
            return super().loss_by_feat(pred_maps, batch_gt_instances, batch_img_metas, batch_gt_instances_ignore)
        from benchmark.openmmlab.losses import lovt_yolov3_loss

        anchors = [torch.tensor(level, dtype=torch.float32) for level in self.prior_generator.base_sizes]
        img_hw = tuple(batch_img_metas[0]["batch_input_shape"])
        return lovt_yolov3_loss(
            pred_maps,
            [g.bboxes for g in batch_gt_instances],
            [g.labels for g in batch_gt_instances],
            anchors,
            img_hw,
            self.num_classes,
        )

    def predict_by_feat(
        self, pred_maps, batch_img_metas, cfg=None, rescale: bool = False, with_nms: bool = True
    ) -> list[InstanceData]:
        cfg = self.test_cfg if cfg is None else cfg
        rank_by = cfg.get("rank_by", "objectness")
        if rank_by == "class_x_objectness":
            return super().predict_by_feat(pred_maps, batch_img_metas, cfg, rescale, with_nms)
        if rank_by != "objectness":
            raise ValueError(f"test_cfg.rank_by must be 'objectness' or 'class_x_objectness', got {rank_by!r}")
        num_imgs = len(batch_img_metas)
        featmap_sizes = [pred_map.shape[-2:] for pred_map in pred_maps]
        priors = torch.cat(self.prior_generator.grid_priors(featmap_sizes, device=pred_maps[0].device))
        preds, strides = [], []
        for pred, stride in zip(pred_maps, self.featmap_strides):  # mmdet's decoding, unchanged
            pred = pred.permute(0, 2, 3, 1).reshape(num_imgs, -1, self.num_attrib)
            pred[..., :2].sigmoid_()
            preds.append(pred)
            strides.append(pred.new_tensor(stride).expand(pred.size(1)))
        preds = torch.cat(preds, dim=1)
        boxes = self.bbox_coder.decode(priors, preds[..., :4], torch.cat(strides).unsqueeze(-1))
        objectness = preds[..., 4].sigmoid()
        cls_scores = preds[..., 5:].sigmoid()
        results_list = []
        for bboxes, obj, cls, img_meta in zip(boxes, objectness, cls_scores, batch_img_metas):
            keep = obj >= cfg.get("conf_thr", -1)
            bboxes, obj, cls = bboxes[keep], obj[keep], cls[keep]
            nms_pre = cfg.get("nms_pre", -1)
            if 0 < nms_pre < obj.numel():
                top = obj.topk(nms_pre).indices
                bboxes, obj, cls = bboxes[top], obj[top], cls[top]
            results = InstanceData(scores=obj, labels=cls.argmax(dim=1), bboxes=bboxes)
            results = self._bbox_post_process(
                results=results, cfg=cfg, rescale=rescale, with_nms=False, img_meta=img_meta
            )
            if with_nms and len(results):
                # LoVT's NMS IoU adds 1 to every width and height: the continuous IoU of boxes grown by 1
                grown = results.bboxes + results.bboxes.new_tensor([0, 0, 1, 1])
                _, keep = batched_nms(grown, results.scores, results.labels, cfg.nms)
                results = results[keep][: cfg.max_per_img]
            results_list.append(results)
        return results_list
