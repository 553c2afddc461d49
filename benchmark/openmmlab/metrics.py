"""Metrics as mmengine metrics, built on mmdet's ``CocoMetric`` and mmseg's ``IoUMetric``."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
from mmdet.evaluation.metrics import CocoMetric
from mmseg.evaluation.metrics import IoUMetric
from pycocotools.cocoeval import COCOeval

# mAP@[.40:.05:.75] (the RSNA Kaggle range); rounded so that 0.5 and 0.75 are exact and pycocotools can
# read AP@.5 / AP@.75 off the same evaluation.
IOU_THRS = tuple(round(0.40 + 0.05 * i, 2) for i in range(8))


class DetectionMetric(CocoMetric):
    """COCO box AP over IoU 0.40:0.05:0.75, plus AP@0.5 and AP@0.75, at full precision.

    Keys (prefix ``det``): ``mAP``, ``mAP_50``, ``mAP_75``, ``n_detections``. No detections at all scores
    0 (not an error); a split without ground-truth boxes scores NaN (AP is undefined there).
    """

    default_prefix = "det"

    def __init__(self, ann_file: str, iou_thrs=IOU_THRS, **kwargs) -> None:
        super().__init__(ann_file=ann_file, metric="bbox", iou_thrs=list(iou_thrs), **kwargs)

    def compute_metrics(self, results: list) -> dict[str, float]:
        _, preds = zip(*results)
        if self.cat_ids is None:
            self.cat_ids = self._coco_api.get_cat_ids(cat_names=self.dataset_meta["classes"])
        if self.img_ids is None:
            self.img_ids = self._coco_api.get_img_ids()
        dets = []
        for pred in preds:
            for (x1, y1, x2, y2), score, label in zip(pred["bboxes"], pred["scores"], pred["labels"]):
                dets.append(
                    {
                        "image_id": int(pred["img_id"]),
                        "category_id": int(self.cat_ids[int(label)]),
                        "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                        "score": float(score),
                    }
                )
        has_gt = len(self._coco_api.getAnnIds(imgIds=self.img_ids, catIds=self.cat_ids)) > 0
        if not dets:
            value = 0.0 if has_gt else math.nan
            return {"mAP": value, "mAP_50": value, "mAP_75": value, "n_detections": 0}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
            coco_eval = COCOeval(self._coco_api, self._coco_api.loadRes(dets), "bbox")
            coco_eval.params.catIds = self.cat_ids
            coco_eval.params.imgIds = self.img_ids
            coco_eval.params.iouThrs = np.asarray(self.iou_thrs, dtype=np.float64)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        stats = [float(s) if s >= 0 else math.nan for s in coco_eval.stats[:3]]
        return {"mAP": stats[0], "mAP_50": stats[1], "mAP_75": stats[2], "n_detections": len(dets)}


class SegMetric(IoUMetric):
    """Dice as the protocol defines it, from mmseg's per-image intersection/union counts.

    Keys (prefix ``seg``): ``dice`` = micro Dice (pixels pooled over the split) averaged over the
    foreground classes (for one class: its micro Dice); ``dice_per_image`` = mean over images of the
    per-image foreground Dice (an image with no foreground in prediction and label counts 1, the SIIM
    challenge convention); ``iou``; and ``dice.<class>`` per foreground class.
    """

    default_prefix = "seg"

    def __init__(self, **kwargs) -> None:
        super().__init__(iou_metrics=["mDice"], **kwargs)

    def compute_metrics(self, results: list) -> dict[str, float]:
        inter, union, pred, label = (
            np.stack([r[i].numpy() for r in results]).astype(np.float64) for i in range(4)
        )
        classes = self.dataset_meta["classes"]
        fg = range(1, len(classes))
        out: dict[str, float] = {}
        dices, ious = [], []
        for c in fg:
            denom = pred[:, c].sum() + label[:, c].sum()
            d = 2 * inter[:, c].sum() / denom if denom > 0 else math.nan
            u = union[:, c].sum()
            dices.append(d)
            ious.append(inter[:, c].sum() / u if u > 0 else math.nan)
            out[f"dice.{classes[c]}"] = d
        out["dice"] = float(np.nanmean(dices)) if not all(math.isnan(d) for d in dices) else math.nan
        out["iou"] = float(np.nanmean(ious)) if not all(math.isnan(i) for i in ious) else math.nan
        p = pred[:, list(fg)].sum(axis=1)
        gt = label[:, list(fg)].sum(axis=1)
        i = inter[:, list(fg)].sum(axis=1)
        per_image = np.where(p + gt > 0, 2 * i / np.maximum(p + gt, 1e-12), 1.0)
        out["dice_per_image"] = float(per_image.mean())
        return out
