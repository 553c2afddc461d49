"""Training-time behaviour the protocol needs: finetune warm-up, loss checks, history (the progress bar and the
plain checkpoints are shared with pretraining: :mod:`cxrcore.mmengine_hooks`)."""

from __future__ import annotations

import math

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def _backbone(runner):
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    return model.backbone


class FinetuneWarmupHook(Hook):
    """Finetune warm-up: encoder frozen for ``warmup_iters`` iterations at ``warmup_lr``, then everything
    trains at the task's ``lr``.

    The learning rate is set exactly once at the switch, so the plateau schedule acts afterwards (the
    reference code reset it every batch, which disabled the schedule).
    """

    priority = "HIGH"

    def __init__(self, warmup_iters: int, warmup_lr: float, lr: float) -> None:
        self.warmup_iters = int(warmup_iters)
        self.warmup_lr = float(warmup_lr)
        self.lr = float(lr)

    def _set_lr(self, runner, lr: float) -> None:
        for group in runner.optim_wrapper.optimizer.param_groups:
            group["lr"] = lr

    def before_train(self, runner) -> None:
        backbone = _backbone(runner)
        if runner.iter < self.warmup_iters:
            backbone.set_encoder_frozen(True)
            self._set_lr(runner, self.warmup_lr)
        else:  # resumed after the warm-up
            backbone.set_encoder_frozen(False)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter == self.warmup_iters and self.warmup_iters > 0:
            _backbone(runner).set_encoder_frozen(False)
            self._set_lr(runner, self.lr)
            runner.logger.info(
                f"warm-up done after {self.warmup_iters} iterations: encoder unfrozen, lr={self.lr}"
            )


class LossGuardHook(Hook):
    """Stops a run whose training loss is not finite (recorded as a failed run, not a silent NaN)."""

    priority = "ABOVE_NORMAL"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs:
            return
        loss = outputs.get("loss")
        value = (
            float(loss.detach()) if hasattr(loss, "detach") else (float(loss) if loss is not None else None)
        )
        if value is not None and not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss became {value} at iteration {runner.iter + 1} (epoch {runner.epoch + 1})"
            )


class HistoryHook(Hook):
    """Keeps every validation result (per epoch) and the training iterations run."""

    priority = "LOW"

    def __init__(self) -> None:
        self.val_history: list[dict] = []
        self.iterations = 0

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.iterations = runner.iter + 1

    def after_val_epoch(self, runner, metrics=None) -> None:
        lr = runner.optim_wrapper.get_lr()["lr"][0] if runner.optim_wrapper is not None else None
        self.val_history.append(
            {"epoch": runner.epoch, "lr": lr, **{k: float(v) for k, v in (metrics or {}).items()}}
        )

