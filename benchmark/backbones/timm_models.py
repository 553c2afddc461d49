"""Any timm model with ``features_only=True`` as a cxrbench encoder.

Specs (see :func:`benchmark.backbones.parse_spec`):

- ``timm:NAME`` - random initialisation (``pretrained=False``; depends on the run's seed);
- ``timm:NAME.TAG`` - timm's pretrained weights for that tag, and ``timm:hf-hub:ORG/NAME[@REVISION]`` - a timm
  model on the Hugging Face Hub (its ``config.json`` names the architecture). Refused in offline mode, where a
  local file is the way. timm decides where the weights come from and downloads them into its usual caches
  (Hugging Face Hub's, or torch.hub's ``checkpoints`` folder for a URL), but cxrbench reads the downloaded
  file itself, through its one loader (:func:`pretrained_state`), and hands timm the tensors;
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

from benchmark.backbones.errors import BackboneKeyError, TimmError, WeightsFileError
from benchmark.backbones.formats import Conversion, normalize_keys, show_keys
from benchmark.backbones.weights import load_checkpoint, load_safetensors
from cxrcore.weights import _first_line

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def _timm():
    try:
        import timm
    except ImportError as e:  # pragma: no cover - timm is a dependency; this guards broken installs
        raise TimmError(
            "timm is not installed: `pip install timm` (it is a cxrbench dependency; re-run scripts/setup.sh)"
        ) from e
    return timm


def hub_id(name: str) -> str | None:
    """The Hub repo id (``ORG/NAME[@REVISION]``) of a model name ``hf-hub:ORG/NAME``; None for a registry name."""
    _timm()
    from timm.models import parse_model_name

    try:
        source, model_id = parse_model_name(name)
    except ValueError as e:
        raise TimmError(str(e)) from None
    if source is None:
        return None
    if source != "hf-hub":
        raise TimmError(f"timm model source '{source}:' is not served here; a local folder is timm:ARCH:FOLDER")
    return model_id


def split_name(name: str) -> tuple[str, str | None]:
    """``convnext_tiny.fb_in1k`` -> (``convnext_tiny``, ``fb_in1k``); checks the model exists.

    A Hub name ``hf-hub:ORG/NAME`` is returned whole with no tag (timm reads its architecture from the Hub's
    ``config.json`` whenever the model is built)."""
    timm = _timm()
    from timm.models import split_model_name_tag

    if hub_id(name) is not None:
        return name, None
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


def pretrained_weights_file(name: str) -> Path:
    """The weights file timm would load for ``timm.create_model(name, pretrained=True)``, downloaded into (or
    found in) timm's caches exactly as timm does it: timm's own resolution of the pretrained source
    (``_resolve_pretrained_source``), Hugging Face Hub's cache for a Hub source (a ``.safetensors`` alternative
    first, as timm's ``load_state_dict_from_hf``), torch.hub's ``checkpoints`` folder for a URL. A file already
    in the cache is not downloaded again."""
    _timm()
    from timm.models import _builder, _hub
    from timm.models._factory import _resolve_model_source

    try:
        arch, cfg, _ = _resolve_model_source(name, None, {})
        cfg = _builder.resolve_pretrained_cfg(arch, cfg).to_dict()
        load_from, where = _builder._resolve_pretrained_source(cfg)
    except Exception as e:
        raise TimmError(f"timm cannot resolve the pretrained weights of '{name}': {_first_line(e)}") from e
    custom = cfg.get("custom_load")
    if load_from == "hf-hub":
        repo, filename = where if isinstance(where, (list, tuple)) else (where, _hub.HF_WEIGHTS_NAME)
        if not (isinstance(where, (list, tuple)) and custom == "hf"):  # timm's choice in load_pretrained
            return _hub_weights_file(name, repo, filename)
    elif load_from == "url" and not custom:
        try:
            return Path(
                _hub.download_cached_file(
                    where, check_hash=_builder._CHECK_HASH, progress=_builder._DOWNLOAD_PROGRESS
                )
            )
        except Exception as e:
            raise TimmError(f"could not download the weights of '{name}' from {where}: {_first_line(e)}") from e
    if not load_from:
        raise TimmError(f"timm has no pretrained weights for '{name}'; timm:{arch} is the random initialisation")
    how = "with model-specific code (custom_load)" if custom else f"from a '{load_from}' source"
    raise TimmError(
        f"timm reads the weights of '{name}' {how} ({where!r:.120}), which cxrbench does not read: convert them "
        f"to a state dict in timm's layout and pass timm:{arch}:FILE"
    )


def _hub_weights_file(name: str, model_id: str, filename: str) -> Path:
    from huggingface_hub.utils import EntryNotFoundError
    from timm.models import _hub

    repo, revision = _hub.hf_split(model_id)
    tries = [] if filename.endswith(".safetensors") else list(_hub._get_safe_alternatives(filename))
    try:
        for safe in tries:
            try:
                return Path(_hub.hf_hub_download(repo_id=repo, filename=safe, revision=revision))
            except EntryNotFoundError:
                pass
        return Path(_hub.hf_hub_download(repo_id=repo, filename=filename, revision=revision))
    except Exception as e:
        raise TimmError(
            f"could not download the weights of '{name}' ({model_id}, {filename}) from the Hugging Face Hub: "
            f"{_first_line(e)}"
        ) from e


def pretrained_state(name: str) -> Mapping[str, torch.Tensor]:
    """timm's pretrained weights for ``name``, downloaded by :func:`pretrained_weights_file` and read through
    cxrbench's one loader: the object ``torch.load(weights_only=True)`` would give timm (after the loader's
    check: depth, sizes, globals), or the tensors of a safetensors file.

    Raises:
        WeightsFileError: the downloaded file is refused (the message names it).
    """
    path = pretrained_weights_file(name)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    obj = load_checkpoint(path)
    if not isinstance(obj, Mapping):
        raise WeightsFileError(
            f"{path}: expected a state dict (the weights timm downloaded for '{name}'), got {type(obj).__name__}"
        )
    return obj


class TimmFeatures(nn.Module):
    """A timm ``features_only`` model returning ``{k: Ck}`` for its native levels (plus C0, the input).

    Args:
        name: timm model name, optionally with a pretrained tag (``convnext_tiny.fb_in1k``), or ``hf-hub:ID``.
        state: weights in timm's layout, already checked by :func:`check_state`; None: random or tag.
        pretrained: load timm's pretrained weights for the tag / Hub model (read by :func:`pretrained_state`;
            timm then treats them exactly as its own download: checkpoint filter, classifier dropped).
    """

    def __init__(self, name: str, state: Mapping[str, torch.Tensor] | None = None, pretrained: bool = False):
        super().__init__()
        timm = _timm()
        base, _ = split_name(name)
        indices, self.native = feature_plan(base)
        kwargs: dict = dict(features_only=True, out_indices=indices)
        if state is not None:
            kwargs.update(pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(state_dict=dict(state)))
        elif pretrained:
            # the state dict overlay is timm's first choice of source unless the cfg says 'hf-hub' (a Hub name)
            downloaded = dict(pretrained_state(name))
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(state_dict=downloaded, source=None))
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
