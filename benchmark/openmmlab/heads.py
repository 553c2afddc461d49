"""Segmentation heads of the protocol that mmseg does not ship: the U-Net decoder, and the multi-label
pieces the NIH task needs (overlapping boxes of different findings -> one sigmoid output per class)."""

from __future__ import annotations

import os.path as osp
from collections.abc import Sequence

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import PixelData
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.decode_heads.fcn_head import FCNHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from torch import nn

from tasks.registry import UNET_WIDTHS


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
