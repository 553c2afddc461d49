"""The encoder of a spec as a module: :func:`build_encoder` (weights loaded) and :class:`CXRBackbone`, the
mmengine / OpenMMLab backbone every head of the suite sits on (frozen or finetuned, levels C0..C5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from benchmark.backbones.levels import NUM_LEVELS, Level, plan_levels, resample
from benchmark.backbones.resnet import (
    ResNetFeatures,
    imagenet_weights_path,
    load_state_dict_file,
    normalize_keys,
)
from benchmark.backbones.spec import BackboneInfo, resolve
from benchmark.backbones.weights import check_and_load, read_once


def build_encoder(spec: str | BackboneInfo) -> tuple[nn.Module, BackboneInfo]:
    """Build the encoder of a spec with its weights loaded (``encoder.native`` lists its own levels)."""
    r = resolve(spec.spec if isinstance(spec, BackboneInfo) else spec, load=True)
    info = r.info
    if info.arch.startswith("timm:"):
        from benchmark.backbones.timm_models import TimmFeatures

        model = TimmFeatures(info.arch[len("timm:") :], state=r.state, pretrained=info.tag == "pretrained")
        return model, info
    if info.encoder:
        from benchmark.backbones.transformer_models import build

        return build(info.encoder, r.state, info.path or info.spec), info
    model = ResNetFeatures(info.arch, r.num_stages)
    if info.tag == "imagenet":
        path = imagenet_weights_path(info.arch)
        state = read_once(path, ("imagenet",), lambda: normalize_keys(load_state_dict_file(path)))
        check_and_load(model, state, str(path))
    elif info.tag == "file":
        check_and_load(model, r.state, info.path)
    return model, info


class CXRBackbone(nn.Module):
    """The encoder of a spec as an OpenMMLab backbone, frozen or finetuned.

    Registered (by ``benchmark.openmmlab``) in mmengine's root MODELS registry, which mmdet's and mmseg's
    registries both fall back to.

    Args:
        spec: backbone spec (see module docstring).
        out_indices: which of C0..C5 to return, in increasing depth; each at stride ``2**k`` with the
            channels ``BackboneInfo.channels[k]`` (levels the encoder lacks are resampled, parameter-free).
        frozen: encoder weights and BatchNorm statistics stay fixed for the whole run (eval mode, no grads).
        warmup_frozen_iters: finetune only; the encoder is frozen for this many iterations first
            (``FinetuneWarmupHook`` unfreezes it).
        input_norm: ``{"mean": [3], "std": [3]}``: the input arrives on [0, 1] and gets this per-channel
            normalisation after the grey channel is repeated (see :func:`normalization_plan`); None: the
            data preprocessor has normalised already.
    """

    def __init__(
        self,
        spec: str,
        out_indices: Sequence[int] = (3, 4, 5),
        frozen: bool = False,
        warmup_frozen_iters: int = 0,
        input_norm: Mapping | None = None,
    ) -> None:
        super().__init__()
        if frozen and warmup_frozen_iters:
            raise ValueError("warmup_frozen_iters only applies to finetuning (frozen=False)")
        if (
            not out_indices
            or any(i not in range(NUM_LEVELS) for i in out_indices)
            or list(out_indices) != sorted(out_indices)
        ):
            raise ValueError(f"out_indices must be increasing indices of C0..C5, got {out_indices}")
        self.encoder, self.info = build_encoder(spec)
        self.resolution = self.info.resolution
        self.out_indices = tuple(out_indices)
        self.levels: tuple[Level, ...] = plan_levels(self.encoder.native, self.out_indices)
        self.channels = [lv.channels for lv in self.levels]
        self.strides = [lv.stride for lv in self.levels]
        if input_norm is not None:
            self.register_buffer(
                "input_mean", torch.tensor(input_norm["mean"]).view(1, -1, 1, 1), persistent=False
            )
            self.register_buffer(
                "input_std", torch.tensor(input_norm["std"]).view(1, -1, 1, 1), persistent=False
            )
        else:
            self.input_mean = self.input_std = None
        self.frozen = frozen
        self.warmup_frozen_iters = int(warmup_frozen_iters)
        self.encoder_frozen = False
        self.set_encoder_frozen(frozen or self.warmup_frozen_iters > 0)

    def init_weights(self) -> None:
        """Weights come from the spec; OpenMMLab's initialisers must not touch them."""

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Freeze (no grads, BatchNorm in eval mode) or unfreeze the encoder."""
        if self.frozen and not frozen:
            raise RuntimeError("a backbone built with frozen=True cannot be unfrozen")
        self.encoder_frozen = frozen
        # A permanently frozen encoder has no gradients at all. A warm-up freeze relies on the no_grad
        # forward instead and keeps requires_grad: DDP registers only the parameters that require grads
        # when it wraps the model, and the encoder must be among them once the warm-up ends.
        for p in self.encoder.parameters():
            p.requires_grad_(not self.frozen)
        if frozen:
            self.encoder.eval()
        else:
            self.encoder.train(self.training)

    def train(self, mode: bool = True) -> CXRBackbone:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.shape[1] == 1:  # grey-scale input, normalised with one mean/std: repeat to 3 channels
            x = x.expand(-1, 3, -1, -1)
        if self.input_mean is not None:
            x = (x - self.input_mean) / self.input_std
        hw = (x.shape[-2], x.shape[-1])
        inp = x
        if self.resolution:  # SPEC#res=N: the encoder sees the input resized (shorter side N, bilinear)
            scale = self.resolution / min(hw)
            size = (round(hw[0] * scale), round(hw[1] * scale))
            inp = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if self.encoder_frozen:
            with torch.no_grad():
                feats = self.encoder(inp)
        else:
            feats = self.encoder(inp)
        feats[0] = x  # C0 is the input as the head gets it; the other levels go to the input's level sizes
        return tuple(resample(feats[lv.source], lv, hw) for lv in self.levels)
