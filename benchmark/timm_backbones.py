"""Any timm model with ``features_only=True`` as a cxrbench encoder.

Specs (see :func:`benchmark.backbones.parse_spec`):

- ``timm:NAME`` - random initialisation (``pretrained=False``; depends on the run's seed);
- ``timm:NAME.TAG`` - timm's pretrained weights for that tag (downloaded by timm / Hugging Face Hub when
  online; refused in offline mode, where a local file is the way);
- ``timm:NAME:FILE`` - weights from a local file in timm's key layout (``model.state_dict()`` of
  ``timm.create_model(NAME)``, or a Hugging Face timm folder holding ``config.json`` and
  ``model.safetensors`` / ``pytorch_model.bin``). The classifier is dropped; every other key must match.

Levels come from the model's ``feature_info``: a stage with reduction ``2**k`` is level ``Ck``; when several
stages share a reduction (a ViT's blocks), the deepest one is used.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from benchmark.formats import Conversion, normalize_keys, show_keys
from benchmark.weights import BackboneError

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


class TimmError(BackboneError):
    """A timm spec cannot be served."""


def _timm():
    try:
        import timm
    except ImportError as e:  # pragma: no cover - timm is a dependency; this guards broken installs
        raise TimmError(
            "timm is not installed: `pip install timm` (it is a cxrbench dependency; re-run scripts/setup.sh)"
        ) from e
    return timm


def split_name(name: str) -> tuple[str, str | None]:
    """``convnext_tiny.fb_in1k`` -> (``convnext_tiny``, ``fb_in1k``); checks the model exists."""
    timm = _timm()
    from timm.models import split_model_name_tag

    base, tag = split_model_name_tag(name)
    if not timm.is_model(base):
        close = timm.list_models(f"*{base.split('_')[0]}*")[:10]
        raise TimmError(
            f"unknown timm model '{base}'" + (f"; similar names: {', '.join(close)}" if close else "")
        )
    return base, (tag or None)


def _meta_model(name: str, **kwargs) -> nn.Module:
    """The model without allocating or initialising weights (for feature_info and the key layout)."""
    timm = _timm()
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, **kwargs)
    except Exception as e:
        raise TimmError(f"timm cannot build '{name}': {e}") from e


def feature_plan(name: str) -> tuple[tuple[int, ...], dict[int, tuple[int, int]]]:
    """``out_indices`` to ask timm for, and the native levels ``{k: (channels, stride)}`` they give."""
    model = _meta_model(name)
    info = getattr(model, "feature_info", None)
    if not info:
        raise TimmError(
            f"timm model '{name}' declares no feature_info: it does not support features_only=True"
        )
    by_level: dict[int, tuple[int, int, int]] = {}
    for i, f in enumerate(info):
        reduction = int(f["reduction"])
        k = round(math.log2(reduction)) if reduction > 0 else -1
        if 2**k != reduction:
            raise TimmError(f"timm model '{name}': stage {i} has reduction {reduction}, not a power of two")
        if 1 <= k <= 5:
            by_level[k] = (i, int(f["num_chs"]), reduction)  # later stages overwrite: the deepest wins
    if not by_level:
        raise TimmError(f"timm model '{name}' has no feature level at a stride between 2 and 32")
    indices = tuple(i for i, _, _ in sorted(by_level.values()))
    return indices, {k: (c, s) for k, (_, c, s) in sorted(by_level.items())}


def resolve_weights_path(path: Path) -> Path:
    """A weights file, or the weights file inside a Hugging Face timm folder."""
    if path.is_dir():
        for name in HF_WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise TimmError(f"{path}: no {' / '.join(HF_WEIGHT_FILES)} in this folder")
    return path


def read_hf_architecture(folder: Path) -> str | None:
    """The timm architecture a Hugging Face timm folder declares in its config.json, if any."""
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    arch = data.get("architecture") if isinstance(data, dict) else None
    return arch if isinstance(arch, str) else None


def check_state(name: str, state: Mapping[str, torch.Tensor], source: str) -> Conversion:
    """Match a state dict to timm's key layout for ``name``: classifier dropped, every other key required."""
    from benchmark.backbones import BackboneKeyError

    expected = {k: v.shape for k, v in _meta_model(name, num_classes=0).state_dict().items()}
    candidates = [dict(state), normalize_keys(state)]
    state = max(candidates, key=lambda s: len(expected.keys() & s.keys()))
    full = _meta_model(name)
    classifier = full.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    conv = Conversion("timm", {}, prefix="")
    unexpected = []
    for k, v in state.items():
        if k in expected:
            conv.state[k] = v
        elif any(k.startswith(c + ".") for c in classifier):
            conv.ignored.setdefault("classifier keys", []).append(k)
        else:
            unexpected.append(k)
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    if missing or unexpected:
        raise BackboneKeyError(
            f"{source}: weights do not match timm's '{name}' layout.\n"
            f"  missing keys ({len(missing)}): {show_keys(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {show_keys(sorted(unexpected))}"
        )
    for k, v in conv.state.items():
        if tuple(v.shape) != tuple(expected[k]):
            raise BackboneKeyError(
                f"{source}: shape mismatch for key '{k}': file has {tuple(v.shape)}, timm's '{name}' expects "
                f"{tuple(expected[k])}"
            )
    return conv


class TimmFeatures(nn.Module):
    """A timm ``features_only`` model returning ``{k: Ck}`` for its native levels (plus C0, the input).

    Args:
        name: timm model name, optionally with a pretrained tag (``convnext_tiny.fb_in1k``).
        state: weights in timm's layout, already checked by :func:`check_state`; None: random or tag.
        pretrained: load timm's pretrained weights for the tag.
    """

    def __init__(self, name: str, state: Mapping[str, torch.Tensor] | None = None, pretrained: bool = False):
        super().__init__()
        timm = _timm()
        base, _ = split_name(name)
        indices, self.native = feature_plan(base)
        kwargs: dict = dict(features_only=True, out_indices=indices)
        if state is not None:
            kwargs.update(pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(state_dict=dict(state)))
        else:
            kwargs.update(pretrained=pretrained)
        try:
            self.model = timm.create_model(base if state is not None else name, **kwargs)
        except Exception as e:
            raise TimmError(f"timm could not build '{name}': {str(e).splitlines()[0]}") from e
        if isinstance(getattr(self.model, "pretrained_cfg", None), dict):
            self.model.pretrained_cfg.pop("state_dict", None)  # do not keep a second reference to the weights
        self.name = name

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        feats = self.model(x)
        out = {0: x}
        out.update(zip(self.native, feats))
        return out


def offline() -> bool:
    return os.environ.get("CXRBENCH_OFFLINE", "") not in ("", "0")
