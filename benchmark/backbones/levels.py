"""Levels C0..C5 at strides 1..32 from whatever levels an encoder has.

The heads are defined on fixed levels: YOLOv3 reads C3-C5 at strides 8 / 16 / 32, the linear head C5 at
stride 32 (the LoVT protocol on a ResNet-50). Encoders differ: ConvNeXt / Swin have no stride-2 level, a ViT
has one level at stride 16, MedKLIP's ResNet ends at layer3. Every level ``Ck`` a head asks for is therefore
delivered at stride ``2**k``:

- the encoder's own level k when it has one at that stride;
- otherwise it is computed from the deepest native map whose stride is at most ``2**k`` by max-pooling (as
  ViTDet's simple feature pyramid builds its stride-32 map; adaptive windows when the ratio is not an
  integer), or, when there is none, from the finest native map by bilinear upsampling (ViTDet uses a learned
  deconvolution there).

A plain ViT has a single native map, its last block's tokens at the patch size's stride (14, 16 or 32, see
:mod:`benchmark.backbones.transformer_models`): with patch 16, C4 is native, C2 / C3 are upsampled and C5 is pooled;
with patch 14 every level is resampled (C2 / C3 upsampled, C4 / C5 adaptively max-pooled); with patch 32, C5
is native and C2..C4 are upsampled.

The resampling has no parameters on purpose: a frozen encoder stays entirely fixed, and every trainable
parameter of a run sits in the head, whatever the encoder. The channels of a computed level are those of its
source. C0 is always the input image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

NUM_LEVELS = 6  # C0..C5


@dataclass(frozen=True)
class Level:
    """How one level ``C{index}`` reaches a head."""

    index: int
    channels: int
    stride: int  # 2 ** index: what the head gets
    source: int  # the native level it is computed from (== index when native)
    source_stride: float  # a ViT's token map: its patch size (times 224 / resolution when resized)
    op: str  # "native" | "max-pool" | "bilinear"

    def describe(self) -> str:
        if self.op == "native":
            return f"C{self.index}: {self.channels} ch, stride {self.stride}"
        if self.source_stride == 2**self.source:
            return (
                f"C{self.index}: {self.channels} ch, stride {self.stride} ({self.op} of native C{self.source} at "
                f"stride {self.source_stride})"
            )
        return (
            f"C{self.index}: {self.channels} ch, stride {self.stride} ({self.op} of the encoder's token map at "
            f"stride {self.source_stride:.4g})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def plan_levels(
    native: Mapping[int, tuple[int, int]], wanted: Sequence[int] = range(NUM_LEVELS)
) -> tuple[Level, ...]:
    """Decide, for each wanted level, its source level and resampling.

    Args:
        native: the encoder's levels ``{k: (channels, stride)}`` for k in 1..5 (C0 is the input).
        wanted: level indices to plan, in 0..5.
    """
    candidates = sorted(k for k in native if 1 <= k < NUM_LEVELS)
    if not candidates:
        raise ValueError("the encoder declares no feature level between C1 and C5")
    plan = []
    for k in wanted:
        if k == 0:
            plan.append(Level(0, 3, 1, 0, 1, "native"))
            continue
        target = 2**k
        below = [j for j in candidates if native[j][1] <= target]
        if below:  # the deepest map at or below the target stride
            source = max(below, key=lambda j: (native[j][1], j))
        else:  # the finest map above it
            source = min(candidates, key=lambda j: (native[j][1], j))
        channels, stride = native[source]
        op = "native" if stride == target else "max-pool" if stride < target else "bilinear"
        plan.append(Level(k, channels, target, source, stride, op))
    return tuple(plan)


def level_size(height: int, width: int, index: int) -> tuple[int, int]:
    """Spatial size of level ``index`` for an input of ``height x width`` (what strided convolutions give)."""
    s = 2**index
    return -(-height // s), -(-width // s)


def resample(feature: torch.Tensor, level: Level, input_hw: tuple[int, int]) -> torch.Tensor:
    """The map of ``level`` from its source feature (parameter-free).

    The operation follows the actual sizes (the plan's ``op`` names the usual case): a map of the level's size
    is passed on, a larger one is max-pooled (adaptive windows when the ratio is not an integer, e.g. a
    stride-14 ViT map to stride 16), a smaller one bilinearly upsampled (``align_corners=False``).
    """
    size = level_size(*input_hw, level.index)
    if level.index == 0 or tuple(feature.shape[-2:]) == size:
        return feature
    if feature.shape[-2] >= size[0] and feature.shape[-1] >= size[1]:
        return F.adaptive_max_pool2d(feature, size)
    return F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
