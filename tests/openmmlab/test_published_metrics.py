"""The primary metrics against the code of the published numbers, on randomized inputs and edge cases.

- ``mAP``: LoVT's ``BBoxMeanAPMetric`` wrapper (copied below) around the ``mean_average_precision`` package
  itself (a test dependency).
- ``froc``: LoVT's ``FrocMetric`` (copied below), the Object-CXR challenge's ``froc.py`` on box centres.
- NIH ``dice``: LoVT's torchmetrics F1 (micro, binary) per class, averaged over the 8 classes.
"""

from __future__ import annotations

import json
import math
import re
from collections import namedtuple
from pathlib import Path

import mean_average_precision  # test dependency (dev extra): the package LoVT's mAP used
import numpy as np
import pytest
import torch

from benchmark import openmmlab  # noqa: F401
from benchmark.openmmlab.box_ap import IOU_THRESHOLDS, ImageBoxes, box_map
from benchmark.openmmlab.froc import FROC_FPS, froc, froc_all_predictions
from benchmark.openmmlab.metrics import DetectionMetric, FROCMetric, SegMetric
from tasks.registry import METRIC_KEYS, SECONDARY_METRICS

# ------------------------------------------------------------------------------------ reference code
# Copied from github.com/philip-mueller/lovt @ 87b9a30750996e1e916464522221a03821ceb073,
# src/metrics/detection_metrics.py; only the pytorch_lightning Metric base class is left out (update /
# compute / the package calls are verbatim).


class LoVTBBoxMeanAPMetric:
    def __init__(
        self,
        class_names,
        iou_thresholds=(0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75),
        extra_reported_thresholds=(0.5, 0.75),
    ):
        self.iou_thresholds = np.array(iou_thresholds)
        self.extra_reported_thresholds = []
        for extra_thres in extra_reported_thresholds:
            found_close = False
            for thres in self.iou_thresholds:
                if np.isclose(thres, extra_thres):
                    self.extra_reported_thresholds.append(thres)
                    found_close = True
            if not found_close:
                raise ValueError(f"{extra_thres} not found in {self.iou_thresholds}")
        self.metric = mean_average_precision.MeanAveragePrecision2d(len(class_names))
        self.class_names = class_names

    def update(self, predictions, targets):
        for predicted, target in zip(predictions, targets):
            pred_boxes = predicted["boxes"].detach().cpu().numpy()
            pred_scores = predicted["conf"].detach().cpu().numpy()
            pred_classes = predicted["classes"].detach().cpu().numpy()
            target_classes = target["classes"].detach().cpu().numpy()
            target_boxes = target["boxes"].detach().cpu().numpy()

            # [xmin, ymin, xmax, ymax, class_id, difficult, crowd]
            gt = np.zeros((len(target_boxes), 7))
            gt[:, 0:2] = target_boxes[:, 0:2]
            gt[:, 2:4] = target_boxes[:, 0:2] + target_boxes[:, 2:4]
            gt[:, 4] = target_classes
            # [xmin, ymin, xmax, ymax, class_id, confidence]
            preds = np.zeros((len(pred_boxes), 6))
            preds[:, 0:2] = pred_boxes[:, 0:2]
            preds[:, 2:4] = pred_boxes[:, 0:2] + pred_boxes[:, 2:4]
            preds[:, 4] = pred_classes
            preds[:, 5] = pred_scores
            self.metric.add(preds, gt)

    def compute(self):
        computed_metrics = self.metric.value(
            iou_thresholds=self.iou_thresholds, mpolicy="soft", recall_thresholds=np.arange(0.0, 1.01, 0.01)
        )
        metrics = {"mAP": computed_metrics["mAP"]}
        for c, class_name in enumerate(self.class_names):
            metrics[f"{class_name}_mAP"] = np.mean(
                [computed_metrics[t][c]["ap"] for t in self.iou_thresholds]
            )
        for t in self.extra_reported_thresholds:
            metrics[f"mAP@{t}"] = np.mean(
                [computed_metrics[t][c]["ap"] for c in range(len(self.class_names))]
            )
        return metrics


Prediction = namedtuple("Prediction", ["image_index", "probability", "coordinates"])


class LoVTFrocMetric:
    """LoVT's FrocMetric; its loop is the challenge's froc.py (github.com/hlk-1135/object-CXR @
    dcd29e65115f4739ec05f4270d8d9a26d29ec4c0, the fork LoVT cites) on box centres, plus the fallback when no
    rate is reached (the challenge's script fails there)."""

    def __init__(self, fps=(0.125, 0.25, 0.5, 1, 2, 4, 8)):
        self.fps = fps
        self.preds = []
        self.target_boxes = []  # 1 element per sample
        self.num_target_boxes = 0

    def update(self, predictions, targets):
        for predicted, target in zip(predictions, targets):
            pred_boxes = predicted["boxes"].detach().cpu().numpy()
            pred_probs = predicted["conf"].detach().cpu().numpy()
            target_boxes = target["boxes"].detach().cpu().numpy()
            target_boxes[:, 2:] = target_boxes[:, :2] + target_boxes[:, 2:]  # convert to x1, y1, x2, y2 box

            image_id = len(self.target_boxes)
            self.target_boxes.append(target_boxes)
            self.num_target_boxes += len(target_boxes)
            assert self.target_boxes[image_id] is target_boxes

            coords = pred_boxes[:, :2] + pred_boxes[:, 2:] / 2  # convert to center coord

            for coord, prob in zip(coords, pred_probs):
                self.preds.append(Prediction(image_id, prob, coord))

    def compute(self):
        num_images = len(self.target_boxes)
        # sort prediction by probabiliyt
        preds = sorted(self.preds, key=lambda x: x.probability, reverse=True)

        # compute hits and false positives
        hits = 0
        false_positives = 0
        fps_idx = 0
        object_hitted = set()
        fps = self.fps
        froc = []
        for i in range(len(preds)):
            is_inside = False
            pred = preds[i]
            for box_index, box in enumerate(self.target_boxes[pred.image_index]):
                box_id = (pred.image_index, box_index)
                if inside_object(pred, box):
                    is_inside = True
                    if box_id not in object_hitted:
                        hits += 1
                        object_hitted.add(box_id)

            if not is_inside:
                false_positives += 1

            if false_positives / num_images >= fps[fps_idx]:
                sensitivity = hits / self.num_target_boxes
                froc.append(sensitivity)
                fps_idx += 1

                if len(fps) == len(froc):
                    break

        if len(froc) == 0:
            if self.num_target_boxes == 0:
                froc_metric = np.array(1.0)
            else:
                froc_metric = np.array(float(hits) / self.num_target_boxes)
        else:
            while len(froc) < len(fps):
                froc.append(froc[-1])
            froc_metric = np.mean(froc)
        return torch.tensor(froc_metric, dtype=torch.float)


def inside_object(pred, box):
    x1, y1, x2, y2 = box
    x, y = pred.coordinates
    return x1 <= x <= x2 and y1 <= y <= y2


# ------------------------------------------------------------------------------------ generated data


def _random_split(rng, n_images, n_classes=1, ties=False, p_pred=1.0, p_obj=0.6, grid=True):
    """Images with ground-truth boxes (x, y, w, h) and predictions (x1, y1, x2, y2, float32 scores).

    ``grid``: coordinates on a 1/8 px grid, so that x + w and (x1 + x2) / 2 are exact in every convention
    (and IoUs / centres land exactly on thresholds and box edges now and then)."""
    images = []
    q = (lambda a: np.round(a * 8) / 8) if grid else (lambda a: a)
    for _ in range(n_images):
        m = int(rng.integers(1, 4)) if rng.random() < p_obj else 0
        gt_xy = q(rng.uniform(0, 180, (m, 2)))
        gt_wh = q(rng.uniform(2, 60, (m, 2)))
        n = int(rng.integers(0, 9)) if rng.random() < p_pred else 0
        xy, wh = q(rng.uniform(0, 180, (n, 2))), q(rng.uniform(2, 60, (n, 2)))
        for i in range(n):
            if m and rng.random() < 0.6:  # near an object
                j = int(rng.integers(m))
                xy[i] = q(gt_xy[j] + rng.normal(0, 4, 2))
                wh[i] = q(np.maximum(gt_wh[j] + rng.normal(0, 4, 2), 1))
        scores = rng.choice([0.25, 0.5, 0.75], n) if ties else rng.random(n)
        images.append(
            {
                "gt": np.concatenate([gt_xy, gt_wh], 1),
                "gt_labels": rng.integers(0, n_classes, m),
                "boxes": np.concatenate([xy, xy + wh], 1).astype(np.float32),
                "scores": scores.astype(np.float32),
                "labels": rng.integers(0, n_classes, n),
            }
        )
    return images


def _coco_file(tmp_path: Path, images, n_classes=1) -> Path:
    anns = []
    for k, im in enumerate(images):
        for (x, y, w, h), c in zip(im["gt"].tolist(), im["gt_labels"].tolist()):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": k + 1,
                    "category_id": c + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    gt = {
        "images": [
            {"id": k + 1, "file_name": f"{k}.png", "width": 256, "height": 256} for k in range(len(images))
        ],
        "annotations": anns,
        "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(n_classes)],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def _ours(metric_cls, tmp_path, images, n_classes=1) -> dict:
    metric = metric_cls(ann_file=str(_coco_file(tmp_path, images, n_classes)))
    metric.dataset_meta = {"classes": tuple(f"c{c}" for c in range(n_classes))}
    results = [
        (
            {},
            {
                "img_id": k + 1,
                "bboxes": im["boxes"],
                "scores": im["scores"],
                "labels": im["labels"],
            },
        )
        for k, im in enumerate(images)
    ]
    return metric.compute_metrics(results)


def _lovt_inputs(images):
    """LoVT's model output / target dicts: boxes as (x, y, w, h) float32 tensors (its NMS converts x1y1x2y2)."""
    preds, targets = [], []
    for im in images:
        b = torch.from_numpy(im["boxes"])
        preds.append(
            {
                "boxes": torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1),
                "conf": torch.from_numpy(im["scores"]),
                "classes": torch.from_numpy(im["labels"]),
            }
        )
        targets.append(
            {
                "boxes": torch.tensor(im["gt"], dtype=torch.float32).reshape(-1, 4),
                "classes": torch.from_numpy(im["gt_labels"]),
            }
        )
    return preds, targets


def _lovt_map(images, n_classes=1) -> dict:
    ref = LoVTBBoxMeanAPMetric([f"c{c}" for c in range(n_classes)])
    ref.update(*_lovt_inputs(images))
    return ref.compute()


def _lovt_froc(images):
    ref = LoVTFrocMetric()
    ref.update(*_lovt_inputs(images))
    try:
        return float(ref.compute())
    except ZeroDivisionError:  # LoVT: false positives but no object at all
        return math.nan


# ------------------------------------------------------------------------------------ mAP


CASES = [
    # (seed, images, classes, ties, share of images with predictions, share with objects)
    *[(s, 1 + 3 * s, 1, s % 3 == 0, 0.9, 0.6) for s in range(12)],
    *[(100 + s, 20, 2, s % 2 == 0, 0.9, 0.6) for s in range(4)],
    (200, 1, 1, False, 1.0, 1.0),  # a single image
    (201, 15, 1, False, 0.0, 0.6),  # no predictions at all
    (202, 15, 1, False, 1.0, 0.0),  # no objects at all
    (203, 40, 1, True, 1.0, 0.2),  # mostly images without objects, tied scores (> 16 of them)
    (204, 1, 1, True, 0.0, 0.0),  # nothing at all
]


@pytest.mark.parametrize("seed,n,classes,ties,p_pred,p_obj", CASES)
def test_map_equals_lovt_and_the_package(tmp_path, seed, n, classes, ties, p_pred, p_obj):
    rng = np.random.default_rng(seed)
    images = _random_split(rng, n, classes, ties, p_pred, p_obj)
    ref = _lovt_map(images, classes)
    out = _ours(DetectionMetric, tmp_path, images, classes)
    assert out["mAP"] == pytest.approx(float(ref["mAP"]), abs=1e-6)
    assert out["mAP_50"] == pytest.approx(float(ref["mAP@0.5"]), abs=1e-6)
    assert out["mAP_75"] == pytest.approx(float(ref["mAP@0.75"]), abs=1e-6)
    assert not math.isnan(out["mAP"])  # the package: 0 without predictions or objects, never NaN


def test_map_pure_function_on_continuous_boxes():
    """Off the grid too (float64 boxes fed to both as they are)."""
    worst = 0.0
    for seed in range(10):
        rng = np.random.default_rng(1000 + seed)
        images = _random_split(rng, 25, 1, ties=seed % 2 == 0, grid=False)
        ours = box_map(
            [
                ImageBoxes(
                    im["boxes"].astype(np.float64),
                    im["scores"],
                    im["labels"],
                    np.concatenate([im["gt"][:, :2], im["gt"][:, :2] + im["gt"][:, 2:]], 1),
                    im["gt_labels"],
                )
                for im in images
            ],
            1,
        )
        pkg = mean_average_precision.MeanAveragePrecision2d(1)
        for im in images:
            p = np.zeros((len(im["boxes"]), 6))
            p[:, :4], p[:, 4], p[:, 5] = im["boxes"], im["labels"], im["scores"]
            g = np.zeros((len(im["gt"]), 7))
            g[:, :2], g[:, 2:4], g[:, 4] = im["gt"][:, :2], im["gt"][:, :2] + im["gt"][:, 2:], im["gt_labels"]
            pkg.add(p, g)
        value = pkg.value(
            iou_thresholds=np.array(IOU_THRESHOLDS),
            mpolicy="soft",
            recall_thresholds=np.arange(0.0, 1.01, 0.01),
        )
        worst = max(worst, abs(ours["mAP"] - float(value["mAP"])))
        assert 0 < ours["mAP"] < 1
    assert worst <= 1e-6


def test_map_uses_the_pixel_convention_and_strict_threshold():
    """A 4x4 box against a 4x2 half of it: IoU 0.5 continuous, (5 * 3) / (5 * 5) = 0.6 with +1 (LoVT)."""
    im = ImageBoxes(
        np.array([[0.0, 0.0, 4.0, 2.0]]),
        np.array([0.9]),
        np.array([0]),
        np.array([[0.0, 0.0, 4.0, 4.0]]),
        np.array([0]),
    )
    out = box_map([im], 1)
    assert out["mAP@0.55"] == pytest.approx(1.0) and out["mAP@0.6"] == 0.0  # 0.6 > 0.6 is false
    assert out["mAP"] == pytest.approx(4 / 8)  # 0.4 .. 0.55 hit


def test_coco_map_is_kept_as_secondary(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = _random_split(np.random.default_rng(7), 12)
    path = _coco_file(tmp_path, images)
    out = _ours(DetectionMetric, tmp_path, images)
    dets = [
        {
            "image_id": k + 1,
            "category_id": 1,
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(s),
        }
        for k, im in enumerate(images)
        for (x1, y1, x2, y2), s in zip(im["boxes"], im["scores"])
    ]
    coco = COCO(str(path))
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.params.iouThrs = np.array(IOU_THRESHOLDS)
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert out["mAP_coco"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert out["mAP_coco_50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert out["mAP_coco_75"] == pytest.approx(ev.stats[2], abs=1e-12)
    assert out["mAP"] != pytest.approx(out["mAP_coco"], abs=1e-4)  # two definitions, both recorded


# ------------------------------------------------------------------------------------ FROC


@pytest.mark.parametrize("seed,n,classes,ties,p_pred,p_obj", [c for c in CASES if c[2] == 1])
def test_froc_equals_lovt(tmp_path, seed, n, classes, ties, p_pred, p_obj):
    images = _random_split(np.random.default_rng(seed), n, 1, ties, p_pred, p_obj)
    ref = _lovt_froc(images)
    out = _ours(FROCMetric, tmp_path, images)
    if math.isnan(ref):
        assert math.isnan(out["froc"])
    else:
        assert out["froc"] == pytest.approx(ref, abs=1e-6)


def test_froc_equals_lovt_when_rates_are_never_reached(tmp_path):
    """Few false positives (mostly hits, 40 images): 8 per image is never reached."""
    rng = np.random.default_rng(5)
    images = _random_split(rng, 40, 1, p_obj=1.0)
    for im in images:  # centre every prediction on an object, then a few misses
        gt = im["gt"]
        k = len(im["scores"])
        centres = gt[rng.integers(0, len(gt), k), :2] + gt[rng.integers(0, len(gt), k), 2:] / 4
        im["boxes"] = np.concatenate([centres - 1, centres + 1], 1).astype(np.float32)
    images[0]["boxes"][:1] = np.array([[240, 240, 242, 242]], np.float32)  # one false positive
    ref = _lovt_froc(images)
    out = _ours(FROCMetric, tmp_path, images)
    assert out["froc"] == pytest.approx(ref, abs=1e-6)
    assert out["froc_all_predictions"] > out["froc"] + 0.01  # the secondary rule reads higher here


def test_froc_hand_computed_edge_cases():
    # one rate per prediction: the hit after the first false positive counts for rate 1 (challenge quirk)
    assert froc([0.9, 0.8], [[], [1]], 1, 1, fps=(0.5, 1.0)) == ([0.0, 1.0], 0.5)
    assert froc_all_predictions([0.9, 0.8], [[], [1]], 1, 1, fps=(0.5, 1.0)) == ([0.0, 0.0], 0.0)
    # unreached rates: the last recorded sensitivity (not that of all predictions)
    assert froc([0.9, 0.8, 0.7], [[], [1], [2]], 2, 2, fps=(0.5, 1.0)) == ([0.0, 0.0], 0.0)
    assert froc_all_predictions([0.9, 0.8, 0.7], [[], [1], [2]], 2, 2, fps=(0.5, 1.0))[1] == 0.5
    # no rate reached at all: hits / objects (LoVT's fallback)
    assert froc([0.9], [[1]], 2, 2, fps=(0.5,)) == ([0.5], 0.5)
    assert froc([], [], 3, 4) == ([0.0] * 7, 0.0)  # no predictions
    assert froc([], [], 3, 0)[1] == 1.0  # no objects, nothing reached: LoVT's 1.0
    assert math.isnan(froc([0.5], [[]], 1, 0)[1])  # LoVT divides by zero here
    # ties: in the order given (Python's stable sort, as LoVT)
    assert froc([0.5, 0.5], [[], [1]], 1, 1, fps=(1.0,))[1] == 0.0
    assert froc([0.5, 0.5], [[1], []], 1, 1, fps=(1.0,))[1] == 1.0
    with pytest.raises(ValueError):
        froc([0.5], [], 1, 1)


def test_froc_metric_keys_by_definition(tmp_path):
    from pycocotools import mask as mask_utils

    ellipse = np.zeros((100, 100), dtype=np.uint8)
    rr, cc = np.mgrid[0:100, 0:100] + 0.5
    ellipse[((cc - 30) / 20) ** 2 + ((rr - 20) / 10) ** 2 <= 1] = 1  # inscribed in the box [10, 10, 40, 20]
    r = mask_utils.encode(np.asfortranarray(ellipse))
    gt = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in (1, 2)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 20], "area": 800, "iscrowd": 0,
             "segmentation": {"size": r["size"], "counts": r["counts"].decode()}},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 60, 10, 10], "area": 100, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "foreign_object"}],
    }  # fmt: skip
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    metric = FROCMetric(ann_file=str(path))
    metric.dataset_meta = {"classes": ("foreign_object",)}

    def pred(img_id, centres, scores):
        boxes = np.array([[x - 2, y - 2, x + 2, y + 2] for x, y in centres], float)
        return (
            {},
            {
                "img_id": img_id,
                "bboxes": boxes,
                "scores": np.array(scores),
                "labels": np.zeros(len(scores), int),
            },
        )

    # .9 hit 1 (in the ellipse), .8 in the box of 1 but outside the ellipse, .7 FP, .6 hit 2, .5 FP
    out = metric.compute_metrics(
        [pred(1, [(30, 20), (12, 12), (65, 65)], [0.9, 0.8, 0.6]), pred(2, [(50, 50), (40, 40)], [0.7, 0.5])]
    )
    # challenge / LoVT on boxes: .7 records 0.125 (1/2); .6 records 0.25 (2/2); .5 records 0.5; rest = last
    assert [out[f"froc@{r:g}"] for r in FROC_FPS] == [0.5, 1, 1, 1, 1, 1, 1]
    assert out["froc"] == pytest.approx(6.5 / 7)
    # all predictions, boxes: .7 (0.5 per image) records 0.125..0.5 at 1/2; .5 records 1; unreached: 2/2
    assert [out[f"froc_all_predictions@{r:g}"] for r in FROC_FPS] == [0.5, 0.5, 0.5, 1, 1, 1, 1]
    # all predictions, shapes: .8 is a false positive too
    assert [out[f"froc_shape@{r:g}"] for r in FROC_FPS] == [0.5, 0.5, 0.5, 0.5, 1, 1, 1]
    assert "mAP" in out and "mAP_coco" in out


# ------------------------------------------------------------------------------------ Dice


def _seg_results(pred, gt):
    return [
        {"pred_sem_seg": {"data": torch.from_numpy(p)}, "gt_sem_seg": {"data": torch.from_numpy(g)}}
        for p, g in zip(pred, gt)
    ]


@pytest.mark.parametrize("seed", range(6))
def test_nih_mean_class_dice_equals_lovt_torchmetrics_f1(seed):
    from torchmetrics.classification import BinaryF1Score

    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 6)), 8
    pred = (rng.random((n, c, 16, 16)) < 0.2).astype(np.uint8)
    gt = (rng.random((n, c, 16, 16)) < 0.2).astype(np.uint8)
    absent = rng.choice(c, 2 + seed % 3, replace=False)  # classes in neither prediction nor label
    pred[:, absent] = 0
    gt[:, absent] = 0
    if seed % 2:  # a class only in the label (Dice 0 in both definitions)
        pred[:, next(i for i in range(c) if i not in absent)] = 0
    classes = tuple(f"c{i}" for i in range(c))
    metric = SegMetric(multi_label=True)
    metric.dataset_meta = {"classes": classes}
    metric.process({}, _seg_results(pred, gt))
    out = metric.compute_metrics(metric.results)
    # LoVT: F1(multiclass=False, average="micro") per class on the probabilities, then the mean (avg_dice)
    f1 = [
        float(BinaryF1Score()(torch.from_numpy(pred[:, i]).float(), torch.from_numpy(gt[:, i])))
        for i in range(c)
    ]
    assert out["dice"] == pytest.approx(float(torch.tensor(f1).mean()), abs=1e-6)
    for i in range(c):
        assert out[f"dice.c{i}"] == pytest.approx(f1[i], abs=1e-6)
    present = [f for i, f in enumerate(f1) if pred[:, i].any() or gt[:, i].any()]
    assert out["dice_present_classes"] == pytest.approx(float(np.mean(present)), abs=1e-6)
    assert out["dice_present_classes"] > out["dice"]


def test_single_class_dice_equals_torchmetrics_f1():
    from torchmetrics.classification import BinaryF1Score

    rng = np.random.default_rng(3)
    pred = (rng.random((4, 1, 16, 16)) < 0.3).astype(np.uint8)
    gt = (rng.random((4, 1, 16, 16)) < 0.3).astype(np.uint8)
    metric = SegMetric()
    metric.dataset_meta = {"classes": ("background", "opacity")}
    metric.process({}, _seg_results(pred.astype(np.int64), gt.astype(np.int64)))
    out = metric.compute_metrics(metric.results)
    assert out["dice"] == pytest.approx(
        float(BinaryF1Score()(torch.from_numpy(pred).float(), torch.from_numpy(gt))), abs=1e-6
    )
    empty = SegMetric()
    empty.dataset_meta = {"classes": ("background", "opacity")}
    zeros = np.zeros((2, 1, 4, 4), np.int64)
    empty.process({}, _seg_results(zeros, zeros))
    assert empty.compute_metrics(empty.results)["dice"] == 0.0  # torchmetrics' F1 of nothing


# ------------------------------------------------------------------------------------ keys


def test_every_metric_key_is_declared_and_documented(tmp_path):
    """The metrics emit the primary keys, the declared secondary ones and their per-class / per-rate values
    only; results/README.md explains every secondary key."""
    images = _random_split(np.random.default_rng(0), 6)
    keys = set(_ours(FROCMetric, tmp_path, images))
    metric = SegMetric(multi_label=True)
    metric.dataset_meta = {"classes": ("a", "b")}
    metric.process({}, _seg_results(np.ones((1, 2, 4, 4), np.uint8), np.ones((1, 2, 4, 4), np.uint8)))
    keys |= set(metric.compute_metrics(metric.results))
    declared = {k.record for k in METRIC_KEYS.values()} | set(SECONDARY_METRICS) | {"n_detections"}
    for k in keys:
        base = re.sub(r"@[0-9.]+$", "", k) if "@" in k else re.sub(r"\..*$", "", k)
        assert base in declared, k
    assert {"mAP_coco", "froc_all_predictions", "froc_shape", "dice_present_classes"} <= keys
    readme = (Path(__file__).resolve().parents[2] / "results" / "README.md").read_text()
    for k in SECONDARY_METRICS:
        assert f"`{k}`" in readme, k
