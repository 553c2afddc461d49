"""What ``cxrbench backbones`` lists and what ``cxrbench inspect`` reports about a weights file."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from benchmark.backbones import formats as fmts
from benchmark.backbones.errors import BackboneError
from benchmark.backbones.levels import plan_levels
from benchmark.backbones.resnet import ARCHS, TAGS
from benchmark.backbones.spec import (
    KNOWN_FILES,
    NORM_CHOICES,
    SPEC_OPTIONS,
    WEIGHT_SUFFIXES,
    _folder_hints,
    _folder_weights,
    converted_architecture,
    read_export_sidecar,
    validate_state,
)
from benchmark.backbones.weights import load_weights, sha256_file


def catalog() -> dict:
    """Every accepted spec form and checkpoint format, with sources (for ``cxrbench backbones``)."""
    try:
        import timm

        timm_version = timm.__version__
    except ImportError:  # pragma: no cover - timm is a dependency
        timm_version = None
    specs = [
        {"spec": f"{a}.{t}", "meaning": "torchvision ImageNet weights" if t == "imagenet" else "random init"}
        for a in ARCHS
        for t in TAGS
    ]
    specs += [
        {
            "spec": "PATH",
            "meaning": "a weights file or folder; its checkpoint format is detected from the keys",
        },
        {"spec": "FORMAT:PATH", "meaning": f"insist on one format ({', '.join(fmts.FORMATS)})"},
        {"spec": "resnet50:PATH", "meaning": "a torchvision-layout ResNet of this depth (18 / 34 / 50)"},
        {"spec": "timm:NAME", "meaning": "any timm model with features_only=True, random init"},
        {"spec": "timm:NAME.TAG", "meaning": "timm's pretrained weights for TAG (needs the network)"},
        {"spec": "timm:hf-hub:ORG/NAME", "meaning": "a timm model on the Hugging Face Hub (needs the network)"},
        {
            "spec": "timm:NAME:PATH",
            "meaning": "timm model with local weights (file, or a Hugging Face timm folder)",
        },
        {
            "spec": "SPEC#norm=NAME",
            "meaning": f"input normalisation: {', '.join(NORM_CHOICES)} (default: declared)",
        },
        {
            "spec": "SPEC#res=N",
            "meaning": "run the encoder on the input resized to N px (e.g. RAD-DINO at 518); a separate "
            f"leaderboard row (NAME@Npx). Options combine: SPEC#norm=task,res=518 ({', '.join(SPEC_OPTIONS)})",
        },
    ]
    formats = [
        {
            "name": f.name,
            "title": f.title,
            "methods": f.methods,
            "files": f.files,
            "source": f.source,
            "example": f.example,
            "aliases": sorted(a for a, t in fmts.FORMAT_ALIASES.items() if t == f.name),
            "normalization": f.normalization.to_dict() if f.normalization else None,
            "resolution": f.resolution,
        }
        for f in fmts.FORMATS.values()
    ]
    formats.append(
        {
            "name": "timm",
            "title": "timm models (features_only)",
            "methods": "any timm architecture: convnext_*, resnet*, efficientnet_*, swin_*, vit_* (simple pyramid)",
            "files": "state dict of timm.create_model(NAME), or a Hugging Face timm folder (config.json + "
            "model.safetensors / pytorch_model.bin)",
            "source": "huggingface/pytorch-image-models: timm/models/_features.py (feature_info, features_only)",
            "example": "timm:convnext_tiny:convnext_tiny.safetensors",
            "aliases": [],
            "normalization": None,
            "resolution": None,
        }
    )
    return {
        "specs": specs,
        "formats": formats,
        "known_files": KNOWN_FILES,
        "weight_suffixes": list(WEIGHT_SUFFIXES),
        "timm": timm_version,
    }


def _param_count(state: dict[str, torch.Tensor]) -> int:
    """Learnable parameters among ``state`` (BatchNorm running statistics excluded)."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.numel() for k, v in state.items() if not k.endswith(skip))


def inspect_weights(path: str | os.PathLike, format: str | None = None) -> dict:
    """Report on a weights file or folder: container, detected format, mapped / ignored / unmapped keys,
    parameter count, levels, declared input convention and sha256. Never raises for unmapped keys: they are
    listed (``ok`` is False)."""
    path = Path(path).expanduser()
    timm_name = None
    error = None
    hints: dict = {}
    folder_norm = None
    if format and format.startswith("timm:"):
        timm_name, format = format[len("timm:") :], None
    if path.is_dir():
        from benchmark.backbones.timm_models import read_hf_architecture, resolve_weights_path

        arch = read_hf_architecture(path)
        if arch and format is None:
            timm_name = timm_name or arch
            path = resolve_weights_path(path)
        else:
            hints, folder_norm = _folder_hints(path)
            path, implied = _folder_weights(path)
            format = format or implied
    loaded = load_weights(path)
    report: dict = {
        "path": str(path.resolve()),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "container": loaded.container,
        "other_entries": list(loaded.other_entries),
        "not_loaded_objects": list(loaded.placeholders),
        "tensors": len(loaded.state),
        "tensor_elements": sum(v.numel() for v in loaded.state.values()),
    }
    report["provenance"] = read_export_sidecar(path, report["sha256"])
    if timm_name is not None:
        from benchmark.backbones import timm_models as tb

        base, _ = tb.split_name(timm_name)
        conv = tb.check_state(base, loaded.state, str(path))
        _, native = tb.feature_plan(base)
        report.update(
            format="timm",
            format_title=f"timm '{base}'",
            source="huggingface/pytorch-image-models",
            arch=f"timm:{base}",
            spec=f"timm:{base}:{path}",
            normalization=None,
        )
    else:
        if format is None:
            found = fmts.detect_format(loaded.state)
            if found is None:
                report.update(ok=False, error=_unrecognised(loaded.state))
                return report
            fmt, prefix = found
        else:
            fmt = fmts.get_format(format)
            prefix = fmt.detect(loaded.state)
            if prefix is None:
                report.update(
                    ok=False, error=f"not a {fmt.title} checkpoint: expected keys like '{fmt.expected}'"
                )
                return report
        conv = fmt.convert(loaded.state, prefix)
        try:  # approve exactly what evaluate accepts: its own check, on the same tensors
            _, arch, native, encoder = validate_state(loaded.state, str(path), format, hints=hints)
        except BackboneError as e:
            error = str(e)
            try:
                arch, native, encoder = converted_architecture(conv, hints, str(path))
            except BackboneError:
                report.update(ok=False, format=fmt.name, error=error)
                return report
        norm = fmt.normalization.to_dict() if fmt.normalization else None
        if norm and folder_norm is not None:  # the released folder's own preprocessing wins
            norm |= {"mean": list(folder_norm.mean), "std": list(folder_norm.std), "source": folder_norm.source}
        report.update(
            format=fmt.name,
            format_title=fmt.title,
            source=fmt.source,
            arch=arch,
            spec=f"{fmt.name}:{path}",
            normalization=norm,
            encoder=encoder,
            trained_at=fmt.resolution if encoder is None else encoder["train_resolution"],
        )
    report.update(
        prefix=conv.prefix,
        mapped_keys=conv.mapped,
        parameters=_param_count(conv.state),
        ignored={reason: {"count": len(keys), "examples": keys[:5]} for reason, keys in conv.ignored.items()},
        unmapped=sorted(conv.unmapped),
        levels=[lv.describe() for lv in plan_levels(native)],
        ok=error is None,
    )
    if conv.unmapped:
        report["error"] = f"{len(conv.unmapped)} image-encoder key(s) map to nothing cxrbench knows"
    elif error is not None:
        report["error"] = error
    report["_state"] = conv.state  # for --export; removed before printing
    return report


def _unrecognised(state: dict) -> str:
    keys = sorted(state)
    return (
        f"no known checkpoint layout recognised (first keys: {fmts.show_keys(keys, 8)}); known formats: "
        f"{', '.join(fmts.FORMATS)}; other models: timm:MODEL_NAME:FILE"
    )


def export_state(state: dict[str, torch.Tensor], out: str | os.PathLike, timm_arch: str | None = None) -> Path:
    """Write converted weights as a plain safetensors file (torchvision / timm key layout).

    Raises:
        BackboneError: ``evaluate`` would reject the file (e.g. an encoder that ends at layer3 has no
            torchvision layout); nothing is written.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise BackboneError(f"--export writes safetensors: give a path ending in .safetensors, not {out}")
    try:  # the check evaluate makes when it reads the exported file
        if timm_arch is not None:
            from benchmark.backbones import timm_models as tb

            tb.check_state(timm_arch, state, str(out))
        else:
            validate_state(state, str(out))
    except BackboneError as e:
        raise BackboneError(f"not exported, evaluate would reject the file: {e}") from e
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return out



def export_inspected(report: dict, state: dict[str, torch.Tensor], out: str | os.PathLike) -> Path:
    """``inspect --export``: write the weights an :func:`inspect_weights` report describes as a plain file.

    Raises:
        BackboneError: a transformer encoder (a plain timm / transformers state dict loses what evaluate needs
            to read it back: heads, training resolution, input convention) or a file evaluate would reject;
            nothing is written.
    """
    if report.get("encoder"):
        raise BackboneError(
            f"not exported: a {report['format']} transformer encoder is evaluated from its released "
            f"file as it is (spec {report['spec']}); --export writes plain ResNet and timm layouts"
        )
    timm_arch = report["arch"][len("timm:") :] if report["format"] == "timm" else None
    return export_state(state, out, timm_arch)

def format_report(report: dict) -> str:
    """Human-readable ``cxrbench inspect`` output."""
    lines = [
        f"file          {report['path']}",
        f"size          {report['bytes'] / 1e6:.1f} MB   sha256 {report['sha256']}",
        f"container     {report['container']}"
        + (f" (also: {', '.join(report['other_entries'])})" if report["other_entries"] else ""),
    ]
    if report["not_loaded_objects"]:
        lines.append(
            f"not loaded    {len(report['not_loaded_objects'])} metadata object type(s) replaced by inert "
            f"placeholders: {', '.join(report['not_loaded_objects'][:6])}"
            + (" ..." if len(report["not_loaded_objects"]) > 6 else "")
        )
    lines.append(f"tensors       {report['tensors']} ({report['tensor_elements']:,} elements)")
    p = report.get("provenance")
    if p:
        lines.append(
            f"provenance    cxrbench pretrain, preset {p.get('preset', '?')}, {p.get('epochs_run', '?')} epoch(s) "
            f"({p['sidecar']})"
            + ("" if p["sha256_matches"] else " - WARNING: the sidecar's sha256 is not this file's")
        )
    if "format" not in report or "mapped_keys" not in report:
        lines.append(f"ERROR         {report.get('error')}")
        return "\n".join(lines)
    lines += [
        f"format        {report['format']} - {report['format_title']}",
        f"source        {report['source']}",
        f"encoder       {report['arch']}"
        + (f"  (found under '{report['prefix']}')" if report["prefix"] else ""),
        f"mapped        {report['mapped_keys']} keys, {report['parameters']:,} parameters",
    ]
    for reason, v in report["ignored"].items():
        lines.append(f"ignored       {v['count']:>5} {reason} (e.g. {', '.join(v['examples'][:2])})")
    e = report.get("encoder")
    if e:
        shape = (
            f"patch {e['patch']}, {e['depth']} blocks of {e['embed_dim']}, {e['num_heads']} heads"
            if e["family"] == "vit"
            else f"patch {e['patch']}, depths {e['depths']}, heads {e['num_heads']}, window {e['window_size']}"
        )
        lines.append(f"transformer   {e['family']}: {shape}; trained at {e['train_resolution']} px")
        if e["family"] == "vit":
            lines.append(f"tokens        {e['tokens']}")
            lines.append(f"pos. embed.   {e['pos_embed']}")
        else:
            lines.append(f"stages        {e['levels']}")
    elif report.get("trained_at"):
        lines.append(f"trained at    {report['trained_at']} px")
    for lv in report["levels"]:
        lines.append(f"level         {lv}")
    n = report["normalization"]
    lines.append(
        "input         task statistics (the protocol)"
        if n is None
        else f"input         declares '{n['name']}': mean {n['mean']}, std {n['std']} on [0, 1] ({n['source']})"
    )
    if report["unmapped"]:
        lines.append(f"ERROR         {report['error']}: {fmts.show_keys(report['unmapped'], 20)}")
    elif not report["ok"]:
        lines.append(f"ERROR         {report['error']}")
    else:
        lines.append(f"spec          {report['spec']}")
    return "\n".join(lines)


def format_catalog(cat: dict) -> str:
    """Human-readable ``cxrbench backbones`` output."""
    lines = ["Backbone specs:"]
    for s in cat["specs"]:
        lines.append(f"  {s['spec']:<22} {s['meaning']}")
    lines.append("")
    lines.append("Checkpoint formats (detected from the keys, or named as FORMAT:PATH):")
    for f in cat["formats"]:
        alias = f" (also: {', '.join(f['aliases'])})" if f["aliases"] else ""
        norm = f["normalization"]
        norm = (
            f"{norm['name']} (mean {', '.join(f'{m:.4g}' for m in norm['mean'])}; std "
            f"{', '.join(f'{v:.4g}' for v in norm['std'])})"
            if norm
            else "task statistics"
        )
        lines += [
            f"  {f['name']}{alias}: {f['title']}",
            f"      methods: {f['methods']}",
            f"      files:   {f['files']}",
            f"      input:   {norm}" + (f", trained at {f['resolution']} px" if f["resolution"] else ""),
            f"      source:  {f['source']}",
            f"      example: --backbone {f['example']}",
        ]
    lines.append("")
    lines.append(
        f"timm {cat['timm'] or 'not installed'}; files recognised by name in folders: {', '.join(cat['known_files'])}"
    )
    return "\n".join(lines)
