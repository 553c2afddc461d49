"""Backbone specs -> encoders that return multi-scale features.

A spec names an architecture and its weights in timm's ``arch.tag`` style, or points at a file:

- ``resnet50.random`` / ``resnet18.random`` / ``resnet34.random``: torchvision initialisation (it depends
  on the run's seed).
- ``resnet50.imagenet`` (and 18/34): torchvision's ImageNet weights (``IMAGENET1K_V1``), read from
  ``$CXRBENCH_WEIGHTS_DIR`` or the torch hub cache, downloaded there when the network allows.
- ``path/to/weights.{pt,pth,safetensors,bin,ckpt}``: a state dict in torchvision's ResNet key layout, with
  or without ``fc.*``, with wrapper prefixes such as ``module.``, ``backbone.`` or ``encoder.`` stripped.
  The architecture is read off the keys. ``resnet18:path`` forces one.

Every encoder returns features ``C0..C5``: C0 is the (3-channel) input itself, C1 the stem output at stride
2, C2..C5 torchvision's ``layer1..layer4`` at strides 4..32. Which ones a head receives is its
``out_indices``. Loading never executes code from a checkpoint: safetensors, or ``torch.load`` with
``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")
# Prefixes that training frameworks put in front of the encoder's own keys.
STRIP_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "image_encoder.", "visual.", "net.")


class BackboneError(ValueError):
    """A backbone spec or weights file cannot be turned into an encoder."""


class BackboneKeyError(BackboneError):
    """The weights do not match the architecture's keys or shapes."""


class WeightsUnavailableError(BackboneError):
    """Pretrained weights are not on disk and could not be downloaded."""


class UnsafeCheckpointError(BackboneError):
    """A checkpoint's pickle refers to something other than tensors and plain containers."""


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
    """What a spec resolves to, before any model is built (goes into run keys and records)."""

    spec: str
    arch: str
    tag: str  # random | imagenet | file
    path: str | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        """A file-system friendly name for output folders."""
        if self.tag != "file":
            return f"{self.arch}.{self.tag}"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.path or "weights").stem)
        return f"{stem}-{(self.sha256 or '')[:8]}"

    def to_dict(self) -> dict:
        return asdict(self) | {"name": self.name}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
    """Read a weights file without executing code: safetensors, or a pickle under ``weights_only=True``.

    Checkpoints that wrap the weights (``{"state_dict": ...}`` as Lightning / mmengine write them, or
    ``{"model": ...}``) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"backbone weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise BackboneError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise UnsafeCheckpointError(
                f"refused to load {path}: its pickle refers to objects other than tensors and plain "
                "containers, and cxrbench never runs code from a checkpoint. Re-save the weights as a plain "
                f"state dict or safetensors on a machine where you trust the file. Details: {str(e).splitlines()[0]}"
            ) from e
        raise BackboneError(f"{path}: cannot read weights ({e})") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise BackboneError(
            f"{path}: expected a state dict (mapping of names to tensors), got {type(obj).__name__}"
        )
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def normalize_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes shared by all keys and drop the classifier (``fc.*``)."""
    state = dict(state)
    changed = True
    while changed and state:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


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


def parse_spec(spec: str) -> BackboneInfo:
    """Resolve a spec string without building the model (cheap, apart from hashing a file)."""
    arch_forced = None
    path_part = spec
    m = re.fullmatch(r"(resnet\d+):(.+)", spec)
    if m:
        arch_forced, path_part = m.group(1), m.group(2)
    m = re.fullmatch(r"(resnet\d+)\.(\w+)", spec)
    if m and not os.path.exists(spec):
        arch, tag = m.groups()
        if arch not in ARCHS:
            raise BackboneError(f"unknown architecture '{arch}' in spec '{spec}'; known: {', '.join(ARCHS)}")
        if tag not in TAGS:
            raise BackboneError(f"unknown weights tag '{tag}' in spec '{spec}'; known: {', '.join(TAGS)}")
        return BackboneInfo(spec=spec, arch=arch, tag=tag)
    path = Path(path_part).expanduser()
    if path.suffix in WEIGHT_SUFFIXES or path.exists():
        if not path.is_file():
            raise BackboneError(f"backbone weights file not found: {path} (from spec '{spec}')")
        if arch_forced is not None and arch_forced not in ARCHS:
            raise BackboneError(
                f"unknown architecture '{arch_forced}' in spec '{spec}'; known: {', '.join(ARCHS)}"
            )
        arch = arch_forced or infer_arch(list(normalize_keys(load_state_dict_file(path))))
        return BackboneInfo(
            spec=spec, arch=arch, tag="file", path=str(path.resolve()), sha256=sha256_file(path)
        )
    raise BackboneError(
        f"cannot parse backbone spec '{spec}': use ARCH.TAG ({', '.join(ARCHS)} x {', '.join(TAGS)}) "
        f"or a path to a {'/'.join(WEIGHT_SUFFIXES)} file"
    )


def check_and_load(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly, with an error that lists what does not match."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:

        def show(keys: list[str]) -> str:
            head = ", ".join(keys[:12])
            return f"{head}, ... ({len(keys)} in all)" if len(keys) > 12 else head or "none"

        raise BackboneKeyError(
            f"{source}: weights do not match the {type(model).__name__} layout.\n"
            f"  missing keys ({len(missing)}): {show(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {show(unexpected)}"
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise BackboneKeyError(
                f"{source}: shape mismatch for key '{k}': file has {tuple(v.shape)}, "
                f"model expects {tuple(expected[k].shape)}"
            )
    model.load_state_dict(state, strict=False)


class ResNetFeatures(nn.Module):
    """A torchvision ResNet that returns C0..C5 instead of class logits."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        import torchvision.models as tvm

        net = getattr(tvm, arch)(weights=None)
        self.arch = ARCHS[arch]
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [x, c1, c2, c3, c4, c5]


def build_encoder(spec: str | BackboneInfo) -> tuple[ResNetFeatures, BackboneInfo]:
    """Build the encoder of a spec with its weights loaded."""
    info = spec if isinstance(spec, BackboneInfo) else parse_spec(spec)
    model = ResNetFeatures(info.arch)
    if info.tag == "imagenet":
        path = imagenet_weights_path(info.arch)
        check_and_load(model, normalize_keys(load_state_dict_file(path)), str(path))
    elif info.tag == "file":
        check_and_load(model, normalize_keys(load_state_dict_file(info.path)), info.path)
    return model, info


class CXRBackbone(nn.Module):
    """The encoder of a spec as an OpenMMLab backbone, frozen or finetuned.

    Registered (by ``benchmark.openmmlab``) in mmengine's root MODELS registry, which mmdet's and mmseg's
    registries both fall back to.

    Args:
        spec: backbone spec (see module docstring).
        out_indices: which of C0..C5 to return, in increasing depth.
        frozen: encoder weights and BatchNorm statistics stay fixed for the whole run (eval mode, no grads).
        warmup_frozen_iters: finetune only; the encoder is frozen for this many iterations first
            (``FinetuneWarmupHook`` unfreezes it).
    """

    def __init__(
        self,
        spec: str,
        out_indices: Sequence[int] = (3, 4, 5),
        frozen: bool = False,
        warmup_frozen_iters: int = 0,
    ) -> None:
        super().__init__()
        if frozen and warmup_frozen_iters:
            raise ValueError("warmup_frozen_iters only applies to finetuning (frozen=False)")
        if (
            not out_indices
            or any(i not in range(6) for i in out_indices)
            or list(out_indices) != sorted(out_indices)
        ):
            raise ValueError(f"out_indices must be increasing indices of C0..C5, got {out_indices}")
        self.encoder, self.info = build_encoder(spec)
        self.out_indices = tuple(out_indices)
        self.channels = [self.encoder.arch.channels[i] for i in self.out_indices]
        self.strides = [self.encoder.arch.strides[i] for i in self.out_indices]
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
        if self.encoder_frozen:
            with torch.no_grad():
                feats = self.encoder(x)
        else:
            feats = self.encoder(x)
        return tuple(feats[i] for i in self.out_indices)
