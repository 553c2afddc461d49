"""The NMS provider behind mmcv.ops.nms, and the clear error for every other compiled op."""

from __future__ import annotations

import pytest
import torch

from benchmark import openmmlab  # installs the provider before mmcv.ops is imported
from benchmark.openmmlab.nms import (
    PROVIDER_COMPILED,
    PROVIDER_TORCHVISION,
    MissingMMCVOpError,
    brute_force_nms,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_boxes(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 60 + 0.5
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def test_provider_is_reported():
    assert openmmlab.NMS_PROVIDER in (PROVIDER_COMPILED, PROVIDER_TORCHVISION)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("iou", [0.3, 0.4, 0.7])
def test_nms_matches_brute_force(device, seed, iou):
    from mmcv.ops import nms

    boxes, scores = random_boxes(120, seed)
    dets, keep = nms(boxes.to(device), scores.to(device), iou)
    expected = brute_force_nms(boxes, scores, iou)
    assert torch.equal(keep.cpu().long(), expected)
    assert torch.allclose(dets[:, :4].cpu(), boxes[expected])


@pytest.mark.parametrize("device", DEVICES)
def test_nms_offset_one_matches_brute_force(device):
    from mmcv.ops import nms

    boxes, scores = random_boxes(80, 7)
    boxes = boxes.round()  # integer pixel boxes, where the legacy +1 convention matters
    _, keep = nms(boxes.to(device), scores.to(device), 0.5, offset=1)
    assert torch.equal(keep.cpu().long(), brute_force_nms(boxes, scores, 0.5, offset=1))


def test_batched_nms_through_mmcv():
    from mmcv.ops import batched_nms

    boxes, scores = random_boxes(50, 3)
    labels = torch.arange(50) % 2
    _, keep = batched_nms(boxes, scores, labels, dict(type="nms", iou_threshold=0.4))
    expected = []
    for c in (0, 1):
        idx = torch.nonzero(labels == c).squeeze(1)
        expected += idx[brute_force_nms(boxes[idx], scores[idx], 0.4)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)


def test_empty_input():
    from mmcv.ops import nms

    dets, keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.numel() == 0 and dets.shape[0] == 0


@pytest.mark.skipif(openmmlab.NMS_PROVIDER == PROVIDER_COMPILED, reason="a compiled mmcv provides every op")
def test_other_ops_give_clear_error():
    from mmcv.ops import RoIAlign, sigmoid_focal_loss

    with pytest.raises(MissingMMCVOpError, match="needs mmcv's compiled extension.*mim install"):
        sigmoid_focal_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), 2.0, 0.25)
    with pytest.raises(MissingMMCVOpError, match="roi_align_forward"):
        RoIAlign((2, 2))(torch.randn(1, 1, 8, 8), torch.tensor([[0.0, 0, 0, 4, 4]]))


def test_doctor_reports_provider_and_passes():
    from benchmark.doctor import collect, format_report

    report = collect()
    assert report["ok"], report["problems"]
    assert report["nms_provider"] == openmmlab.NMS_PROVIDER
    assert "matches brute-force" in report["nms_check"]["cpu"]
    assert "NMS provider" in format_report(report)


def test_doctor_cli_json(cli):
    import json

    doctor = cli("doctor", "--json")
    assert doctor.code == 0
    out = json.loads(doctor.out)
    assert out["ok"] and out["nms_provider"]
