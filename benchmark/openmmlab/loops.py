"""A validation loop that also measures the validation loss (the plateau schedule monitors it)."""

from __future__ import annotations

import torch
from mmengine.runner import ValLoop
from mmengine.runner.amp import autocast


class ValLossLoop(ValLoop):
    """mmengine's ``ValLoop`` plus the validation loss, reported as metric ``loss``.

    Each batch is preprocessed once, then scored by the loss and by the predictions; ``loss`` is the
    per-image weighted mean of the model's total training loss over the validation set.
    """

    def run(self) -> dict:
        self.runner.call_hook("before_val")
        self.runner.call_hook("before_val_epoch")
        self.runner.model.eval()
        self._loss_sum, self._loss_n = 0.0, 0
        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        metrics["loss"] = self._loss_sum / max(self._loss_n, 1)
        self.runner.call_hook("after_val_epoch", metrics=metrics)
        self.runner.call_hook("after_val")
        return metrics

    @torch.no_grad()
    def run_iter(self, idx, data_batch) -> None:
        self.runner.call_hook("before_val_iter", batch_idx=idx, data_batch=data_batch)
        model = self.runner.model
        with autocast(enabled=self.fp16):
            data = model.data_preprocessor(data_batch, False)
            total, _ = model.parse_losses(model(**data, mode="loss"))
            outputs = model(**data, mode="predict")
        self._loss_sum += float(total) * len(outputs)
        self._loss_n += len(outputs)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook("after_val_iter", batch_idx=idx, data_batch=data_batch, outputs=outputs)
