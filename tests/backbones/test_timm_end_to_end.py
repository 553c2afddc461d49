"""A small random timm backbone (a ViT, so the simple pyramid is exercised) trains a detection and a
segmentation head on fake RSNA through the real runner, with heads sized from the declared channels."""

from __future__ import annotations

import math

import pytest

from benchmark.runs import RunOptions, evaluate
from tasks.registry import get_task

pytestmark = pytest.mark.slow


def test_timm_vit_detection_and_segmentation(data_root, tmp_path):
    spec = "timm:vit_tiny_patch16_224"
    options = RunOptions(max_epochs=1, batch_size=2, device="cpu", progress=False)
    lines = []
    records = evaluate(
        spec,
        [get_task("rsna_yolov3_frozen_10"), get_task("rsna_linear_10")],
        data_root,
        tmp_path,
        seeds=[0],
        options=options,
        echo=lines.append,
        lr_search=False,
    )
    assert lines[0].startswith(f"backbone {spec}: timm:vit_tiny_patch16_224; random weights")
    assert [r["task"] for r in records] == ["rsna_yolov3_frozen_10", "rsna_linear_10"]
    for r in records:
        assert r["status"] == "ok", r.get("traceback")
        assert r["backbone"]["arch"] == "timm:vit_tiny_patch16_224" and r["backbone"]["format"] == "timm"
        assert list(r["backbone"]["channels"][3:]) == [192, 192, 192]
        assert r["normalization"]["source"] == "prepared train statistics"  # the whole split, as LoVT
        assert r["epochs_run"] == 1 and r["iterations"] >= 1
        assert all(math.isfinite(v) for v in r["metrics"]["test"].values() if isinstance(v, float))
