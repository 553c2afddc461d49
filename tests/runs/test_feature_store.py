"""Frozen-feature cache: the store (atomic, keyed, shared), and runs on cached features = runs without."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.runs.claims import owner_info
from benchmark.runs.feature_store import FeatureStore, default_root, entry_key, open_entry
from tests.support.records import read_records

IDS = ["a", "b", "c"]


def _fill(writer, value: float = 1.0, levels=(3, 5)) -> None:
    writer.write(["c", "a"], {lv: np.full((2, 2, 4, 4), value + lv, np.float32) for lv in levels})
    writer.write(["b"], {lv: np.full((1, 2, 4, 4), value + lv, np.float32) for lv in levels})


def test_store_builds_once_and_reads_back_memory_mapped(tmp_path):
    store = FeatureStore(tmp_path)
    key = entry_key({"x": 1})
    entry, report = store.get_or_build(key, {"x": 1}, IDS, None, _fill, provenance={"seed": 3})
    assert report["built"] and report["bytes"] == 2 * 3 * 2 * 4 * 4 * 2  # two levels, float16
    assert isinstance(entry.arrays[3], np.memmap) and entry.arrays[3].dtype == np.float16
    assert entry.ids == IDS and entry.levels == [3, 5] and entry.index["provenance"] == {"seed": 3}
    np.testing.assert_array_equal(entry.arrays[5][entry.rows()["b"]], np.full((2, 4, 4), 6.0))

    def never(writer):
        raise AssertionError("an existing entry must not be recomputed")

    again, report = store.get_or_build(key, {"x": 1}, IDS, None, never)
    assert not report["built"] and again.path == entry.path
    assert store.total_bytes() == entry.nbytes and [e.key for e in store.entries()] == [key]
    assert entry_key({"x": 2}) != key  # any change of the payload is another entry


def test_failed_build_leaves_no_entry(tmp_path):
    store = FeatureStore(tmp_path)

    def half(writer):
        writer.write(["a"], {3: np.zeros((1, 2, 4, 4))})
        raise KeyboardInterrupt  # killed in the middle

    with pytest.raises(KeyboardInterrupt):
        store.get_or_build("k1", {}, IDS, None, half)
    assert store.get("k1") is None and not list(tmp_path.iterdir())  # no entry, no temp folder, no claim
    with pytest.raises(RuntimeError, match="no features written for"):
        store.get_or_build("k1", {}, IDS, None, lambda w: w.write(["a"], {3: np.zeros((1, 2, 4, 4))}))
    assert store.get("k1") is None


def test_killed_builder_leftovers_are_never_used_and_cleaned(tmp_path):
    store = FeatureStore(tmp_path)
    # what SIGKILL during a build leaves: a temp folder with a complete-looking index and a claim whose
    # process is gone
    tmp = tmp_path / ".tmp-k2-999999-1"
    tmp.mkdir()
    (tmp / "index.json").write_text(json.dumps({"complete": True}))
    dead = owner_info() | {"pid": 999999999, "pid_start": "1"}
    (tmp_path / "k2.lock").write_text(json.dumps(dead))
    assert store.get("k2") is None
    entry, report = store.get_or_build("k2", {}, IDS, None, _fill)
    assert report["built"] and not tmp.exists() and not (tmp_path / "k2.lock").exists()
    # an entry damaged afterwards (truncated array) does not open, and is rebuilt
    arr = entry.path / "c3.npy"
    arr.write_bytes(arr.read_bytes()[:100])
    assert open_entry(entry.path) is None
    _, report = store.get_or_build("k2", {}, IDS, None, _fill)
    assert report["built"] and open_entry(entry.path) is not None


def test_concurrent_builders_compute_once(tmp_path):
    store = FeatureStore(tmp_path, poll_s=0.05)
    calls, reports = [], []

    def slow_fill(writer):
        calls.append(1)
        time.sleep(0.5)
        _fill(writer)

    def build():
        reports.append(store.get_or_build("k3", {}, IDS, None, slow_fill)[1])

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted((r["built"], r["waited_for_other_process"]) for r in reports) == [
        (False, True),
        (True, False),
    ]


def test_default_root(tmp_path, monkeypatch):
    monkeypatch.delenv("CXRBENCH_FEATURE_CACHE", raising=False)
    assert default_root(tmp_path) == tmp_path / "feature_cache"
    monkeypatch.setenv("CXRBENCH_FEATURE_CACHE", str(tmp_path / "shared"))
    assert default_root(tmp_path / "out") == tmp_path / "shared"


def test_random_init_weights_digest_depends_on_the_seed():
    from benchmark.openmmlab.feature_cache_hook import CachedBackbone

    def digest(seed):
        torch.manual_seed(seed)
        return CachedBackbone("resnet18.random", out_indices=(5,)).weights_digest()

    assert digest(0) == digest(0) != digest(1)
    with pytest.raises(ValueError, match="frozen"):
        CachedBackbone("resnet18.random", frozen=False)


# --- runs on cached features match runs without -------------------------------------------------------


@pytest.mark.slow
def test_linear_task_cached_equals_uncached(data_root, tmp_path, monkeypatch, cli):
    monkeypatch.delenv("CXRBENCH_FEATURE_CACHE", raising=False)
    common = [
        "evaluate",
        "--backbone",
        "resnet18.random",
        "--tasks",
        "rsna_linear_10",
        "--data",
        str(data_root),
        "--seeds",
        "1",
        "--max-epochs",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--quiet",
        "--no-lr-search",
    ]
    assert cli(*common, "--out", tmp_path / "plain", "--no-feature-cache").code == 0
    assert cli(*common, "--out", tmp_path / "cached").code == 0
    (plain,) = read_records(tmp_path / "plain")
    (cached,) = read_records(tmp_path / "cached")
    assert plain["feature_cache"] == {"used": False} and not (tmp_path / "plain" / "feature_cache").exists()
    cache = cached["feature_cache"]
    assert cache["used"] and cache["built"] == ["train_10pct", "val", "test"] and cache["bytes"] > 0
    assert Path(cache["root"]) == tmp_path / "cached" / "feature_cache"  # the default location
    assert cached["key"] == plain["key"]  # the cache does not change what a run is
    for split in ("val", "test"):
        for k, v in plain["metrics"][split].items():
            assert cached["metrics"][split][k] == pytest.approx(v, abs=1e-3), (split, k)
    assert cached["epochs_run"] == plain["epochs_run"] == 2
    # another learning rate (same seed, so the same random-init encoder): every entry is reused
    assert cli(*common, "--out", tmp_path / "cached", "--lr", "1e-3").code == 0
    again = next(r for r in read_records(tmp_path / "cached") if r["lr"] == 1e-3)
    assert again["feature_cache"]["built"] == [] and again["feature_cache"]["bytes"] == cache["bytes"]


@pytest.mark.slow
def test_yolov3_frozen_task_cached_equals_uncached(data_root, tmp_path):
    from benchmark import openmmlab
    from benchmark.backbones import parse_spec
    from benchmark.runs import RunOptions, plan_run, resolve
    from tasks.registry import METRIC_KEYS, get_task

    task = get_task("rsna_yolov3_frozen_10")

    def outcome(cache: str | None, dtype: str = "float16", lr: float | None = None):
        options = RunOptions(
            max_epochs=1, batch_size=2, progress=False, feature_cache=cache, feature_cache_dtype=dtype
        )
        run = plan_run(task, parse_spec("resnet18.random"), data_root, tmp_path, 0, lr, options)
        cfg = openmmlab.build_config(task, resolve(run, tmp_path, options, f"yolo-{cache}-{dtype}-{lr}"))
        cfg.model.test_cfg.conf_thr = 0.001  # an untrained head: keep low-confidence boxes, so mAP is not 0
        return openmmlab.train_and_test(cfg, METRIC_KEYS[task.metric].monitor)

    plain = outcome(None)
    half = outcome(str(tmp_path / "fc16"))
    # YOLOv3 reads C3-C5 only (its images are placeholders, the U-Net test below checks the other case)
    assert half.feature_cache["entries"]["train_10pct"]["levels"] == [3, 4, 5]
    full = outcome(str(tmp_path / "fc32"), "float32")
    assert plain.feature_cache is None and half.feature_cache["used"]
    assert plain.test["n_detections"] > 0
    for split in ("val", "test"):
        a, b = getattr(plain, split), getattr(half, split)
        for k in ("mAP", "mAP_50", "mAP_75"):
            assert b[k] == pytest.approx(a[k], abs=1e-3), (split, k)
    # float16 features: the loss of the same (untrained) head agrees closely. After training it need not:
    # the first Adam steps move every weight by about lr * sign(gradient), so weights whose gradient is
    # near 0 flip direction under float16 rounding (the trained metrics above still agree).
    untrained = (
        outcome(None, lr=0.0),
        outcome(str(tmp_path / "fc16"), lr=0.0),
    )  # lr 0: the head stays as built
    assert untrained[1].val["loss"] == pytest.approx(untrained[0].val["loss"], rel=1e-4)
    # float32 storage: the very same computation as without the cache
    assert full.val["loss"] == pytest.approx(plain.val["loss"], rel=1e-6)
    assert full.test == pytest.approx(plain.test, rel=1e-6, abs=1e-9)
    assert half.feature_cache["bytes"] * 2 == full.feature_cache["bytes"]
    assert all(os.path.isdir(e["path"]) for e in half.feature_cache["entries"].values())


@pytest.mark.slow
def test_unet_frozen_cached_equals_uncached_and_reads_the_real_image(data_root, tmp_path):
    """U-Net heads also take C0 (the input image): it comes from the live image, never a placeholder."""
    from dataclasses import replace

    from benchmark import openmmlab
    from benchmark.backbones import parse_spec
    from benchmark.runs import RunOptions, plan_run, resolve
    from tasks.registry import METRIC_KEYS, get_task

    task = replace(get_task("rsna_linear_10"), id="rsna_unet_frozen_10", head="unet", lr=1e-3)

    def run(cache: str | None):
        options = RunOptions(max_epochs=1, batch_size=2, progress=False, feature_cache=cache)
        planned = plan_run(task, parse_spec("resnet18.random"), data_root, tmp_path, 0, None, options)
        cfg = openmmlab.build_config(task, resolve(planned, tmp_path, options, f"unet-{cache}"))
        if cache:
            steps = [s["type"] for s in cfg.train_dataloader.dataset.pipeline]
            assert "LoadImageFromFile" in steps and "CXRPlaceholderImage" not in steps
        return openmmlab.train_and_test(cfg, METRIC_KEYS[task.metric].monitor)

    plain, cached = run(None), run(str(tmp_path / "fc"))
    assert cached.feature_cache["entries"]["val"]["levels"] == [1, 2, 3, 4, 5]  # C0 is not stored
    for split in ("val", "test"):
        for k in ("dice", "dice_per_image"):
            assert getattr(cached, split)[k] == pytest.approx(getattr(plain, split)[k], abs=1e-3), (split, k)
