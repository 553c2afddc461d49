"""The mmengine side of pretraining: the model wrapper, the validation-loss metric, history, the loss guard (the
progress bar and the plain checkpoints are shared with the benchmark: :mod:`cxrcore.mmengine_hooks`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel

from pretrain.config import LossConfig
from pretrain.model import ImageTextModel
from pretrain.objective import compute_terms, total_loss


class PretrainModel(BaseModel):
    """:class:`~pretrain.model.ImageTextModel` + its objective as an mmengine model.

    ``mode="loss"`` returns the weighted total under ``loss`` (what is optimised) and the unweighted value
    of every active term under its own name (logged, not summed: mmengine sums only keys containing
    "loss"). ``mode="predict"`` (validation) returns the same values as floats with the batch size.
    """

    def __init__(self, net: ImageTextModel, loss: LossConfig) -> None:
        super().__init__()
        self.net = net
        self.loss_cfg = loss

    def forward(self, images, input_ids, attention_mask, sentence_index, sentence_mask, mode: str = "loss"):
        out = self.net(images, input_ids, attention_mask, sentence_index, sentence_mask)
        if mode == "tensor":
            return out
        # the losses in float32 also under mixed precision (autocast would run their matmuls in float16)
        with torch.autocast(device_type=images.device.type, enabled=False):
            terms = compute_terms(out, self.loss_cfg)
            total = total_loss(terms, self.loss_cfg)
        if mode == "loss":
            return {"loss": total, **{k: v.detach() for k, v in terms.items()}}
        if mode == "predict":
            return [{"loss": float(total), **{k: float(v) for k, v in terms.items()}, "n": images.shape[0]}]
        raise ValueError(f"unknown mode {mode!r}")


class PretrainLossMetric(BaseMetric):
    """Validation metric: the batch-size-weighted mean of the total loss and of every term (``val/...``)."""

    default_prefix = "val"

    def process(self, data_batch, data_samples) -> None:
        self.results.extend(data_samples)

    def compute_metrics(self, results: list) -> dict:
        n = sum(r["n"] for r in results)
        keys = [k for k in results[0] if k != "n"]
        return {k: sum(r[k] * r["n"] for r in results) / n for k in keys}


class HistoryHook(Hook):
    """Per-epoch means of the training loss and terms, the validation values and the lr -> ``history.json``.

    The file is rewritten after every epoch (atomically), so an interrupted run keeps its history, and a
    resumed run continues it.
    """

    priority = "LOW"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.epochs: list[dict] = []
        self._sums: dict[str, float] = {}
        self._count = 0

    def before_train(self, runner) -> None:
        if self.path.exists():
            previous = json.loads(self.path.read_text()).get("epochs", [])
            self.epochs = [e for e in previous if e["epoch"] <= runner.epoch]

    def before_train_epoch(self, runner) -> None:
        self._sums, self._count = {}, 0

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for k, v in (outputs or {}).items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v.detach() if hasattr(v, "detach") else v)
        self._count += 1

    def after_train_epoch(self, runner) -> None:
        entry = {
            "epoch": runner.epoch + 1,  # 1-based: the number of epochs done
            "iterations": runner.iter,
            "lr": runner.optim_wrapper.get_lr()["lr"][0],
            "train": {k: v / max(self._count, 1) for k, v in self._sums.items()},
        }
        self.epochs.append(entry)
        self._write()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self.epochs and metrics:
            self.epochs[-1]["val"] = {k.split("/", 1)[-1]: float(v) for k, v in metrics.items()}
            self._write()

    def _write(self) -> None:
        from cxrcore.io import write_json_atomic

        write_json_atomic(self.path, {"epochs": self.epochs})


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class LossGuardHook(Hook):
    """Stops a run whose loss is not finite (with the term that went first), instead of training on NaN."""

    priority = "ABOVE_NORMAL"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs:
            return
        bad = {k: float(v.detach() if hasattr(v, "detach") else v) for k, v in outputs.items()}
        bad = {k: v for k, v in bad.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): {bad}; "
                "lower the learning rate or check the data"
            )


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from mmengine.model import is_model_wrapper

    return model.module if is_model_wrapper(model) else model
