"""Pretraining checkpoints that load under torch's default ``weights_only=True``.

mmengine pickles its message hub as ``HistoryBuffer`` objects and numpy scalars / arrays, which
``torch.load(weights_only=True)`` refuses. Instead of weakening that protection, :class:`PlainCheckpointHook`
converts them to tensors and plain Python types on save and back on load.

This mirrors ``benchmark/openmmlab/checkpoint.py`` on purpose: ``pretrain`` may not import ``benchmark``
(the two meet only through the exported weights file). A neutral shared module (e.g. a small
``cxrbench_common`` package both may import) would remove the duplication.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer

TAG = "__cxrbench_type__"
_PLAIN = (type(None), bool, int, float, str, bytes, torch.Tensor, torch.Size, torch.dtype, torch.device)


def to_plain(obj, path: str = "checkpoint"):
    """Recursively replace mmengine / numpy objects by tensors and plain containers.

    Raises:
        TypeError: an object without a plain form (the message names its path in the checkpoint).
    """
    if isinstance(obj, np.generic):  # before the plain types: np.float64 subclasses float
        return obj.item()
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {
            TAG: "HistoryBuffer",
            "log": torch.from_numpy(np.asarray(log, dtype=np.float64)),
            "count": torch.from_numpy(np.asarray(count, dtype=np.float64)),
            "max_length": int(obj.max_length),
        }
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"{path}: numpy object arrays cannot be stored in a weights-only checkpoint")
        return {TAG: "ndarray", "data": torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, to_plain(v, f"{path}.{k}")) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: to_plain(v, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple) and type(obj) is tuple:
        return tuple(to_plain(v, f"{path}[{i}]") for i, v in enumerate(obj))
    raise TypeError(
        f"{path}: a {type(obj).__module__}.{type(obj).__name__} cannot be stored in a checkpoint that loads "
        "with weights_only=True; convert it to tensors / plain types"
    )


def from_plain(obj):
    """Inverse of :func:`to_plain`."""
    if isinstance(obj, dict):
        kind = obj.get(TAG)
        if kind == "HistoryBuffer":
            return HistoryBuffer(
                obj["log"].numpy().tolist(), obj["count"].numpy().tolist(), obj["max_length"]
            )
        if kind == "ndarray":
            return obj["data"].numpy()
        items = ((k, from_plain(v)) for k, v in obj.items())
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, list):
        return [from_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(from_plain(v) for v in obj)
    return obj


class PlainCheckpointHook(Hook):
    """Keeps saved checkpoints to tensors and plain types; restores mmengine's objects on load."""

    priority = "LOWEST"  # convert after every other hook has added its part

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        plain = to_plain(checkpoint)
        checkpoint.clear()
        checkpoint.update(plain)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        restored = from_plain(checkpoint)
        checkpoint.clear()
        checkpoint.update(restored)
