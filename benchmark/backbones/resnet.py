"""Which torchvision ResNets the suite builds, and where torchvision's ImageNet weights for them come from.

``resnet18`` / ``resnet34`` / ``resnet50`` with their levels C0..C5 (:data:`ARCHS`), the depth of a ResNet
recognised from its key names, :class:`ResNetFeatures` (the ResNet returning ``{k: Ck}``) and the local path of
the ``IMAGENET1K_V1`` weights (``$CXRBENCH_WEIGHTS_DIR`` or the torch hub cache, downloaded when allowed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmark.backbones import formats as fmts
from benchmark.backbones.errors import BackboneKeyError, WeightsUnavailableError
from benchmark.backbones.weights import load_weights, sha256_file
from cxrcore.weights import weights_dir as _weights_dir


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

