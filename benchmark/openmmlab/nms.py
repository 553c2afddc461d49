"""mmcv's compiled-op module for installs that have mmcv-lite instead of a compiled mmcv.

mmcv-lite is mmcv without its C++/CUDA extension ``mmcv._ext``. mmdet and mmseg import ``mmcv.ops`` at
import time, and ``mmcv.ops`` asks ``mmcv._ext`` for every compiled function it wraps, so without the
extension nothing imports. The 18 tasks need exactly one compiled op: NMS (YOLOv3 inference). This module
provides a stand-in ``mmcv._ext`` whose ``nms`` is ``torchvision.ops.nms`` (CPU and CUDA); every other
attribute is a function that raises :class:`MissingMMCVOpError` saying that the op needs a full mmcv build.

:func:`install` is called by ``benchmark.openmmlab`` (the one place that imports mmdet/mmseg) before that
import. A real compiled mmcv, when present, is used untouched.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import torch

PROVIDER_COMPILED = "mmcv (compiled ops)"
PROVIDER_TORCHVISION = "torchvision.ops.nms (cxrbench stand-in for mmcv-lite)"

FULL_MMCV_HINT = (
    "It needs mmcv's compiled extension, which mmcv-lite does not have; cxrbench provides only NMS "
    "(through torchvision). Install a full mmcv build instead: `pip uninstall -y mmcv-lite && "
    "pip install -U openmim && mim install 'mmcv==2.1.0'` (see docs/install.md, 'Why mmcv-lite, and how to get full mmcv')."
)


class MissingMMCVOpError(RuntimeError):
    """An mmcv op that only a compiled mmcv provides was called."""


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0) -> torch.Tensor:
    """NMS with mmcv's ``_ext.nms`` signature, computed by ``torchvision.ops.nms``.

    Args:
        boxes: (N, 4) boxes as (x1, y1, x2, y2).
        scores: (N,) scores.
        iou_threshold: boxes overlapping a kept box by more than this IoU are dropped.
        offset: 0 or 1; mmcv's legacy convention where a box is ``x2 - x1 + offset`` wide.

    Returns:
        Indices of the kept boxes (int64), in decreasing order of score.
    """
    import torchvision  # deferred: importing torchvision costs ~1 s and only NMS needs it

    if offset not in (0, 1):
        raise ValueError(f"nms offset must be 0 or 1, got {offset}")
    if offset == 1:
        # IoU with width x2 - x1 + 1 equals plain IoU of boxes whose far corner moved by +1.
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:] + 1], dim=1)
    return torchvision.ops.nms(boxes, scores.to(boxes.dtype), float(iou_threshold))


class _ExtStandIn(types.ModuleType):
    """``mmcv._ext`` stand-in: ``nms`` works, any other op raises a clear error when called."""

    def __init__(self) -> None:
        super().__init__("mmcv._ext", "cxrbench stand-in for mmcv's compiled ops (NMS via torchvision)")
        self.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", loader=None)
        self.nms = nms
        self.cxrbench_provider = PROVIDER_TORCHVISION

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise MissingMMCVOpError(f"mmcv op '{name}' is not available. {FULL_MMCV_HINT}")

        missing.__name__ = name
        return missing


def _has_compiled_mmcv() -> bool:
    existing = sys.modules.get("mmcv._ext")
    if existing is not None:
        return not isinstance(existing, _ExtStandIn)
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def install() -> str:
    """Make ``import mmcv._ext`` work; returns the active NMS provider.

    Idempotent. Leaves a compiled mmcv untouched.
    """
    if _has_compiled_mmcv():
        return PROVIDER_COMPILED
    if "mmcv._ext" not in sys.modules:
        sys.modules["mmcv._ext"] = _ExtStandIn()
    return PROVIDER_TORCHVISION


def active_provider() -> str | None:
    """The NMS provider in use, or None when nothing has been installed or imported yet."""
    existing = sys.modules.get("mmcv._ext")
    if existing is None:
        return None
    return getattr(existing, "cxrbench_provider", PROVIDER_COMPILED)


def brute_force_nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0
) -> torch.Tensor:
    """Reference NMS by the definition (O(N^2) loop): the doctor and the tests check providers against it."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep: list[int] = []
    b = boxes.double().tolist()

    def iou(i: int, j: int) -> float:
        ix = min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]) + offset
        iy = min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]) + offset
        inter = max(ix, 0.0) * max(iy, 0.0)
        area_i = (b[i][2] - b[i][0] + offset) * (b[i][3] - b[i][1] + offset)
        area_j = (b[j][2] - b[j][0] + offset) * (b[j][3] - b[j][1] + offset)
        union = area_i + area_j - inter
        return inter / union if union > 0 else 0.0

    for i in order:
        if all(iou(i, k) <= iou_threshold for k in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)
