"""``--train-loss lovt``: LoVT's own training losses (its YOLOv3Loss; its Dice pooled over the classes).

Each is compared with a plain per-element loop written from LoVT's formulas (philip-mueller/lovt,
``src/models/downstream/detection.py`` ``YOLOv3Loss`` / ``get_targets`` / ``bbox_iou``;
``segmentation_models_pytorch`` ``DiceLoss(mode="binary")`` as ``src/models/downstream/segmentation.py`` uses
it), on random inputs, including images without boxes and boxes at the image border.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from benchmark.openmmlab.losses import DiceLoss, lovt_yolov3_loss, pooled_dice_loss


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _log(v: float) -> float:  # torch's BCELoss clamps its logs at -100
    return max(math.log(v), -100.0) if v > 0 else -100.0


def _bce(p: float, t: float) -> float:
    return -(t * _log(p) + (1 - t) * _log(1 - p))


def _reference_yolo(pred_maps, boxes, labels, anchors, img_hw, num_classes):
    """LoVT's YOLOv3Loss, one element at a time."""
    img_h, img_w = img_hw
    total = 0.0
    for pred, level in zip(pred_maps, anchors):
        n, _, h, w = pred.shape
        a = len(level)
        attrs = 5 + num_classes
        sw, sh = img_w / w, img_h / h
        cell = [(aw / sw, ah / sh) for aw, ah in level]
        # targets
        mask = [[[[0.0] * w for _ in range(h)] for _ in range(a)] for _ in range(n)]
        noobj = [[[[1.0] * w for _ in range(h)] for _ in range(a)] for _ in range(n)]
        tx, ty, tw, th = ({} for _ in range(4))
        tcls = {}
        for b in range(n):
            for (x1, y1, x2, y2), c in zip(boxes[b].tolist(), labels[b].tolist()):
                gw, gh = (x2 - x1) * (w / img_w), (y2 - y1) * (h / img_h)
                gx, gy = x1 * (w / img_w) + gw / 2, y1 * (h / img_h) + gh / 2
                gi, gj = min(int(gx), w - 1), min(int(gy), h - 1)
                ious = []
                for aw, ah in cell:  # corner-aligned shapes, +1 on every side (LoVT's bbox_iou)
                    inter = (min(gw, aw) + 1) * (min(gh, ah) + 1)
                    ious.append(inter / ((gw + 1) * (gh + 1) + (aw + 1) * (ah + 1) - inter + 1e-16))
                for k, iou in enumerate(ious):
                    if iou > 0.5:
                        noobj[b][k][gj][gi] = 0.0
                best = max(range(a), key=lambda k: (ious[k], -k))
                mask[b][best][gj][gi] = 1.0
                key = (b, best, gj, gi)
                tx[key], ty[key] = gx - gi, gy - gj
                tw[key] = math.log(gw / cell[best][0] + 1e-16)
                th[key] = math.log(gh / cell[best][1] + 1e-16)
                # class bits are only ever set: two boxes of different classes on one anchor set both
                tcls.setdefault(key, set()).add(0 if num_classes == 1 else c)
        sums = dict(x=0.0, y=0.0, w=0.0, h=0.0, conf=0.0, noobj=0.0, cls=0.0)
        for b in range(n):
            for k in range(a):
                for j in range(h):
                    for i in range(w):
                        v = [float(pred[b, k * attrs + q, j, i]) for q in range(attrs)]
                        m, no = mask[b][k][j][i], noobj[b][k][j][i]
                        key = (b, k, j, i)
                        sums["x"] += _bce(_sig(v[0]) * m, tx.get(key, 0.0) * m)
                        sums["y"] += _bce(_sig(v[1]) * m, ty.get(key, 0.0) * m)
                        sums["w"] += (v[2] * m - tw.get(key, 0.0) * m) ** 2
                        sums["h"] += (v[3] * m - th.get(key, 0.0) * m) ** 2
                        sums["conf"] += _bce(_sig(v[4]) * m, m)
                        sums["noobj"] += _bce(_sig(v[4]) * no, 0.0)
                        for c in range(num_classes):
                            t = 1.0 if c in tcls.get(key, ()) else 0.0
                            sums["cls"] += _bce(_sig(v[5 + c]) * m, t * m)
        cells = n * a * h * w
        loss = 2.5 * (sums["x"] + sums["y"] + sums["w"] + sums["h"]) / cells
        loss += sums["conf"] / cells + 0.5 * sums["noobj"] / cells
        if num_classes > 1:
            loss += sums["cls"] / (cells * num_classes)
        total += loss
    return total


def _random_boxes(rng: random.Random, img: int, n_boxes: int, num_classes: int):
    boxes = []
    for _ in range(n_boxes):
        w, h = rng.uniform(2, img * 0.9), rng.uniform(2, img * 0.9)
        kind = rng.random()
        x1 = 0.0 if kind < 0.25 else (img - w if kind < 0.5 else rng.uniform(0, img - w))  # borders too
        y1 = img - h if rng.random() < 0.3 else rng.uniform(0, img - h)
        boxes.append([x1, y1, x1 + w, y1 + h])
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor([rng.randrange(num_classes) for _ in range(n_boxes)], dtype=torch.long),
    )


@pytest.mark.parametrize("num_classes, seed", [(1, 0), (1, 1), (3, 2), (8, 3)])
def test_lovt_yolov3_loss_matches_a_per_element_loop(num_classes, seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    img = 64
    anchors = [
        [(40.0, 30.0), (20.0, 50.0), (60.0, 60.0)],
        [(10.0, 20.0), (20.0, 15.0), (20.0, 40.0)],
        [(3.0, 4.0), (5.0, 10.0), (11.0, 8.0)],
    ]
    pred_maps = [torch.randn(3, 3 * (5 + num_classes), img // s, img // s) * 2 for s in (32, 16, 8)]
    counts = [0, rng.randint(1, 4), rng.randint(5, 9)]  # an image without boxes, a few, many (overlaps)
    boxes, labels = zip(*(_random_boxes(rng, img, k, num_classes) for k in counts))
    # a box at the bottom-right border: its centre at the last cell of every scale
    boxes = list(boxes)
    boxes[1] = torch.cat([boxes[1], torch.tensor([[img - 4.0, img - 4.0, img, img]])])
    labels = list(labels)
    labels[1] = torch.cat([labels[1], torch.tensor([num_classes - 1])])
    got = lovt_yolov3_loss(
        pred_maps, boxes, labels, [torch.tensor(level) for level in anchors], (img, img), num_classes
    )
    want = _reference_yolo(pred_maps, boxes, labels, anchors, (img, img), num_classes)
    assert sum(got.values()).item() == pytest.approx(want, rel=1e-6, abs=1e-6)
    if num_classes == 1:
        assert float(got["loss_cls"]) == 0.0  # LoVT trains no class output with one class


def test_lovt_yolov3_loss_of_a_batch_without_boxes_is_the_no_object_term_only():
    torch.manual_seed(0)
    pred_maps = [torch.randn(2, 3 * 6, s, s) for s in (2, 4, 8)]
    anchors = [torch.tensor([(8.0, 8.0)] * 3)] * 3
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    got = lovt_yolov3_loss(pred_maps, empty, [torch.zeros(0, dtype=torch.long)] * 2, anchors, (64, 64), 1)
    want = sum(0.5 * -torch.log(1 - p[:, 4::6].sigmoid()).mean() for p in pred_maps)
    assert float(got["loss_xy"]) == 0.0 and float(got["loss_wh"]) == 0.0
    assert float(got["loss_conf"]) == pytest.approx(float(want), rel=1e-6)


def _reference_dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    """smp's binary DiceLoss (smooth 0, eps 1e-7) over every pixel of every class and image."""
    inter = card = positives = 0.0
    for p_logit, t in zip(logits.flatten().tolist(), target.flatten().tolist()):
        p = _sig(p_logit)
        inter += p * t
        card += p + t
        positives += t
    if positives == 0:
        return 0.0
    return 1 - 2 * inter / max(card, 1e-7)


@pytest.mark.parametrize("seed", range(4))
def test_pooled_dice_matches_a_per_element_loop(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 8, 6, 5, generator=g) * 3
    target = (torch.rand(3, 8, 6, 5, generator=g) < 0.1 * (seed + 1)).float()
    target[:, 2] = 0  # a class absent from the whole batch: pooled, it only adds its predictions
    target[1] = 0  # an image without any finding
    assert float(pooled_dice_loss(logits, target)) == pytest.approx(_reference_dice(logits, target), abs=1e-6)
    # through the mmseg-facing module: (N, C, H, W) 0/1 masks as the NIH head's label
    loss = DiceLoss(variant="lovt")(logits, target.long())
    assert float(loss) == pytest.approx(_reference_dice(logits, target), abs=1e-6)
    # the protocol's loss averages per-class Dice losses: a different number on the same input
    assert float(DiceLoss()(logits, target.long())) != pytest.approx(float(loss), abs=1e-3)


def test_pooled_dice_of_a_batch_without_foreground_is_zero():
    logits = torch.randn(2, 8, 4, 4, requires_grad=True)
    loss = pooled_dice_loss(logits, torch.zeros(2, 8, 4, 4))
    assert float(loss.detach()) == 0.0 == _reference_dice(logits.detach(), torch.zeros(2, 8, 4, 4))
    loss.backward()
    assert float(logits.grad.abs().sum()) == 0.0
