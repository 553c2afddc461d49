"""bench/gpu.py: the prepared GPU check, run on CPU at tiny sizes so that it cannot rot; its projection."""

from __future__ import annotations

import json
import math

import pytest

from bench import gpu
from tasks.registry import TASKS


def test_protocol_sizes_are_the_published_ones():
    # tasks.md / datasets.md: RSNA 16010 training images (1 %: 160, 10 %: 1601), SIIM 7229 / 2409 / 2409,
    # Object-CXR 6400 of its 8000 (test: the 1000 dev images), NIH 588/196/196, COVID Rural 133/44/44
    assert gpu.protocol_sizes("rsna") == {
        "train": 16010,
        "val": 5337,
        "test": 5337,
        "train_1pct": 160,
        "train_10pct": 1601,
    }
    assert gpu.protocol_sizes("siim") == {"train": 7229, "val": 2409, "test": 2409}
    assert gpu.protocol_sizes("object_cxr") == {"train": 6400, "val": 1600, "test": 1000}
    assert gpu.protocol_sizes("nih") == {"train": 588, "val": 196, "test": 196}
    assert gpu.protocol_sizes("covid_rural") == {"train": 133, "val": 44, "test": 44}


def _speeds(**rates):
    base = {
        "train_s_per_image": 0.0,
        "val_s_per_image": 0.0,
        "checkpoint_s": 0.0,
        "overhead_s": 0.0,
        "cache_s_per_image": 0.0,
    }
    return {(h, f, b): dict(base, **rates) for h, f in gpu.MODES for b in gpu.BATCHES}


def test_projection_counts_the_136_trainings_epochs_and_images():
    batches = {b: b for b in gpu.BATCHES}
    val_only = gpu.project(_speeds(val_s_per_image=1.0), batches, 0.25)
    assert val_only["trainings"] == 136 == sum(len(gpu.protocol_runs(t)) for t in TASKS.values())
    # rsna_linear_1: 4 grid values + 5 seeds, 500 epochs validating 5337 images, then one test of 5337
    assert val_only["per_task"]["rsna_linear_1"]["upper_s"] == 9 * (500 * 5337 + 5337)
    # early stop: 20 epochs of patience after a best epoch at 25 % of 500
    assert val_only["per_task"]["rsna_linear_1"]["estimate_s"] == 9 * (145 * 5337 + 5337)
    assert val_only["cache_build_s"] == 0
    # training drops the last incomplete batch: 16010 // 64 * 64 = 16000 images per epoch, 50 epochs, 7 runs
    train_only = gpu.project(_speeds(train_s_per_image=1.0), batches, 0.25)
    assert train_only["per_task"]["rsna_yolov3_finetune_100"]["upper_s"] == 7 * 50 * 16000
    assert train_only["per_task"]["covid_linear"]["upper_s"] == 9 * 100 * 128
    # a random-init encoder depends on the seed: one cache entry per seed, dataset, head and subset.
    # RSNA YOLOv3: seeds 0-4 x 5 subsets + seed 1000 (tasks 1 and 6) x {1 %, 100 %, val, test}; RSNA
    # linear: 6 seeds x 5 subsets; the other six frozen tasks: 6 seeds x 3 subsets each.
    cache = gpu.project(_speeds(cache_s_per_image=1.0), batches, 0.25)
    assert cache["cache_builds"] == 25 + 4 + 30 + 6 * 18
    assert cache["upper_s"] == cache["estimate_s"] == cache["cache_build_s"] > 0
    checkpoints = gpu.project(_speeds(checkpoint_s=1.0), batches, 0.25)
    assert checkpoints["upper_s"] == sum(len(gpu.protocol_runs(t)) * t.max_epochs for t in TASKS.values())


def test_compare_flags_deviations_and_non_finite_values():
    ref = {"losses": [2.0, 1.5], "val_loss": 1.0, "val_metric": 0.5, "test_metric": 0.4}
    tol = gpu.TOLERANCE["float32"]
    assert gpu.compare(dict(ref, losses=[2.001, 1.4]), ref, tol) == []
    found = gpu.compare(dict(ref, losses=[2.1, 1.5], test_metric=0.5), ref, tol)
    assert len(found) == 2 and "first training loss" in found[0] and "test_metric" in found[1]
    assert "non-finite" in gpu.compare(dict(ref, val_loss=math.nan), ref, tol)[0]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_at_tiny_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # main() sets it for --device cpu; undone afterwards
    code = gpu.main(["--device", "cpu", "--tiny", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")])
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert code == 0 and report["ok"], report["problems"]
    assert report["doctor"]["ok"] and "cpu" in report["doctor"]["nms_check"]
    assert set(report["checks"]) == {"yolov3-float32", "unet-float32", "linear-float32"}
    for check in report["checks"].values():
        assert check["ok"] and all(math.isfinite(v) for v in check["device"]["losses"])
    assert report["feature_cache"]["ok"]
    assert report["feature_cache"]["second"]["reused"] == ["train", "val", "test"]
    assert report["torchrun"]["ok"] and report["torchrun"]["world_size"] == 2
    measured = {(s["head"], s["frozen"]) for s in report["throughput"]}
    assert measured == set(gpu.MODES)
    assert all(s["train_images_per_s"] > 0 and s["val_images_per_s"] > 0 for s in report["throughput"])
    assert all(s["cache_build_images_per_s"] > 0 for s in report["throughput"] if s["frozen"])
    projection = report["projection"]["float32"]
    assert projection["trainings"] == 136
    assert projection["upper_s"] >= projection["estimate_s"] > 0
