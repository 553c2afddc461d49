"""Metrics as mmengine metrics, built on mmdet's ``CocoMetric`` and mmseg's ``IoUMetric``."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
from mmdet.evaluation.metrics import CocoMetric
from mmseg.evaluation.metrics import IoUMetric
from pycocotools.cocoeval import COCOeval

from benchmark.openmmlab.box_ap import ImageBoxes, box_map
from benchmark.openmmlab.froc import FROC_FPS, froc, froc_all_predictions

# mAP@[.40:.05:.75] (the RSNA Kaggle range); rounded so that 0.5 and 0.75 are exact and pycocotools can
# read AP@.5 / AP@.75 off the same evaluation.
IOU_THRS = tuple(round(0.40 + 0.05 * i, 2) for i in range(8))


class DetectionMetric(CocoMetric):
    """Box mAP over IoU 0.40:0.05:0.75, plus AP@0.5 and AP@0.75, in two definitions, at full precision.

    Keys (prefix ``det``): ``mAP``, ``mAP_50``, ``mAP_75`` as the published LoVT numbers
    (:func:`benchmark.openmmlab.box_ap.box_map`: VOC IoU with +1 on widths and heights, 101 recall points; 0 without
    any detection or ground truth); ``mAP_coco``, ``mAP_coco_50``, ``mAP_coco_75`` by pycocotools
    (continuous IoU; no detections at all scores 0, a split without ground-truth boxes NaN);
    ``n_detections``.
    """

    default_prefix = "det"

    def __init__(self, ann_file: str, iou_thrs=IOU_THRS, **kwargs) -> None:
        super().__init__(ann_file=ann_file, metric="bbox", iou_thrs=list(iou_thrs), **kwargs)

    def _prepare_ids(self) -> None:
        if self.cat_ids is None:
            self.cat_ids = self._coco_api.get_cat_ids(cat_names=self.dataset_meta["classes"])
        if self.img_ids is None:
            self.img_ids = self._coco_api.get_img_ids()

    def _gt_boxes(self, img_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth of one image as (x1, y1, x2, y2) boxes (x2 = x + w, as LoVT) and class indices."""
        anns = self._coco_api.loadAnns(self._coco_api.getAnnIds(imgIds=[img_id], catIds=self.cat_ids))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float64)
        labels = np.array([self.cat_ids.index(a["category_id"]) for a in anns], dtype=np.int64)
        return boxes.reshape(-1, 4), labels

    def _published_map(self, preds: list[dict]) -> dict[str, float]:
        """LoVT's ``BBoxMeanAPMetric`` on the images in evaluation order (images without a result last)."""
        images, seen = [], set()
        for pred in preds:
            img_id = int(pred["img_id"])
            seen.add(img_id)
            images.append(
                ImageBoxes(
                    np.asarray(pred["bboxes"], dtype=np.float64).reshape(-1, 4),
                    np.asarray(pred["scores"], dtype=np.float64),
                    np.asarray(pred["labels"], dtype=np.int64),
                    *self._gt_boxes(img_id),
                )
            )
        for img_id in self.img_ids:
            if img_id not in seen:
                no_preds = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
                images.append(ImageBoxes(*no_preds, *self._gt_boxes(img_id)))
        out = box_map(images, num_classes=len(self.cat_ids), iou_thresholds=self.iou_thrs)
        return {"mAP": out["mAP"], "mAP_50": out["mAP@0.5"], "mAP_75": out["mAP@0.75"]}

    def compute_metrics(self, results: list) -> dict[str, float]:
        _, preds = zip(*results)
        self._prepare_ids()
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
        out = dict(self._published_map(list(preds)), n_detections=len(dets))
        has_gt = len(self._coco_api.getAnnIds(imgIds=self.img_ids, catIds=self.cat_ids)) > 0
        if not dets:
            value = 0.0 if has_gt else math.nan
            return dict(out, mAP_coco=value, mAP_coco_50=value, mAP_coco_75=value)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
            coco_eval = COCOeval(self._coco_api, self._coco_api.loadRes(dets), "bbox")
            coco_eval.params.catIds = self.cat_ids
            coco_eval.params.imgIds = self.img_ids
            coco_eval.params.iouThrs = np.asarray(self.iou_thrs, dtype=np.float64)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        stats = [float(s) if s >= 0 else math.nan for s in coco_eval.stats[:3]]
        return dict(out, mAP_coco=stats[0], mAP_coco_50=stats[1], mAP_coco_75=stats[2])


class FROCMetric(DetectionMetric):
    """FROC of the Object-CXR challenge, plus the mAP values of :class:`DetectionMetric`.

    A prediction's point is its box centre. ``froc``: the challenge's definition as LoVT computes it
    (:func:`benchmark.openmmlab.froc.froc`), the hit tested on the annotation's bounding box (what the published numbers
    used); ``froc_all_predictions``: the same hits, unreached rates filled with the sensitivity of all
    predictions (:func:`benchmark.openmmlab.froc.froc_all_predictions`); ``froc_shape``: that rule with the hit tested
    on the true shape (the annotation's ``segmentation`` mask: rectangle, inscribed ellipse or polygon,
    rasterised by ``prepare``). Also ``<key>@<rate>`` for each false-positive rate.
    """

    def compute_metrics(self, results: list) -> dict[str, float]:
        from pycocotools import mask as mask_utils

        out = super().compute_metrics(results)
        objects: dict[int, list[tuple[int, list[float], np.ndarray | None]]] = {}
        for img_id in self.img_ids:
            anns = self._coco_api.loadAnns(self._coco_api.getAnnIds(imgIds=[img_id], catIds=self.cat_ids))
            objects[img_id] = [
                (
                    a["id"],
                    a["bbox"],
                    mask_utils.decode(a["segmentation"]) if isinstance(a.get("segmentation"), dict) else None,
                )
                for a in anns
            ]
        scores, hits_shape, hits_box = [], [], []
        for _, pred in results:
            for (x1, y1, x2, y2), score in zip(pred["bboxes"], pred["scores"]):
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                in_box, in_shape = [], []
                for ann_id, (bx, by, bw, bh), mask in objects.get(int(pred["img_id"]), []):
                    if bx <= cx <= bx + bw and by <= cy <= by + bh:
                        in_box.append(ann_id)
                        if mask is None:
                            in_shape.append(ann_id)
                        else:
                            r = min(max(int(cy), 0), mask.shape[0] - 1)
                            c = min(max(int(cx), 0), mask.shape[1] - 1)
                            if mask[r, c]:
                                in_shape.append(ann_id)
                scores.append(float(score))
                hits_shape.append(in_shape)
                hits_box.append(in_box)
        n_images = len(self.img_ids)
        n_objects = sum(len(v) for v in objects.values())
        for key, rule, hits in (
            ("froc", froc, hits_box),
            ("froc_all_predictions", froc_all_predictions, hits_box),
            ("froc_shape", froc_all_predictions, hits_shape),
        ):
            sens, value = rule(scores, hits, n_images, n_objects)
            out[key] = value
            for rate, s in zip(FROC_FPS, sens):
                out[f"{key}@{rate:g}"] = s
        return out


class SegMetric(IoUMetric):
    """Dice as the protocol defines it, from per-image intersection / prediction / label pixel counts.

    Single-label (class-index masks, ``classes[0]`` = background): mmseg's ``IoUMetric`` counts per image.
    Multi-label (``multi_label=True``, NIH: one binary mask per class, ``classes`` = the findings): the
    prediction and the label are (C, H, W) binary masks, counted per class.

    Keys (prefix ``seg``): ``dice`` = the mean over foreground classes of the per-class micro Dice (pixels
    pooled over the split; for one class simply its micro Dice; for NIH the protocol's mean of the 8
    per-class Dice), where a class in neither prediction nor label counts 0, as LoVT's torchmetrics
    ``F1(multiclass=False, average="micro")``; ``dice.<class>`` per class (the same rule); multi-label only:
    ``dice_present_classes`` = the mean over the classes present in prediction or label; ``iou`` = the mean
    over the present classes of the per-class micro IoU (``iou.<class>`` per class, multi-label);
    ``dice_per_image`` = mean over images of the per-image Dice of all foreground pixels (an image without
    foreground in prediction and label counts 1, the SIIM challenge convention).
    """

    default_prefix = "seg"

    def __init__(self, multi_label: bool = False, **kwargs) -> None:
        super().__init__(iou_metrics=["mDice"], **kwargs)
        self.multi_label = multi_label

    def process(self, data_batch, data_samples) -> None:
        if not self.multi_label:
            return super().process(data_batch, data_samples)
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].bool()
            label = sample["gt_sem_seg"]["data"].to(pred.device)
            valid = label != self.ignore_index
            gt = (label == 1) & valid
            pred = pred & valid
            inter = (pred & gt).sum(dim=(1, 2)).cpu()
            area_pred = pred.sum(dim=(1, 2)).cpu()
            area_label = gt.sum(dim=(1, 2)).cpu()
            self.results.append((inter, area_pred + area_label - inter, area_pred, area_label))

    def compute_metrics(self, results: list) -> dict[str, float]:
        inter, union, pred, label = (
            np.stack([r[i].numpy() for r in results]).astype(np.float64) for i in range(4)
        )
        classes = self.dataset_meta["classes"]
        fg = list(range(len(classes))) if self.multi_label else list(range(1, len(classes)))
        out: dict[str, float] = {}
        dices, present, ious = [], [], []
        for c in fg:
            denom = pred[:, c].sum() + label[:, c].sum()
            d = 2 * inter[:, c].sum() / denom if denom > 0 else 0.0  # torchmetrics' F1: 0 / 0 -> 0
            u = union[:, c].sum()
            dices.append(d)
            present.append(d if denom > 0 else math.nan)
            ious.append(inter[:, c].sum() / u if u > 0 else math.nan)
            out[f"dice.{classes[c]}"] = d
            if self.multi_label:
                out[f"iou.{classes[c]}"] = ious[-1]
        out["dice"] = float(np.mean(dices))
        if self.multi_label:
            out["dice_present_classes"] = _nanmean(present)
        out["iou"] = _nanmean(ious)
        p, gt, i = pred[:, fg].sum(axis=1), label[:, fg].sum(axis=1), inter[:, fg].sum(axis=1)
        per_image = np.where(p + gt > 0, 2 * i / np.maximum(p + gt, 1e-12), 1.0)
        out["dice_per_image"] = float(per_image.mean())
        return out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
