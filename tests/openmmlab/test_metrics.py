"""Loss and metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark import openmmlab  # noqa: F401
from benchmark.openmmlab.losses import DiceLoss, soft_dice_loss
from benchmark.openmmlab.metrics import IOU_THRS, DetectionMetric, SegMetric


def test_iou_thresholds_exact():
    assert IOU_THRS == (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)


def test_soft_dice_hand_computed():
    # two 1x1x2x2 images; probabilities via logits of known sigmoid values
    p = torch.tensor([[[[0.8, 0.2], [0.5, 0.0]]], [[[0.1, 0.1], [0.1, 0.1]]]]).clamp(1e-6, 1 - 1e-6)
    logits = torch.log(p / (1 - p))
    t = torch.tensor([[[[1, 0], [1, 0]]], [[[0, 0], [0, 0]]]])
    inter = 0.8 + 0.5
    denom = (0.8 + 0.2 + 0.5 + 0.0 + 0.4) + 2
    assert soft_dice_loss(logits, t).item() == pytest.approx(1 - 2 * inter / denom, abs=1e-5)
    # the mmseg-facing module reads a class-index label and ignores 255
    label = torch.tensor([[[1, 0], [1, 255]], [[0, 0], [0, 0]]])
    loss = DiceLoss()(logits, label)
    denom_valid = (0.8 + 0.2 + 0.5 + 0.4) + 2
    assert loss.item() == pytest.approx(1 - 2 * inter / denom_valid, abs=1e-5)


def test_dice_loss_goes_down_and_targets_foreground():
    torch.manual_seed(0)
    label = (torch.rand(4, 16, 16) > 0.7).long()
    logits = torch.zeros(4, 1, 16, 16, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    first = None
    for _ in range(50):
        loss = DiceLoss()(logits, label)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    assert torch.equal((logits.detach()[:, 0] > 0).long(), label)  # foreground, not background


def seg_sample(pred, gt):
    """A data sample as mmseg's evaluator passes it (``to_dict()`` of a SegDataSample)."""
    return {
        "pred_sem_seg": {"data": torch.tensor(pred)[None]},
        "gt_sem_seg": {"data": torch.tensor(gt)[None]},
    }


def test_seg_metric_micro_vs_per_image():
    metric = SegMetric()
    metric.dataset_meta = {"classes": ("background", "opacity")}
    a_pred, a_gt = [[1, 1], [0, 0]], [[1, 0], [0, 0]]  # I=1, P=2, L=1 -> dice 2/3
    b_pred, b_gt = [[0, 0], [0, 0]], [[1, 1], [1, 0]]  # I=0, P=0, L=3 -> dice 0
    c_pred, c_gt = [[0, 0], [0, 0]], [[0, 0], [0, 0]]  # empty/empty -> 1 (per image only)
    metric.process({}, [seg_sample(a_pred, a_gt), seg_sample(b_pred, b_gt), seg_sample(c_pred, c_gt)])
    out = metric.compute_metrics(metric.results)
    assert out["dice"] == pytest.approx(2 * 1 / (2 + 4))  # pooled: I=1, P=2, L=4
    assert out["dice.opacity"] == out["dice"]
    assert out["dice_per_image"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert out["iou"] == pytest.approx(1 / 5)


def _coco_gt(tmp_path):
    import json

    gt = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 100},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 100},
            {"id": 3, "file_name": "c.png", "width": 100, "height": 100},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [50, 50, 20, 40], "area": 800, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5, 60, 20, 20], "area": 400, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "opacity"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def test_detection_metric_coco_keys_equal_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path = _coco_gt(tmp_path)
    preds = [
        (1, [[12, 11, 41, 42], [60, 60, 90, 90]], [0.9, 0.3]),  # IoU ~0.83 hit + a false positive
        (2, [[50, 55, 70, 90], [5, 60, 20, 75]], [0.8, 0.6]),  # IoU 0.75 and ~0.56
        (3, [[0, 0, 10, 10]], [0.5]),
    ]
    metric = DetectionMetric(ann_file=str(path))
    metric.dataset_meta = {"classes": ("opacity",)}
    results = [
        (
            {},
            {
                "img_id": i,
                "bboxes": np.array(b, float),
                "scores": np.array(s),
                "labels": np.zeros(len(s), int),
            },
        )
        for i, b, s in preds
    ]
    out = metric.compute_metrics(results)
    coco = COCO(str(path))
    dets = [
        {"image_id": i, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": sc}
        for i, b, s in preds
        for (x1, y1, x2, y2), sc in zip(b, s)
    ]
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.params.iouThrs = np.array(IOU_THRS)
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert out["mAP_coco"] == pytest.approx(ev.stats[0]) and out["mAP_coco_50"] == pytest.approx(ev.stats[1])
    assert out["mAP_coco_75"] == pytest.approx(ev.stats[2]) and 0 < out["mAP_coco_75"] < out["mAP_coco_50"]
    assert out["n_detections"] == 5
    empty = metric.compute_metrics(
        [({}, {"img_id": 1, "bboxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)})]
    )
    assert empty["mAP_coco"] == 0.0 and not math.isnan(empty["mAP_coco_50"])
    assert empty["mAP"] == 0.0 and empty["mAP_50"] == 0.0  # LoVT's definition (tests/openmmlab/test_published_metrics.py)


def test_froc_all_predictions_hand_computed():
    from benchmark.openmmlab.froc import froc_all_predictions as froc

    # image 0 has objects 1 (ellipse) and 2; image 1 has none. Hits as "true shape" (p2 lies in the
    # ellipse's bounding box but outside the ellipse) and as "bounding box".
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    shape_hits = [[1], [], [], [2], []]
    box_hits = [[1], [1], [], [2], []]
    assert froc(scores, shape_hits, 2, 2, fps=(0.5, 1.0)) == ([0.5, 0.5], 0.5)
    assert froc(scores, box_hits, 2, 2, fps=(0.5, 1.0)) == ([0.5, 1.0], 0.75)
    # rates never reached get the sensitivity of all predictions
    assert froc(scores, box_hits, 2, 2, fps=(0.5, 1.0, 8.0))[0] == [0.5, 1.0, 1.0]
    assert froc([0.9], [[1]], 2, 2, fps=(0.5,)) == ([0.5], 0.5)
    assert math.isnan(froc([], [], 3, 0)[1])
