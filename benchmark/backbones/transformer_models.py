"""Transformer encoders of released checkpoints: plain ViTs (timm) and Swin (Hugging Face transformers).

:mod:`benchmark.backbones.formats` converts a checkpoint's image encoder to one of two layouts; this module infers the
architecture from the converted keys (plus the hints a format or folder gives) and builds it:

- family ``vit`` - timm's ``VisionTransformer`` (timm/models/vision_transformer.py). The level it delivers is
  the LAST block's patch tokens after the encoder's final LayerNorm (``forward_features``; the class token is
  dropped), reshaped to a map at the patch size's stride (14, 16 or 32). :mod:`benchmark.backbones.levels` resamples
  that one map to C2..C5 without parameters. The model is built with ``dynamic_img_size=True``: when the
  input's patch grid differs from the training grid, timm's ``resample_abs_pos_embed`` interpolates the
  position embeddings (bicubic, ``antialias=True``, class-token embedding kept) at every forward; at the
  training grid they are used as they are. A side that is not a multiple of the patch size loses its last
  ``side % patch`` pixels (the patch convolution's floor, as in timm with ``dynamic_img_pad=False``).
- family ``swin-hf`` - transformers' ``SwinModel`` (transformers/models/swin/modeling_swin.py). Its four
  stages are C2..C5 by reduction (4, 8, 16, 32): the stage outputs before patch merging
  (``output_hidden_states_before_downsampling``); C5 is the last stage after the final LayerNorm (the
  model's ``last_hidden_state``, what the method itself pooled). The input is padded to the window size by the
  model itself.

The number of attention heads is not in a ViT's weights: a folder's config.json names it, otherwise it is
``embed_dim // 64`` (every ViT-Ti/S/B/L, OpenAI's CLIP ``vision_heads = vision_width // 64``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import partial

import torch
from torch import nn

from benchmark.backbones.errors import BackboneError, TransformerConfigError
from benchmark.backbones.weights import check_and_load

HEAD_DIM = 64
TOKENS = "last block's patch tokens after the final LayerNorm (class token dropped)"
POS_EMBED = (
    "bicubic (timm resample_abs_pos_embed, antialias) from the training grid to the input's grid when they differ"
)


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in state if (m := rx.match(k))}
    if found and found != set(range(len(found))):
        raise TransformerConfigError(f"blocks are not numbered 0..{len(found) - 1}: {sorted(found)}")
    return len(found)


def _need(state: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise TransformerConfigError(f"{source}: the image encoder has no '{key}' after conversion")
    return state[key]


def vit_config(state: Mapping[str, torch.Tensor], hints: Mapping, source: str) -> dict:
    """The timm ``VisionTransformer`` arguments that the converted keys (and hints) describe."""
    w = _need(state, "patch_embed.proj.weight", source)
    dim, chans, ph, pw = w.shape
    if ph != pw or chans != 3:
        raise TransformerConfigError(f"{source}: patch embedding of shape {tuple(w.shape)} (want square, 3 channels)")
    depth = _count(state, r"^blocks\.(\d+)\.")
    class_token = "cls_token" in state
    prefix = 1 if class_token else 0
    n = _need(state, "pos_embed", source).shape[1] - prefix
    grid = math.isqrt(n)
    if grid * grid != n:
        raise TransformerConfigError(f"{source}: {n} position embeddings are not a square grid")
    heads = int(hints.get("num_heads") or 0) or dim // HEAD_DIM
    if dim % heads or (not hints.get("num_heads") and dim % HEAD_DIM):
        raise TransformerConfigError(f"{source}: cannot infer the attention heads of a {dim}-wide ViT")
    return {
        "family": "vit",
        "patch": int(ph),
        "embed_dim": int(dim),
        "depth": depth,
        "num_heads": heads,
        "mlp_ratio": _need(state, "blocks.0.mlp.fc1.weight", source).shape[0] / dim,
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "layer_scale": "blocks.0.ls1.gamma" in state,
        "pre_norm": "norm_pre.weight" in state,
        "final_norm": "norm.weight" in state,
        "class_token": class_token,
        "act": hints.get("act", "gelu"),
        "eps": float(hints.get("eps", 1e-6)),
        "train_grid": grid,
        "train_resolution": grid * int(ph),
        "tokens": TOKENS,
        "pos_embed": POS_EMBED,
    }


def swin_config(state: Mapping[str, torch.Tensor], hints: Mapping, source: str) -> dict:
    """The transformers ``SwinConfig`` fields that the keys describe (heads and window from the bias tables)."""
    w = _need(state, "embeddings.patch_embeddings.projection.weight", source)
    dim, _, patch, _ = w.shape
    stages = _count(state, r"^encoder\.layers\.(\d+)\.")
    depths, heads = [], []
    window = None
    for i in range(stages):
        depths.append(_count(state, rf"^encoder\.layers\.{i}\.blocks\.(\d+)\."))
        table = _need(state, f"encoder.layers.{i}.blocks.0.attention.self.relative_position_bias_table", source)
        heads.append(int(table.shape[1]))
        window = (math.isqrt(table.shape[0]) + 1) // 2
    return {
        "family": "swin-hf",
        "patch": int(patch),
        "embed_dim": int(dim),
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "mlp_ratio": _need(state, "encoder.layers.0.blocks.0.intermediate.dense.weight", source).shape[0] / dim,
        "qkv_bias": "encoder.layers.0.blocks.0.attention.self.query.bias" in state,
        "eps": float(hints.get("eps", 1e-5)),
        "train_resolution": int(hints.get("resolution", 224)),
        "levels": "stage outputs before patch merging; C5 after the final LayerNorm",
    }


def encoder_config(family: str, state: Mapping[str, torch.Tensor], hints: Mapping, source: str) -> dict:
    return (vit_config if family == "vit" else swin_config)(state, hints, source)


def arch_name(config: Mapping) -> str:
    if config["family"] == "vit":
        return f"vit-d{config['embed_dim']}-l{config['depth']}-p{config['patch']}-{config['train_resolution']}"
    return f"swin-d{config['embed_dim']}-w{config['window_size']}-p{config['patch']}"


def native_levels(config: Mapping, resolution: int | None = None, protocol: int = 224) -> dict[int, tuple[int, float]]:
    """``{k: (channels, stride)}``; a ViT's one map sits at the level nearest its stride.

    With ``resolution`` (the encoder runs on the input resized to that side) strides are those on a
    ``protocol``-px input.
    """
    scale = protocol / resolution if resolution else 1.0
    if config["family"] == "vit":
        k = min(5, max(1, round(math.log2(config["patch"]))))
        return {k: (config["embed_dim"], config["patch"] * scale if scale != 1.0 else config["patch"])}
    out = {}
    for i in range(len(config["depths"])):
        k = round(math.log2(config["patch"])) + i
        if 1 <= k <= 5:
            out[k] = (config["embed_dim"] * 2**i, 2**k * scale if scale != 1.0 else 2**k)
    return out


class ViTFeatures(nn.Module):
    """A timm VisionTransformer returning ``{0: input, k: token map}`` (see the module docstring)."""

    def __init__(self, config: Mapping, state: Mapping[str, torch.Tensor] | None, source: str = "weights"):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        c = config
        self.model = VisionTransformer(
            img_size=c["train_resolution"],
            patch_size=c["patch"],
            in_chans=3,
            num_classes=0,
            global_pool="token" if c["class_token"] else "",
            embed_dim=c["embed_dim"],
            depth=c["depth"],
            num_heads=c["num_heads"],
            mlp_ratio=c["mlp_ratio"],
            qkv_bias=c["qkv_bias"],
            init_values=1.0 if c["layer_scale"] else None,
            class_token=c["class_token"],
            pre_norm=c["pre_norm"],
            final_norm=c["final_norm"],
            fc_norm=False,
            dynamic_img_size=True,
            act_layer=c["act"],
            norm_layer=partial(nn.LayerNorm, eps=c["eps"]),
        )
        if state is not None:
            check_and_load(self.model, state, source)
        self.level = next(iter(native_levels(c)))
        self.native = native_levels(c)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens :]
        gh, gw = self.model.patch_embed.dynamic_feat_size(x.shape[-2:])
        fmap = tokens.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
        return {0: x, self.level: fmap}


class SwinFeatures(nn.Module):
    """A transformers SwinModel returning ``{0: input, 2..5: stages}`` (see the module docstring)."""

    def __init__(self, config: Mapping, state: Mapping[str, torch.Tensor] | None, source: str = "weights"):
        super().__init__()
        from transformers import SwinConfig, SwinModel

        c = config
        hf = SwinConfig(
            image_size=c["train_resolution"],
            patch_size=c["patch"],
            num_channels=3,
            embed_dim=c["embed_dim"],
            depths=list(c["depths"]),
            num_heads=list(c["num_heads"]),
            window_size=c["window_size"],
            mlp_ratio=c["mlp_ratio"],
            qkv_bias=c["qkv_bias"],
            layer_norm_eps=c["eps"],
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            drop_path_rate=0.0,
        )
        self.model = SwinModel(hf, add_pooling_layer=False)
        self.config = dict(c)
        if state is not None:
            from benchmark.backbones.formats import swin_to_new

            own = self.model.state_dict()
            if "encoder.layers.0.blocks.0.attention.self.query.weight" not in own:  # transformers >= 5 names
                state = {swin_to_new(k): v for k, v in state.items()}
            state = dict(state) | {k: v for k, v in own.items() if k.endswith("relative_position_index")}
            check_and_load(self.model, state, source)
        self.native = native_levels(c)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        c = self.config
        reduction = c["patch"] * 2 ** (len(c["depths"]) - 1)
        if min(x.shape[-2:]) < c["window_size"] * reduction <= c["train_resolution"]:
            # transformers shrinks the window of a stage smaller than it, but not its relative-position bias
            raise BackboneError(
                f"this Swin (window {c['window_size']}, last stage at stride {reduction}) needs inputs of at "
                f"least {c['window_size'] * reduction} px, got {tuple(x.shape[-2:])}: prepare the data at that "
                "size (--size) or run the encoder there (SPEC#res=N)"
            )
        out = self.model(
            pixel_values=x, output_hidden_states=True, output_hidden_states_before_downsampling=True
        )
        stages = out.reshaped_hidden_states[1:]  # [0] is the patch embedding
        feats = {0: x}
        for k, fmap in zip(sorted(self.native), stages):
            feats[k] = fmap
        last = max(self.native)
        b, c, h, w = feats[last].shape
        feats[last] = out.last_hidden_state.transpose(1, 2).reshape(b, c, h, w)
        return feats


def build(config: Mapping, state: Mapping[str, torch.Tensor] | None, source: str = "weights") -> nn.Module:
    return (ViTFeatures if config["family"] == "vit" else SwinFeatures)(config, state, source)
