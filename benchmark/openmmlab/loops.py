"""A validation loop that also measures the validation loss (the plateau schedule monitors it)."""

from __future__ import annotations

import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import ValLoop
from mmengine.runner.amp import autocast


class ValLossLoop(ValLoop):
    """mmengine's ``ValLoop`` plus the validation loss, reported as metric ``loss``.

    Each batch is preprocessed and passed through the backbone once; the head then computes both the loss
    and the predictions from the same features (mmdet single-stage detectors and mmseg encoder-decoders;
    other models run twice). ``loss`` is the per-image mean of the model's total training loss over the
    validation set: a loss summed over a batch's images (mmdet's YOLOv3) is summed, a batch-level loss (the
    Dice loss) is weighted by the batch's images, as Lightning's epoch mean in the reference code.
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
        if is_model_wrapper(model):  # DDP: no gradients here, so the wrapped module is used directly
            model = model.module
        with autocast(enabled=self.fp16):
            data = model.data_preprocessor(data_batch, False)
            losses, outputs = _loss_and_predict(model, data["inputs"], data["data_samples"])
            total, _ = model.parse_losses(losses)
        n = len(outputs)
        self._loss_sum += float(total) * (1 if _summed_over_batch(model) else n)
        self._loss_n += n
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook("after_val_iter", batch_idx=idx, data_batch=data_batch, outputs=outputs)


def _loss_and_predict(model, inputs, data_samples):
    if hasattr(model, "decode_head") and not getattr(model, "with_auxiliary_head", False):  # mmseg
        feats = model.extract_feat(inputs)
        losses = model.decode_head.loss(feats, data_samples, model.train_cfg)
        metas = [s.metainfo for s in data_samples]
        logits = model.decode_head.predict(feats, metas, model.test_cfg)
        return {f"decode.{k}": v for k, v in losses.items()}, model.postprocess_result(logits, data_samples)
    if hasattr(model, "bbox_head") and hasattr(model, "add_pred_to_datasample"):  # mmdet single stage
        feats = model.extract_feat(inputs)
        losses = model.bbox_head.loss(feats, data_samples)
        results = model.bbox_head.predict(feats, data_samples, rescale=True)
        return losses, model.add_pred_to_datasample(data_samples, results)
    return model(inputs, data_samples, mode="loss"), model(inputs, data_samples, mode="predict")


def _summed_over_batch(model) -> bool:
    """Whether the model's training loss is a SUM over the images of a batch (mmdet's YOLOv3 head: all its
    losses use ``reduction="sum"``) rather than a batch mean or a batch-level quantity (the Dice loss)."""
    head = getattr(model, "bbox_head", None)
    if head is None:
        return False
    losses = [m for name, m in head.named_children() if name.startswith("loss_")]
    return bool(losses) and all(getattr(m, "reduction", None) == "sum" for m in losses)
