"""Backbone specs -> encoders that return multi-scale features.

A spec names an architecture and its weights in timm's ``arch.tag`` style, points at a file or folder, or
names a timm model (``cxrbench backbones`` lists them all):

- ``resnet50.random`` / ``resnet18.random`` / ``resnet34.random``: torchvision initialisation (it depends
  on the run's seed).
- ``resnet50.imagenet`` (and 18/34): torchvision's ImageNet weights (``IMAGENET1K_V1``), read from
  ``$CXRBENCH_WEIGHTS_DIR`` or the torch hub cache, downloaded there when the network allows.
- ``PATH`` (a ``.pt/.pth/.safetensors/.bin/.ckpt`` file or a folder): the checkpoint format is detected
  from the keys (:mod:`benchmark.backbones.formats`: LoVT / ConVIRT / CLIP, GLoRIA, MGCA, BioViL, BioViL-T, MedKLIP,
  OpenMMLab, torchvision / timm ResNet) and the image encoder's ResNet is extracted. ``FORMAT:PATH`` insists
  on one format; ``resnet18:PATH`` on a torchvision layout of that depth. A Hugging Face timm folder
  (``config.json`` with ``architecture``) is a timm model with its weights.
- ``timm:NAME`` (random), ``timm:NAME.TAG`` (timm's pretrained weights), ``timm:NAME:FILE`` (local weights):
  any timm model that supports ``features_only=True`` (:mod:`benchmark.backbones.timm_models`).
- A suffix ``#norm=NAME`` chooses the input normalisation: ``task`` (the protocol: the task's own training
  statistics), ``declared`` (the convention the checkpoint format declares; the default), or ``imagenet`` /
  ``half`` / ``unit``.

Every encoder delivers levels ``C0..C5`` at strides 1..32 (C0 the input, C1 the stem, C2..C5 ResNet's
``layer1..layer4``); levels an encoder lacks are resampled from its own (:mod:`benchmark.backbones.levels`). Which
levels a head receives is its ``out_indices``; their channels are declared in :class:`BackboneInfo`. Loading
never executes code from a checkpoint (:mod:`benchmark.backbones.weights`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from benchmark.backbones import formats as fmts
from benchmark.backbones.levels import NUM_LEVELS, Level, plan_levels, resample
from benchmark.backbones.weights import BackboneError, UnsafeCheckpointError, WeightsFileError, load_weights
from cxrcore.hashing import sha256_file

__all__ = [
    "ARCHS",
    "BackboneError",
    "BackboneInfo",
    "BackboneKeyError",
    "CXRBackbone",
    "UnsafeCheckpointError",
    "WeightsFileError",
    "WeightsUnavailableError",
    "build_encoder",
    "parse_spec",
]

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")
# Prefixes that training frameworks put in front of the encoder's own keys.
STRIP_PREFIXES = fmts.STRIP_PREFIXES
# Released files recognised by name inside a folder (e.g. a Hugging Face snapshot that also holds a text model).
KNOWN_FILES = {
    "biovil_image_resnet50_proj_size_128.pt": "biovil",
    "biovil_t_image_model_proj_size_128.pt": "biovil-t",
}
NORM_CHOICES = ("task", "declared", *fmts.NAMED_NORMS)
HF_PREFERRED = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)


class BackboneKeyError(BackboneError):
    """The weights do not match the architecture's keys or shapes."""


class WeightsUnavailableError(BackboneError):
    """Pretrained weights are not on disk and could not be downloaded."""


@dataclass(frozen=True)
class Arch:
    """A known encoder architecture."""

    name: str
    channels: tuple[int, ...]  # C0..C5
    strides: tuple[int, ...]  # C0..C5


ARCHS: dict[str, Arch] = {
    "resnet18": Arch("resnet18", (3, 64, 64, 128, 256, 512), (1, 2, 4, 8, 16, 32)),
    "resnet34": Arch("resnet34", (3, 64, 64, 128, 256, 512), (1, 2, 4, 8, 16, 32)),
    "resnet50": Arch("resnet50", (3, 64, 256, 512, 1024, 2048), (1, 2, 4, 8, 16, 32)),
}
TAGS = ("random", "imagenet")


@dataclass(frozen=True)
class BackboneInfo:
    """What a spec resolves to (goes into run keys and records).

    ``channels`` / ``strides`` are those of the levels C0..C5 exactly as :class:`CXRBackbone` delivers them
    (heads size themselves from these); ``levels`` says how each one is obtained.
    """

    spec: str
    arch: str  # resnet18 / resnet34 / resnet50, or timm:NAME
    tag: str  # random | imagenet | pretrained | file
    path: str | None = None
    sha256: str | None = None
    format: str | None = None  # checkpoint format of a file (torchvision, gloria, ..., timm)
    channels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    levels: tuple[str, ...] = ()
    normalization: dict | None = None  # the input convention used instead of the task statistics, if any
    conversion: dict | None = None  # what the format conversion mapped and ignored
    provenance: dict | None = None  # from the JSON sidecar of a `cxrbench pretrain` export (preset, ...)
    # transformers (benchmark.backbones.transformer_models): architecture, training resolution, how tokens and
    # position embeddings are used
    encoder: dict | None = None
    resolution: int | None = None  # SPEC#res=N: the encoder runs on the input resized to N px (else: as given)

    @property
    def name(self) -> str:
        """A file-system friendly name for output folders."""
        at = f"@{self.resolution}px" if self.resolution else ""
        if self.tag != "file":
            return re.sub(r"[^A-Za-z0-9_.@-]+", "-", f"{self.arch}.{self.tag}{at}")
        path = Path(self.path or "weights")
        # exports named generically (OUT/backbone.safetensors of `cxrbench pretrain`) take their run folder's name
        stem = (
            path.parent.name
            if path.stem in ("backbone", "model", "weights") and path.parent.name
            else path.stem
        )
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}-{(self.sha256 or '')[:8]}{at}"

    def to_dict(self) -> dict:
        return asdict(self) | {"name": self.name}

    def describe(self) -> str:
        """One line: what was recognised, how much was mapped, and the input convention."""
        parts = [f"backbone {self.spec}: {self.arch}"]
        if self.conversion:
            c = self.conversion
            fmt = fmts.FORMATS.get(self.format)
            title = fmt.title if fmt else self.format
            ignored = ", ".join(f"{n} {r}" for r, n in c["ignored"].items()) or "none"
            where = f" in {c['container']}" if c.get("container") else ""
            parts.append(
                f"recognised {title} ({self.format}){where}, {c['mapped']} keys mapped, ignored: {ignored}"
            )
        elif self.tag != "file":
            parts.append(f"{self.tag} weights")
        if self.encoder:
            e = self.encoder
            parts.append(
                f"{e['family']} trained at {e['train_resolution']} px, runs at "
                + (f"{self.resolution} px (input resized)" if self.resolution else "the task's input size")
                + "; levels: "
                + ", ".join(self.levels[2:])
            )
        if self.provenance:
            p = self.provenance
            parts.append(
                f"cxrbench pretraining preset {p.get('preset', '?')} ({p['sidecar']}"
                + ("" if p["sha256_matches"] else "; WARNING: its sha256 is not this file's, stale sidecar?")
                + ")"
            )
        parts.append(
            "input: task statistics"
            if self.normalization is None
            else f"input: {self.normalization['name']} convention ({self.normalization['source']})"
        )
        return "; ".join(parts)


def _weights_dir() -> Path:
    env = os.environ.get("CXRBENCH_WEIGHTS_DIR")
    return Path(env) if env else Path(torch.hub.get_dir()) / "checkpoints"


def _imagenet_url(arch: str) -> str:
    import torchvision.models as tvm

    enum = {
        "resnet18": tvm.ResNet18_Weights,
        "resnet34": tvm.ResNet34_Weights,
        "resnet50": tvm.ResNet50_Weights,
    }
    return enum[arch].IMAGENET1K_V1.url


def imagenet_weights_path(arch: str, download: bool | None = None) -> Path:
    """Local path of torchvision's ImageNet weights for ``arch``, downloading them if allowed.

    Raises:
        WeightsUnavailableError: not on disk and the download is off or failed; the message says where
            to put the file.
    """
    url = _imagenet_url(arch)
    filename = url.rsplit("/", 1)[-1]
    candidates = [_weights_dir() / filename, Path(torch.hub.get_dir()) / "checkpoints" / filename]
    for c in candidates:
        if c.is_file():
            return c
    if download is None:
        download = os.environ.get("CXRBENCH_OFFLINE", "") in ("", "0")
    target = candidates[0]
    how = (
        f"Download {url} on a machine with internet access and put it at {target} "
        f"(or set CXRBENCH_WEIGHTS_DIR to the folder holding {filename}), or pass the file itself as the "
        "backbone spec."
    )
    if not download:
        raise WeightsUnavailableError(f"ImageNet weights for {arch} are not on disk (offline mode). {how}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=20) as response:
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
                shutil.copyfileobj(response, tmp)
        digest = sha256_file(tmp.name)
        expected = filename.rsplit("-", 1)[-1].split(".")[0]
        if not digest.startswith(expected):
            os.unlink(tmp.name)
            raise WeightsUnavailableError(
                f"downloaded {url} but its sha256 does not start with {expected}. {how}"
            )
        os.replace(tmp.name, target)
    except OSError as e:
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} are not on disk and downloading failed ({e}). {how}"
        ) from e
    return target


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (safetensors, or a pickle read without running code)."""
    return load_weights(path).state


def normalize_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes shared by all keys and drop the classifier (``fc.*``)."""
    return {k: v for k, v in fmts.normalize_keys(state).items() if not k.startswith("fc.")}


def infer_arch(keys: Sequence[str]) -> str:
    """ResNet depth from torchvision key names (bottleneck blocks have ``conv3``; ResNet-34 has layer3.5)."""
    keys = set(keys)
    if "layer1.0.conv3.weight" in keys:
        return "resnet50"
    if "layer3.5.conv1.weight" in keys:
        return "resnet34"
    if "layer1.0.conv1.weight" in keys:
        return "resnet18"
    sample = ", ".join(sorted(keys)[:5])
    raise BackboneKeyError(
        f"cannot recognise a torchvision ResNet in these keys (first: {sample}). Pass the architecture "
        "explicitly, e.g. resnet50:path/to/file."
    )


def resnet_levels(arch: str, num_stages: int = 4) -> dict[int, tuple[int, int]]:
    """Native levels ``{k: (channels, stride)}`` of a torchvision ResNet with ``num_stages`` stages."""
    a = ARCHS[arch]
    return {k: (a.channels[k], a.strides[k]) for k in range(1, num_stages + 2)}


def _levels_fields(native: Mapping[int, tuple[int, int]]) -> dict:
    plan = plan_levels(native)
    return dict(
        channels=tuple(lv.channels for lv in plan),
        strides=tuple(lv.stride for lv in plan),
        levels=tuple(lv.describe() for lv in plan),
    )


SPEC_OPTIONS = ("norm", "res")


def _split_options(spec: str) -> tuple[str, str, int | None]:
    """``SPEC#norm=NAME#res=N`` (also ``#norm=NAME,res=N``) -> (``SPEC``, ``NAME``, ``N``).

    ``norm`` defaults to ``declared``; ``res`` (the side the encoder runs at) to None: the input as it comes.
    """
    m = re.fullmatch(r"(.+?)#((?:\w+=[\w-]+[#,]?)+)", spec)
    if not m or os.path.exists(spec):
        return spec, "declared", None
    base, text = m.groups()
    options = {}
    for item in filter(None, re.split(r"[#,]", text)):
        key, _, value = item.partition("=")
        if key not in SPEC_OPTIONS:
            raise BackboneError(f"unknown option '{key}' in spec '{spec}'; options: {', '.join(SPEC_OPTIONS)}")
        options[key] = value
    norm = options.get("norm", "declared")
    if norm not in NORM_CHOICES:
        raise BackboneError(
            f"unknown normalisation '{norm}' in spec '{spec}'; choose one of {', '.join(NORM_CHOICES)}"
        )
    res = options.get("res")
    if res is not None and not (res.isdigit() and 16 <= int(res) <= 4096):
        raise BackboneError(f"res={res} in spec '{spec}': give the encoder's input side in pixels, e.g. res=518")
    return base, norm, int(res) if res is not None else None


def _choose_norm(choice: str, declared: fmts.InputNorm | None) -> dict | None:
    if choice == "task":
        return None
    if choice == "declared":
        return declared.to_dict() if declared else None
    return fmts.NAMED_NORMS[choice].to_dict()


def _folder_weights(folder: Path) -> tuple[Path, str | None]:
    """The weights file inside a folder (and the format its name implies, if any)."""
    for name, fmt in KNOWN_FILES.items():
        if (folder / name).is_file():
            return folder / name, fmt
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(files) == 1:
        return files[0], None
    # a Hugging Face / open_clip snapshot often holds the same weights twice: take the safetensors copy
    preferred = [folder / n for n in HF_PREFERRED if folder / n in files]
    if preferred:
        return preferred[0], None
    if not files:
        raise BackboneError(f"{folder}: no weights file ({'/'.join(WEIGHT_SUFFIXES)}) in this folder")
    raise BackboneError(
        f"{folder}: several weights files ({', '.join(p.name for p in files)}); pass the one holding the image "
        "encoder as the spec"
    )


@dataclass
class _Resolved:
    info: BackboneInfo
    state: dict[str, torch.Tensor] | None = None  # converted weights (ResNet trunk or timm layout)
    num_stages: int = 4
    conversion: fmts.Conversion | None = None


def _resolve_timm(spec: str, rest: str, norm: str, load: bool, folder_arch: str | None = None) -> _Resolved:
    from benchmark.backbones import timm_models as tb

    name, _, path_part = rest.partition(":")
    hub = folder_arch is None and name.lower() in ("hf-hub", "hf_hub")
    if folder_arch is not None:
        name, path_part = folder_arch, rest
    elif hub:  # timm:hf-hub:ORG/NAME[@REVISION]: the Hub's config.json names the architecture
        if ":" in path_part:
            raise BackboneError(
                f"spec '{spec}': a Hub model brings its own weights; for a local file use timm:ARCH:FILE, or "
                "pass a downloaded Hub folder (config.json + model.safetensors) as the spec"
            )
        name, path_part = rest, ""
    if hub and tb.offline():  # even its architecture needs the network (config.json)
        raise WeightsUnavailableError(
            f"timm model '{name}' is read from the Hugging Face Hub, which needs the network (offline mode: "
            "CXRBENCH_OFFLINE). Download its folder (config.json + model.safetensors) on a machine with internet "
            "access and pass the folder as the spec."
        )
    base, tag = tb.split_name(name)
    _, native = tb.feature_plan(base)
    fields = _levels_fields(native)
    normalization = _choose_norm(norm, None)
    if not path_part:
        tag_kind = "pretrained" if tag or hub else "random"
        if tag and tb.offline():
            raise WeightsUnavailableError(
                f"timm's pretrained weights for '{name}' need the network (offline mode: CXRBENCH_OFFLINE). "
                f"Save them on a machine with internet access (timm.create_model('{name}', pretrained=True)"
                f".state_dict() to a .safetensors file) and pass timm:{base}:FILE."
            )
        info = BackboneInfo(
            spec, f"timm:{name}", tag_kind, format="timm", normalization=normalization, **fields
        )
        return _Resolved(info)
    path = tb.resolve_weights_path(Path(path_part).expanduser())
    if not path.is_file():
        raise BackboneError(f"backbone weights file not found: {path} (from spec '{spec}')")
    # always checked, even when only parsing: a mismatch should stop a sweep before it trains anything
    conv = tb.check_state(base, load_weights(path).state, str(path))
    state = conv.state if load else None
    info = BackboneInfo(
        spec,
        f"timm:{base}",
        "file",
        str(path.resolve()),
        sha256_file(path),
        "timm",
        normalization=normalization,
        conversion=conv.summary(),
        **fields,
    )
    return _Resolved(info, state, conversion=conv)


def _folder_hints(folder: Path) -> tuple[dict, fmts.InputNorm | None]:
    """What a Hugging Face / open_clip folder's JSON files say that the weights cannot: attention heads,
    LayerNorm eps and activation (config.json), and the input convention (preprocessor_config.json,
    open_clip_config.json)."""

    def read(name: str) -> dict:
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    hints: dict = {}
    config = read("config.json")
    if config.get("model_type") not in ("dinov2", "swin", "vit"):  # e.g. the text model of a BioViL folder
        config = {}
    if isinstance(config.get("num_attention_heads"), int):
        hints["num_heads"] = config["num_attention_heads"]
    if isinstance(config.get("layer_norm_eps"), (int, float)):
        hints["eps"] = float(config["layer_norm_eps"])
    if config.get("hidden_act") in ("gelu", "quick_gelu"):
        hints["act"] = config["hidden_act"]
    if isinstance(config.get("image_size"), int):
        hints["resolution"] = config["image_size"]
    norm = None
    for name, getter in (
        ("preprocessor_config.json", lambda d: (d.get("image_mean"), d.get("image_std"))),
        ("open_clip_config.json", lambda d: tuple((d.get("preprocess_cfg") or {}).get(k) for k in ("mean", "std"))),
    ):
        mean, std = getter(read(name))
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
            norm = fmts.InputNorm("folder", tuple(map(float, mean)), tuple(map(float, std)), f"{folder / name}")
            break
    return hints, norm


def converted_architecture(
    conv: fmts.Conversion, hints: dict, source: str, arch: str | None = None
) -> tuple[str, dict[int, tuple[int, float]], dict | None]:
    """(arch, native levels, transformer config or None) of a converted checkpoint."""
    if conv.family == "resnet":
        arch = arch or infer_arch(list(conv.state))
        return arch, resnet_levels(arch, conv.num_stages), None
    from benchmark.backbones import transformer_models as tfb

    hints = {"resolution": fmts.get_format(conv.format).resolution} | conv.hints | hints
    encoder = tfb.encoder_config(conv.family, conv.state, hints, source)
    return tfb.arch_name(encoder), tfb.native_levels(encoder), encoder


def _resolve_file(spec: str, path: Path, norm: str, fmt: str | None, arch: str | None) -> _Resolved:
    hints: dict = {}
    folder_norm = None
    if path.is_dir():
        from benchmark.backbones.timm_models import read_hf_architecture

        timm_arch = read_hf_architecture(path)
        if timm_arch and fmt is None and arch is None:
            return _resolve_timm(spec, str(path), norm, load=True, folder_arch=timm_arch)
        hints, folder_norm = _folder_hints(path)
        path, implied = _folder_weights(path)
        fmt = fmt or implied
    if not path.is_file():
        raise BackboneError(f"backbone weights file not found: {path} (from spec '{spec}')")
    loaded = load_weights(path)
    conv, arch, native, encoder = validate_state(loaded.state, str(path), fmt, arch, hints)
    declared = fmts.get_format(conv.format).normalization
    if folder_norm is not None and declared is not None:  # the released folder's own preprocessing wins
        declared = fmts.InputNorm(declared.name, folder_norm.mean, folder_norm.std, folder_norm.source)
    summary = conv.summary() | {"container": loaded.container}
    if loaded.placeholders:
        summary["not_loaded_objects"] = list(loaded.placeholders)
    sha256 = sha256_file(path)
    info = BackboneInfo(
        spec,
        arch,
        "file",
        str(path.resolve()),
        sha256,
        conv.format,
        normalization=_choose_norm(norm, declared),
        conversion=summary,
        provenance=read_export_sidecar(path, sha256),
        encoder=encoder,
        **_levels_fields(native),
    )
    return _Resolved(info, conv.state, conv.num_stages, conv)


# what the record keeps of a `cxrbench pretrain` export's sidecar (pretrain/export.py writes it)
SIDECAR_FORMAT = "cxrbench-backbone"
SIDECAR_FIELDS = (
    "preset",
    "description",
    "losses",
    "config_hash",
    "epochs_run",
    "best_epoch",
    "val_loss",
    "created_at",
)


def read_export_sidecar(weights: Path, sha256: str) -> dict | None:
    """Provenance from ``<stem>.json`` beside a weights file written by ``cxrbench pretrain``, else None.

    The weights are loaded like any torchvision file (the sidecar is never needed); this only tells the record
    which preset produced them, and whether the sidecar belongs to these exact weights (its sha256).
    A sidecar that is not JSON or not a cxrbench export is ignored; it never stops a run.
    """
    sidecar = weights.with_suffix(".json")
    if weights.suffix == ".json" or not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        return None
    out = {k: data[k] for k in SIDECAR_FIELDS if k in data}
    return out | {"sidecar": str(sidecar.resolve()), "sha256_matches": data.get("sha256") == sha256}


def resolve(spec: str, load: bool = True) -> _Resolved:
    """Resolve a spec; with ``load``, also read and convert its weights (one read of the file)."""
    base, norm, res = _split_options(spec)
    r = _resolve_base(spec, base, norm, load)
    if res is not None:
        fields = {}
        if r.info.encoder:  # strides on the protocol's 224-px input of the map the encoder gives at `res`
            from benchmark.backbones.transformer_models import native_levels

            fields = _levels_fields(native_levels(r.info.encoder, res))
        r.info = replace(r.info, resolution=res, **fields)
    return r


def _resolve_base(spec: str, base: str, norm: str, load: bool) -> _Resolved:
    if os.path.exists(base):
        return _resolve_file(spec, Path(base), norm, None, None)
    m = re.fullmatch(r"(resnet\d+)\.(\w+)", base)
    if m:
        arch, tag = m.groups()
        if arch not in ARCHS:
            raise BackboneError(f"unknown architecture '{arch}' in spec '{spec}'; known: {', '.join(ARCHS)}")
        if tag not in TAGS:
            raise BackboneError(f"unknown weights tag '{tag}' in spec '{spec}'; known: {', '.join(TAGS)}")
        fields = _levels_fields(resnet_levels(arch))
        return _Resolved(BackboneInfo(spec, arch, tag, normalization=_choose_norm(norm, None), **fields))
    m = re.fullmatch(r"([A-Za-z][\w-]*):(.+)", base)
    if m:
        head, rest = m.groups()
        if head == "timm":
            return _resolve_timm(spec, rest, norm, load)
        if re.fullmatch(r"resnet\d+", head) and head not in ARCHS:
            raise BackboneError(f"unknown architecture '{head}' in spec '{spec}'; known: {', '.join(ARCHS)}")
        if head in ARCHS or head in fmts.FORMATS or head in fmts.FORMAT_ALIASES:
            path = Path(rest).expanduser()
            if not path.exists():
                raise BackboneError(f"backbone weights file not found: {path} (from spec '{spec}')")
            if head in ARCHS:
                return _resolve_file(spec, path, norm, None, head)
            return _resolve_file(spec, path, norm, head, None)
    if Path(base).suffix in WEIGHT_SUFFIXES:
        raise BackboneError(f"backbone weights file not found: {base} (from spec '{spec}')")
    raise BackboneError(
        f"cannot parse backbone spec '{spec}': use ARCH.TAG ({', '.join(ARCHS)} x {', '.join(TAGS)}), a path to a "
        f"{'/'.join(WEIGHT_SUFFIXES)} file or folder, FORMAT:PATH ({', '.join(fmts.FORMATS)}), or timm:MODEL "
        "(see `cxrbench backbones`)"
    )


def parse_spec(spec: str) -> BackboneInfo:
    """Resolve a spec without building the model (reads and hashes a weights file to recognise its format)."""
    return resolve(spec, load=False).info


def validate_state(
    state: Mapping[str, torch.Tensor],
    source: str,
    fmt: str | None = None,
    arch: str | None = None,
    hints: dict | None = None,
) -> tuple[fmts.Conversion, str, dict[int, tuple[int, float]], dict | None]:
    """THE check of a weights file's tensors, for ``evaluate`` and ``inspect`` alike: convert them (format
    ``fmt``, else detected; ``arch`` forces the torchvision layout of that ResNet), recognise the encoder
    (a ResNet, or a transformer of a converted format) and compare every key and shape with the module
    they will be loaded into, built on the meta device.

    Returns:
        (conversion, arch, native levels, transformer config or None), as ``converted_architecture``.

    Raises:
        BackboneError: no known layout, unmapped image-encoder keys, missing / unexpected keys or shapes
            (the message names ``source`` and the keys).
    """
    conv = fmts.convert(state, source, "torchvision" if arch else fmt)
    arch, native, encoder = converted_architecture(conv, hints or {}, source, arch)
    with torch.device("meta"):  # the layout only: no memory, no initialisation cost
        if encoder is None:
            check_and_load(ResNetFeatures(arch, conv.num_stages), conv.state, source, load=False)
        else:
            import warnings

            from benchmark.backbones import transformer_models as tfb

            with warnings.catch_warnings():  # torch says that copying into a meta tensor is a no-op: intended
                warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
                tfb.build(encoder, conv.state, source)  # a strict load into meta tensors: the check alone
    return conv, arch, native, encoder


def check_and_load(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, load: bool = True
) -> None:
    """Load ``state`` into ``model`` strictly (``load=False``: only check), with an error that lists what does
    not match."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        raise BackboneKeyError(
            f"{source}: weights do not match the {type(model).__name__} layout.\n"
            f"  missing keys ({len(missing)}): {fmts.show_keys(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {fmts.show_keys(unexpected)}"
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise BackboneKeyError(
                f"{source}: shape mismatch for key '{k}': file has {tuple(v.shape)}, "
                f"model expects {tuple(expected[k].shape)}"
            )
    if load:
        model.load_state_dict(state, strict=False)


class ResNetFeatures(nn.Module):
    """A torchvision ResNet that returns ``{k: Ck}`` instead of class logits.

    Args:
        arch: resnet18 / resnet34 / resnet50.
        num_stages: 4, or 3 for encoders that end at ``layer3`` (MedKLIP): C5 is then absent.
    """

    def __init__(self, arch: str, num_stages: int = 4) -> None:
        super().__init__()
        import torchvision.models as tvm

        net = getattr(tvm, arch)(weights=None)
        self.arch = ARCHS[arch]
        self.native = resnet_levels(arch, num_stages)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.layer4 = net.layer4 if num_stages == 4 else None

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        c1 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        out = {0: x, 1: c1, 2: c2, 3: c3, 4: c4}
        if self.layer4 is not None:
            out[5] = self.layer4(c4)
        return out


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
        check_and_load(model, normalize_keys(load_state_dict_file(path)), str(path))
    elif info.tag == "file":
        check_and_load(model, r.state, info.path)
    return model, info


def encoder_input(info: BackboneInfo, task_size: int) -> dict:
    """At which resolution the encoder runs in a run of a task prepared at ``task_size`` px (for records)."""
    out: dict = {
        "resolution": info.resolution or task_size,
        "task_size": task_size,
        "resized": bool(info.resolution and info.resolution != task_size),
    }
    if info.resolution:
        out["how"] = f"input resized to {info.resolution} px (bilinear) before the encoder (SPEC#res)"
    if info.encoder:
        e = info.encoder
        out["train_resolution"] = e["train_resolution"]
        if e["family"] == "vit":
            grid = (info.resolution or task_size) // e["patch"]
            out["token_grid"] = grid
            out["pos_embed"] = (
                "as trained" if grid == e["train_grid"] else f"{e['train_grid']}x{e['train_grid']} -> {grid}x{grid}: {e['pos_embed']}"
            )
    return out


def normalization_plan(
    info: BackboneInfo, task_mean: float, task_std: float, source: str = "task training-split statistics"
) -> dict:
    """How inputs are normalised for a backbone, and what the record says about it.

    The protocol normalises with the task's own training statistics (one channel, in the data preprocessor).
    An encoder whose format declares another convention gets its input on [0, 1] from the preprocessor and
    the per-channel convention inside :class:`CXRBackbone`, after the grey channel is repeated to three.

    Returns:
        ``mean`` / ``std`` for the data preprocessor (on the [0, 1] scale), ``input_norm`` for
        :class:`CXRBackbone` (None or the convention), and ``record`` for the run record.
    """
    if info.normalization is None:
        return {
            "mean": task_mean,
            "std": task_std,
            "input_norm": None,
            "record": {"mean": task_mean, "std": task_std, "source": source},
        }
    n = info.normalization
    return {
        "mean": 0.0,
        "std": 1.0,
        "input_norm": {"mean": list(n["mean"]), "std": list(n["std"])},
        "record": {
            "convention": n["name"],
            "mean": list(n["mean"]),
            "std": list(n["std"]),
            "scale": "[0, 1] image repeated to 3 channels",
            "source": n["source"],
            "task_mean": task_mean,
            "task_std": task_std,
        },
    }


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
