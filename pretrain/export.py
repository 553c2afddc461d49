"""Export: the image encoder as a plain torchvision ResNet state dict (safetensors) + a JSON sidecar.

This file is the whole interface between pretraining and the benchmark: ``cxrbench evaluate --backbone
OUT/backbone.safetensors`` reads it like any other torchvision-layout weights file.

- ``backbone.safetensors``: torchvision key names (``conv1.weight``, ``bn1.running_mean``,
  ``layer1.0.conv1.weight``, ..., ``layer4.2.bn3.num_batches_tracked``), no ``fc.*``; float32. The
  safetensors metadata holds ``format=cxrbench-backbone``, the architecture and the preset.
- ``backbone.json``: ``format``, ``arch``, ``preset``, ``description``, ``losses`` (weights and
  hyper-parameters), ``model``, ``train``, ``augment``, ``data`` (source, pairs per split, skipped counts,
  data hash), ``normalization`` (grey-level mean / std the encoder was trained with, and the input size),
  ``epochs_run``, ``best_epoch``, ``val_loss``, ``checkpoint``, ``sha256`` (of the safetensors file),
  ``config_hash``, ``versions``, ``created_at``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from cxrcore.hashing import sha256_file
from cxrcore.io import write_bytes_atomic, write_json_atomic

FORMAT = "cxrbench-backbone"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "torchvision", "transformers", "mmengine", "cxrbench"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def save_safetensors(
    path: str | os.PathLike, state: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_bytes_atomic(path, save(tensors, metadata={k: str(v) for k, v in metadata.items()}))


def export_backbone(
    image_encoder, out_dir: str | os.PathLike, sidecar: dict, name: str = "backbone"
) -> tuple[Path, Path]:
    """Write ``OUT/<name>.safetensors`` (torchvision layout, no fc) and ``OUT/<name>.json``.

    Args:
        image_encoder: a :class:`pretrain.model.ImageEncoder`.
        sidecar: provenance merged into the JSON (see the module docstring for the keys).

    Returns:
        The two paths.
    """
    out_dir = Path(out_dir)
    state = image_encoder.backbone_state_dict()
    if any(k.startswith("fc.") for k in state):  # the benchmark contract: no classifier
        raise RuntimeError("internal error: the exported state dict has fc.* keys")
    weights = out_dir / f"{name}.safetensors"
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": image_encoder.arch}
    if "preset" in sidecar:
        meta["preset"] = sidecar["preset"]
    save_safetensors(weights, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, meta)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": image_encoder.arch,
        "weights": weights.name,
        "keys": len(state),
        **sidecar,
        "sha256": sha256_file(weights),
        "versions": versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    sidecar_path = out_dir / f"{name}.json"
    write_json_atomic(sidecar_path, info)
    return weights, sidecar_path


def load_backbone_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an exported backbone (safetensors) back as a state dict (through cxrbench's one loader)."""
    from cxrcore.weights import load_safetensors

    return load_safetensors(path)
