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


class DiceLoss(nn.Module):
    """Soft Dice loss for mmseg decode heads with sigmoid outputs.

    Args:
        loss_weight: multiplier.
        ignore_index: label value of pixels that do not count.
        loss_name: key in the loss dict (must start with ``loss_``).
    """

    def __init__(
        self, loss_weight: float = 1.0, ignore_index: int = 255, loss_name: str = "loss_dice"
    ) -> None:
        super().__init__()
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
        return self.loss_weight * soft_dice_loss(pred, target, valid)

    @property
    def loss_name(self) -> str:
        return self._loss_name
