"""Segmentation loss of the protocol: soft Dice on sigmoid probabilities, pooled over the batch.

mmseg 1.2.2's ``DiceLoss`` cannot be used for a one-channel (binary) head: it one-hot encodes the label
and keeps channel 0, i.e. it trains the foreground logit towards the BACKGROUND mask. This loss reads the
label directly: binary (one logit channel, label 0/1) or multi-label (C channels, C binary masks).
"""

from __future__ import annotations

import torch
from torch import nn


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-7
) -> torch.Tensor:
    """1 - mean over channels of the soft Dice, pixels pooled over the batch.

    Args:
        logits: (N, C, H, W).
        target: (N, C, H, W) binary.
        valid: (N, 1, H, W) or (N, C, H, W) mask of pixels that count (ignore_index excluded).
    """
    prob = logits.float().sigmoid()
    target = target.float()
    if valid is not None:
        prob = prob * valid
        target = target * valid
    dims = (0, 2, 3)
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    dice = (2 * inter) / denom.clamp_min(eps)
    return 1 - dice.mean()


def pooled_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-7
) -> torch.Tensor:
    """LoVT's training Dice (``--train-loss lovt``): ONE soft Dice over every pixel of every class and image.

    LoVT trains its segmentation heads with ``segmentation_models_pytorch``'s ``DiceLoss(mode="binary")``
    (``src/models/downstream/segmentation.py``, ``loss_fn="dice"``): the (N, C, H, W) logits are flattened to
    (N, 1, C*H*W), so the classes are pooled, not averaged; no smoothing (smooth 0), the denominator clamped at
    ``eps`` = 1e-7; and the loss is 0 when the batch has no foreground pixel at all (its ``mask`` of
    empty targets). With one class it differs from :func:`soft_dice_loss` only in that last rule.
    """
    prob = logits.float().sigmoid()
    target = target.float()
    if valid is not None:
        prob = prob * valid
        target = target * valid
    inter = (prob * target).sum()
    denom = prob.sum() + target.sum()
    dice = (2 * inter) / denom.clamp_min(eps)
    return (1 - dice) * (target.sum() > 0).to(dice.dtype)


DICE_LOSSES = {"protocol": soft_dice_loss, "lovt": pooled_dice_loss}


class DiceLoss(nn.Module):
    """Soft Dice loss for mmseg decode heads with sigmoid outputs.

    Args:
        loss_weight: multiplier.
        ignore_index: label value of pixels that do not count.
        loss_name: key in the loss dict (must start with ``loss_``).
        variant: ``"protocol"`` (mean of the per-class Dice losses, :func:`soft_dice_loss`) or ``"lovt"``
            (LoVT's Dice pooled over the classes, :func:`pooled_dice_loss`; ``--train-loss lovt``).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        ignore_index: int = 255,
        loss_name: str = "loss_dice",
        variant: str = "protocol",
    ) -> None:
        super().__init__()
        if variant not in DICE_LOSSES:
            raise ValueError(f"Dice loss variant must be one of {sorted(DICE_LOSSES)}, got {variant!r}")
        self.variant = variant
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self._loss_name = loss_name

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight=None, ignore_index: int | None = None, **kwargs
    ) -> torch.Tensor:
        ignore = self.ignore_index if ignore_index is None else ignore_index
        if target.dim() == 3:  # (N, H, W) class-index label of a binary head
            if pred.shape[1] != 1:
                raise ValueError(
                    f"a class-index label needs a one-channel (binary) head, got {pred.shape[1]} channels"
                )
            valid = (target != ignore).unsqueeze(1)
            target = (target == 1).unsqueeze(1)
        else:  # (N, C, H, W) multi-label masks
            valid = target != ignore
            target = target == 1
        return self.loss_weight * DICE_LOSSES[self.variant](pred, target, valid)

    @property
    def loss_name(self) -> str:
        return self._loss_name


# LoVT's YOLOv3 loss (``--train-loss lovt``): the term weights and the ignore threshold of its ``YOLOv3Loss``
LOVT_YOLO_LAMBDA_XY = 2.5
LOVT_YOLO_LAMBDA_WH = 2.5
LOVT_YOLO_IGNORE_IOU = 0.5


def _bce(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of probabilities, logs clamped at -100 (torch's ``BCELoss``)."""
    return nn.functional.binary_cross_entropy(p, t)


def lovt_yolov3_targets(boxes, labels, anchors, in_hw, img_hw, num_classes: int):
    """LoVT's YOLOv3 targets of one output scale (its ``YOLOv3Loss.get_targets``).

    Args:
        boxes: per image, (T, 4) boxes (x1, y1, x2, y2) in pixels of the network input.
        labels: per image, (T,) class indices.
        anchors: (A, 2) anchor widths and heights in pixels of the network input.
        in_hw: (H, W) of this scale's output map; img_hw: (height, width) of the input.

    Each box goes to the cell holding its centre (truncated, clamped into the map) and to the anchor whose
    shape fits it best (IoU of the two shapes at a common corner, in cell units, +1 on every side as LoVT's
    ``bbox_iou``); every anchor of that cell whose shape IoU exceeds 0.5 leaves the no-object mask (the best
    one only if its IoU does too). Later boxes overwrite earlier ones on the same cell and anchor.

    Returns:
        mask, noobj_mask, tx, ty, tw, th: (N, A, H, W); tcls: (N, A, H, W, C).
    """
    in_h, in_w = in_hw
    img_h, img_w = img_hw
    n, a = len(boxes), anchors.shape[0]
    device = anchors.device
    mask = torch.zeros(n, a, in_h, in_w, device=device)
    noobj = torch.ones(n, a, in_h, in_w, device=device)
    tx, ty, tw, th = (torch.zeros(n, a, in_h, in_w, device=device) for _ in range(4))
    tcls = torch.zeros(n, a, in_h, in_w, num_classes, device=device)
    rx, ry = in_w / img_w, in_h / img_h
    cell_anchors = anchors.float() / anchors.new_tensor([img_w / in_w, img_h / in_h]).float()
    aw, ah = cell_anchors[:, 0], cell_anchors[:, 1]
    for b, (bx, lb) in enumerate(zip(boxes, labels)):
        bx = bx.float().to(device)
        gw = (bx[:, 2] - bx[:, 0]) * rx
        gh = (bx[:, 3] - bx[:, 1]) * ry
        gx = bx[:, 0] * rx + gw / 2
        gy = bx[:, 1] * ry + gh / 2
        gi = gx.int().clamp_max(in_w - 1)
        gj = gy.int().clamp_max(in_h - 1)
        for t in range(bx.shape[0]):
            inter = (torch.minimum(gw[t], aw) + 1) * (torch.minimum(gh[t], ah) + 1)
            iou = inter / ((gw[t] + 1) * (gh[t] + 1) + (aw + 1) * (ah + 1) - inter + 1e-16)
            i, j = int(gi[t]), int(gj[t])
            noobj[b, iou > LOVT_YOLO_IGNORE_IOU, j, i] = 0
            best = int(torch.argmax(iou))
            mask[b, best, j, i] = 1
            tx[b, best, j, i] = gx[t] - gi[t]
            ty[b, best, j, i] = gy[t] - gj[t]
            tw[b, best, j, i] = torch.log(gw[t] / aw[best] + 1e-16)
            th[b, best, j, i] = torch.log(gh[t] / ah[best] + 1e-16)
            tcls[b, best, j, i, 0 if num_classes == 1 else int(lb[t])] = 1
    return mask, noobj, tx, ty, tw, th, tcls


def lovt_yolov3_loss(pred_maps, boxes, labels, anchors, img_hw, num_classes: int) -> dict:
    """LoVT's YOLOv3 training loss (its ``YOLOv3Loss``, after BobLiu20/YOLOv3_PyTorch), summed over scales.

    Per scale, over the whole (N, A, H, W) maps (means, not sums): BCE of sigmoid x / y and MSE of the raw
    w / h against the targets, both on the object mask; objectness BCE on the object mask plus 0.5 x BCE
    towards 0 on the no-object mask; class BCE on the object mask only with more than one class. Weights:
    2.5 (x, y, w, h), 1 (objectness, classes).

    Args:
        pred_maps: per scale, (N, A * (5 + C), H, W) raw outputs (mmdet's / LoVT's layout: per anchor
            x, y, w, h, objectness, classes).
        boxes, labels: per image, as :func:`lovt_yolov3_targets`.
        anchors: per scale, (A, 2) anchor sizes in input pixels.
        img_hw: (height, width) of the network input.

    Returns:
        ``{"loss_xy", "loss_wh", "loss_conf", "loss_cls"}``, each summed over the scales and weighted.
    """
    out = {"loss_xy": 0.0, "loss_wh": 0.0, "loss_conf": 0.0, "loss_cls": 0.0}
    for pred, level_anchors in zip(pred_maps, anchors):
        n, _, h, w = pred.shape
        a = level_anchors.shape[0]
        p = pred.float().view(n, a, 5 + num_classes, h, w).permute(0, 1, 3, 4, 2)
        x, y = p[..., 0].sigmoid(), p[..., 1].sigmoid()
        pw, ph = p[..., 2], p[..., 3]
        conf, cls = p[..., 4].sigmoid(), p[..., 5:].sigmoid()
        with torch.no_grad():
            mask, noobj, tx, ty, tw, th, tcls = lovt_yolov3_targets(
                boxes, labels, level_anchors.to(pred.device), (h, w), img_hw, num_classes
            )
        mse = nn.functional.mse_loss
        xy = _bce(x * mask, tx * mask) + _bce(y * mask, ty * mask)
        wh = mse(pw * mask, tw * mask) + mse(ph * mask, th * mask)
        out["loss_xy"] = out["loss_xy"] + LOVT_YOLO_LAMBDA_XY * xy
        out["loss_wh"] = out["loss_wh"] + LOVT_YOLO_LAMBDA_WH * wh
        out["loss_conf"] = out["loss_conf"] + _bce(conf * mask, mask) + 0.5 * _bce(conf * noobj, noobj * 0.0)
        if num_classes > 1:
            m = mask.unsqueeze(-1)
            out["loss_cls"] = out["loss_cls"] + _bce(cls * m, tcls * m)
        else:
            out["loss_cls"] = out["loss_cls"] + conf.new_zeros(()) * cls.sum()  # LoVT: 0 with one class
    return out
