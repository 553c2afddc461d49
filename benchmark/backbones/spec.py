"""What a backbone spec means: the grammar (``arch.tag``, ``PATH``, ``FORMAT:PATH``, ``timm:...``,
``#norm=`` / ``#res=``) resolved to a :class:`BackboneInfo` (what goes into run keys and records), with the
weights file read, converted, checked and hashed once per process (:func:`resolve`).

The spec forms are listed in :mod:`benchmark.backbones`' docstring and by ``cxrbench backbones``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from benchmark.backbones import formats as fmts
from benchmark.backbones.errors import BackboneError, WeightsUnavailableError
from benchmark.backbones.levels import plan_levels
from benchmark.backbones.resnet import ARCHS, TAGS, ResNetFeatures, infer_arch, resnet_levels
from benchmark.backbones.weights import check_and_load, load_weights, read_once, sha256_file

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")
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
    conv, sha256 = read_once(  # one read, check and hash of the file per process
        path, ("timm", base), lambda: (tb.check_state(base, load_weights(path).state, str(path)), sha256_file(path))
    )
    state = conv.state if load else None
    info = BackboneInfo(
        spec,
        f"timm:{base}",
        "file",
        str(path.resolve()),
        sha256,
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

    def read() -> tuple:  # the file's one read, conversion, check and hash per process (read_once)
        loaded = load_weights(path)
        checked = validate_state(loaded.state, str(path), fmt, arch, hints)
        return loaded.container, loaded.placeholders, checked, sha256_file(path)

    what = ("checked", fmt, arch, json.dumps(hints, sort_keys=True))
    container, placeholders, checked, sha256 = read_once(path, what, read)
    conv, arch, native, encoder = checked
    declared = fmts.get_format(conv.format).normalization
    if folder_norm is not None and declared is not None:  # the released folder's own preprocessing wins
        declared = fmts.InputNorm(declared.name, folder_norm.mean, folder_norm.std, folder_norm.source)
    summary = conv.summary() | {"container": container}
    if placeholders:
        summary["not_loaded_objects"] = list(placeholders)
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
    """Resolve a spec; with ``load``, also read and convert its weights (one read of the file per process while
    it is unchanged: :func:`~benchmark.backbones.weights.read_once`)."""
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

