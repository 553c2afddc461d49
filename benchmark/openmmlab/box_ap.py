"""Box mAP as the published LoVT numbers computed it, as a pure function.

LoVT's ``BBoxMeanAPMetric`` (github.com/philip-mueller/lovt ``src/metrics/detection_metrics.py``) feeds
every test image to ``MeanAveragePrecision2d`` of the ``mean_average_precision`` package
(github.com/bes-dev/mean_average_precision) and reads ``value(iou_thresholds=0.40:0.05:0.75,
mpolicy="soft", recall_thresholds=np.arange(0., 1.01, 0.01))``. This module is that computation without
pandas and without the package's row-by-row table walk (minutes on a full test split), and gives the
same numbers (``tests/openmmlab/test_published_metrics.py`` compares it with the package itself):

- IoU in the VOC pixel convention: every width and height gets +1 (``(x2 - x1 + 1) * (y2 - y1 + 1)``);
  a prediction matches when its IoU is strictly greater than the threshold.
- Predictions of a class are walked in decreasing confidence, in the order the package sorts its table
  (pandas ``sort_values(ascending=False)`` on the object-typed confidence column, i.e. numpy's quicksort
  of the reversed column, reversed: ties between equal confidences are broken exactly as there).
- ``soft`` matching: a prediction takes the unmatched ground truth of its image with the highest IoU
  above the threshold (ground truths ordered by ``np.argsort(iou)[::-1]``); otherwise it is a false
  positive.
- AP = mean over the 101 recall thresholds 0, 0.01, ..., 1 of the highest precision at a recall at
  least that threshold (0 where the recall is never reached), accumulated and stored in float32 as the
  package does. A class without predictions scores 0, also without ground truth (never NaN).
- mAP = mean over IoU thresholds of the mean over classes; ``mAP@t`` = mean over classes at one threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# LoVT's thresholds: np.array((0.4, 0.45, ..., 0.75)), and the two it reports on their own.
IOU_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
RECALL_THRESHOLDS = np.arange(0.0, 1.01, 0.01)  # as LoVT passes them (101 values)


@dataclass(frozen=True)
class ImageBoxes:
    """One image: predicted boxes (x1, y1, x2, y2), their confidence and class; ground-truth boxes and class."""

    boxes: np.ndarray  # (N, 4)
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) int
    gt_boxes: np.ndarray  # (M, 4)
    gt_labels: np.ndarray  # (M,) int


def voc_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, M) IoU with +1 on every width and height, operation for operation the package's ``compute_iou``."""
    ixmin = np.maximum(gt[None, :, 0], pred[:, None, 0])
    iymin = np.maximum(gt[None, :, 1], pred[:, None, 1])
    ixmax = np.minimum(gt[None, :, 2], pred[:, None, 2])
    iymax = np.minimum(gt[None, :, 3], pred[:, None, 3])
    width = np.maximum(ixmax - ixmin + 1.0, 0)
    height = np.maximum(iymax - iymin + 1.0, 0)
    inter = width * height
    area_gt = (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0)
    area_pred = (pred[:, 2] - pred[:, 0] + 1.0) * (pred[:, 3] - pred[:, 1] + 1.0)
    return inter / (area_gt[None, :] + area_pred[:, None] - inter)


def _descending(confidence: list[float]) -> np.ndarray:
    """The package's sort: pandas ``nargsort(ascending=False)`` of an object column (quicksort, unstable)."""
    items = np.empty(len(confidence), dtype=object)
    items[:] = confidence
    idx = np.arange(len(items))[::-1]
    return idx[items[::-1].argsort(kind="quicksort")][::-1]


def _average_precision(tp: np.ndarray, fp: np.ndarray, n_positives: int) -> float:
    """``compute_precision_recall`` + ``compute_average_precision_with_recall_thresholds``."""
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(float(n_positives), 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    # highest precision at recall >= t: recall never decreases, so a running maximum from the right
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    ap = 0.0
    for i in first:
        ap = ap + (envelope[i] if i < len(recall) else 0) / RECALL_THRESHOLDS.size
    return ap


def box_map(
    images: Sequence[ImageBoxes], num_classes: int, iou_thresholds: Sequence[float] = IOU_THRESHOLDS
) -> dict:
    """LoVT's ``BBoxMeanAPMetric.compute`` on the images in the order LoVT would see them.

    Returns:
        ``{"mAP": float, "ap": float32 array (thresholds x classes), "mAP@<t>": float for each threshold}``.
    """
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    aps = np.zeros((len(thresholds), num_classes), dtype=np.float32)
    for c in range(num_classes):
        n_positives = 0
        confidence: list[float] = []
        img_of: list[int] = []
        iou_rows: list[np.ndarray] = []
        for k, im in enumerate(images):
            gt = np.asarray(im.gt_boxes, dtype=np.float64).reshape(-1, 4)[np.asarray(im.gt_labels) == c]
            n_positives += len(gt)
            sel = np.asarray(im.labels) == c
            if not sel.any():
                continue
            pred = np.asarray(im.boxes, dtype=np.float64).reshape(-1, 4)[sel]
            confidence += np.asarray(im.scores, dtype=np.float64)[sel].tolist()
            img_of += [k] * len(pred)
            iou = voc_iou(pred, gt) if len(gt) else np.zeros((len(pred), 0))
            iou_rows += list(iou)
        order = _descending(confidence)
        # matching is per image: walk the predictions of each image with ground truth in the global order
        # (elsewhere every prediction is a false positive); ground truths by decreasing IoU as the package
        per_image: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for d, row in enumerate(order):
            iou = iou_rows[row]
            if len(iou):
                by_iou = np.argsort(iou)[::-1]  # the package's `order` (row_to_vars)
                per_image.setdefault(img_of[row], []).append((d, by_iou, iou[by_iou]))
        for t_idx, t in enumerate(thresholds):
            tp = np.zeros(len(order), dtype=np.float64)
            fp = np.ones(len(order), dtype=np.float64)
            for candidates in per_image.values():
                matched: list[int] = []
                for d, by_iou, ious in candidates:
                    for g, iou in zip(by_iou.tolist(), ious.tolist()):  # soft policy (check_box)
                        if not iou > t:
                            break
                        if g not in matched:
                            matched.append(g)
                            tp[d], fp[d] = 1, 0
                            break
            aps[t_idx, c] = _average_precision(tp, fp, n_positives)
    out = {"mAP": float(aps.mean(axis=1).mean(axis=0)), "ap": aps}
    for t_idx, t in enumerate(thresholds):
        out[f"mAP@{t:g}"] = float(np.mean([aps[t_idx, c] for c in range(num_classes)]))
    return out
