"""The mmengine hooks that both ``benchmark`` and ``pretrain`` run: checkpoints that load under torch's default
``weights_only=True`` (:class:`PlainCheckpointHook`) and the tqdm progress bar over training
(:class:`ProgressHook`). mmengine only: nothing here imports mmdet or mmseg.

mmengine pickles a checkpoint's message hub as ``HistoryBuffer`` objects and numpy scalars/arrays, which
``torch.load(weights_only=True)`` (the default since torch 2.6) refuses. Rather than weakening that
protection (no ``weights_only=False``, no allow-listing), cxrbench keeps its checkpoints to tensors and
plain Python types: :class:`PlainCheckpointHook` converts on save and converts back on load, before
mmengine reads the message hub. A checkpoint whose pickle would run code is refused by torch itself.
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
    """Recursively replace mmengine/numpy objects by tensors and plain containers.

    Raises:
        TypeError: an object that has no plain form (names its path in the checkpoint).
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


class ProgressHook(Hook):
    """A progress bar over the run's training iterations (tqdm), with the last loss and metric.

    Args:
        description: the bar's title.
        monitor: the validation metric shown after each validation (e.g. ``bbox/mAP``, ``val/loss``).
        label: its name in the bar (default: the last part of ``monitor``).
        metric_format: how its value is shown.
        leave: keep the finished bar on the terminal.
    """

    priority = "VERY_LOW"

    def __init__(
        self,
        description: str,
        monitor: str,
        label: str | None = None,
        metric_format: str = ".4f",
        leave: bool = False,
    ) -> None:
        self.description = description
        self.monitor = monitor
        self.label = label if label is not None else monitor.split("/")[-1]
        self.metric_format = metric_format
        self.leave = leave
        self.bar = None
        self.last_metric = None

    def before_train(self, runner) -> None:
        from tqdm import tqdm

        total = runner.max_iters if runner.max_iters else None
        self.bar = tqdm(
            total=total,
            initial=runner.iter,
            desc=self.description,
            unit="it",
            leave=self.leave,
            dynamic_ncols=True,
        )

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        post = {"epoch": runner.epoch + 1}
        if outputs and "loss" in outputs:
            loss = outputs["loss"]
            post["loss"] = f"{float(loss.detach() if hasattr(loss, 'detach') else loss):.4g}"
        if self.last_metric is not None:
            post[self.label] = f"{self.last_metric:{self.metric_format}}"
        self.bar.set_postfix(post, refresh=False)

    def after_val_epoch(self, runner, metrics=None) -> None:
        if metrics and self.monitor in metrics:
            self.last_metric = float(metrics[self.monitor])

    def after_train(self, runner) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
