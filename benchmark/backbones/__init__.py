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

Where things are:

- :mod:`~benchmark.backbones.spec`: the spec grammar, :func:`parse_spec` / ``resolve`` -> :class:`BackboneInfo`,
  :func:`validate_state` (THE check of a weights file, for ``evaluate`` and ``inspect``), export sidecars.
- :mod:`~benchmark.backbones.formats`: checkpoint formats of published methods -> ResNet / transformer layouts.
- :mod:`~benchmark.backbones.weights`: reading weights files safely (:mod:`cxrcore.weights`), strict loading.
- :mod:`~benchmark.backbones.resnet`: torchvision ResNets and their ImageNet weights.
- :mod:`~benchmark.backbones.timm_models` / :mod:`~benchmark.backbones.transformer_models`: timm models; ViT and
  Swin encoders of converted checkpoints.
- :mod:`~benchmark.backbones.levels`: levels C0..C5, resampled where an encoder lacks them.
- :mod:`~benchmark.backbones.module`: :func:`build_encoder` and :class:`CXRBackbone`, the mmengine backbone.
- :mod:`~benchmark.backbones.input`: the encoder's input resolution and normalisation in a run.
- :mod:`~benchmark.backbones.catalog`: what ``cxrbench backbones`` lists and ``cxrbench inspect`` reports.
- :mod:`~benchmark.backbones.errors`: every error type (all :class:`BackboneError`).
"""

from __future__ import annotations

from benchmark.backbones.errors import (
    BackboneError,
    BackboneKeyError,
    UnsafeCheckpointError,
    WeightsFileError,
    WeightsUnavailableError,
)
from benchmark.backbones.input import encoder_input, normalization_plan
from benchmark.backbones.module import CXRBackbone, build_encoder
from benchmark.backbones.resnet import (
    ARCHS,
    TAGS,
    Arch,
    ResNetFeatures,
    _weights_dir,  # noqa: F401  (benchmark.doctor reads the weights folder)
    imagenet_weights_path,
    infer_arch,
    load_state_dict_file,
    normalize_keys,
    resnet_levels,
)
from benchmark.backbones.spec import (
    HF_PREFERRED,
    KNOWN_FILES,
    NORM_CHOICES,
    SIDECAR_FIELDS,
    SIDECAR_FORMAT,
    SPEC_OPTIONS,
    WEIGHT_SUFFIXES,
    BackboneInfo,
    converted_architecture,
    parse_spec,
    read_export_sidecar,
    resolve,
    validate_state,
)
from benchmark.backbones.weights import check_and_load, sha256_file

__all__ = [
    "ARCHS",
    "Arch",
    "BackboneError",
    "BackboneInfo",
    "BackboneKeyError",
    "CXRBackbone",
    "HF_PREFERRED",
    "KNOWN_FILES",
    "NORM_CHOICES",
    "ResNetFeatures",
    "SIDECAR_FIELDS",
    "SIDECAR_FORMAT",
    "SPEC_OPTIONS",
    "TAGS",
    "UnsafeCheckpointError",
    "WEIGHT_SUFFIXES",
    "WeightsFileError",
    "WeightsUnavailableError",
    "build_encoder",
    "check_and_load",
    "converted_architecture",
    "encoder_input",
    "imagenet_weights_path",
    "infer_arch",
    "load_state_dict_file",
    "normalization_plan",
    "normalize_keys",
    "parse_spec",
    "read_export_sidecar",
    "resnet_levels",
    "resolve",
    "sha256_file",
    "validate_state",
]
