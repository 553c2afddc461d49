"""Fake RSNA -> prepare -> evaluate through the CLI -> records; and a run that shows learning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.support.records import read_records, record_files

pytestmark = pytest.mark.slow


def test_cli_prepare_then_evaluate_both_tasks(fake_rsna, tmp_path, cli):
    data = tmp_path / "data"
    assert cli("prepare", "rsna", "--raw", fake_rsna, "--out", data, "--workers", "2", "--quiet").code == 0
    out = tmp_path / "out"
    argv = [
        "evaluate",
        "--backbone",
        "resnet18.random",
        "--tasks",
        "rsna_yolov3_frozen_10,rsna_linear_10",
        "--data",
        str(data),
        "--out",
        str(out),
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
    evaluated = cli(*argv)
    assert evaluated.code == 0
    records = read_records(out)
    assert sorted(r["task"] for r in records) == ["rsna_linear_10", "rsna_yolov3_frozen_10"]
    manifest = json.loads((data / "rsna" / "manifest.json").read_text())
    for r in records:
        assert r["status"] == "ok", r.get("traceback")
        assert r["backbone"]["spec"] == "resnet18.random" and r["backbone"]["arch"] == "resnet18"
        assert "sha256" in r["backbone"]
        assert r["seed"] == 0 and r["lr"] == r["task_spec"]["lr"] and r["lr_source"] == "default"
        assert r["split_hash"] == manifest["split_hash"]
        assert r["epochs_run"] == 2 and r["iterations"] == 2 and r["wall_time_s"] > 0
        assert r["overrides"] == {"max_epochs": 2, "batch_size": 2}
        assert {"torch", "mmdet", "mmseg", "mmengine", "mmcv", "nms_provider"} <= set(r["versions"])
        assert Path(r["log_file"]).exists()
        metrics = r["metrics"]["test"]
        keys = (
            ("mAP", "mAP_50", "mAP_75") if r["task"].startswith("rsna_yolov3") else ("dice", "dice_per_image")
        )
        for k in keys:
            assert math.isfinite(metrics[k]) and 0 <= metrics[k] <= 1
        assert math.isfinite(r["metrics"]["val"]["loss"])
        assert r["test_score"] == metrics[r["primary_metric"]]
    assert not list((out / "work").rglob("*.pth"))  # checkpoints are removed once the record is written
    assert "2 run(s) ok, 0 failed" in evaluated.out

    # a second call finds both records and runs nothing
    before = {p: p.stat().st_mtime for p in record_files(out)}
    again = cli(*argv)
    assert again.code == 0
    assert {p: p.stat().st_mtime for p in record_files(out)} == before
    assert "already recorded" in again.out


def test_linear_head_learns(data_root, tmp_path, cli):
    """Frozen random ResNet-18 + linear head on fake RSNA: training must beat the untrained head."""
    common = [
        "--backbone",
        "resnet18.random",
        "--tasks",
        "rsna_linear_100",
        "--data",
        str(data_root),
        "--seeds",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--quiet",
        "--no-lr-search",
    ]
    assert cli("evaluate", *common, "--out", tmp_path / "untrained", "--max-epochs", "0").code == 0
    assert cli("evaluate", *common, "--out", tmp_path / "trained", "--max-epochs", "15").code == 0
    (untrained,) = read_records(tmp_path / "untrained")
    (trained,) = read_records(tmp_path / "trained")
    assert untrained["epochs_run"] == 0 and trained["epochs_run"] >= 5
    assert trained["test_score"] > untrained["test_score"] + 0.2, (
        untrained["test_score"],
        trained["test_score"],
    )
    assert trained["test_score"] > 0.4


def test_unprepared_dataset_is_a_clear_error(tmp_path, cli):
    argv = ["evaluate", "--backbone", "resnet18.random", "--tasks", "siim_unet_frozen", "--data", tmp_path]
    refused = cli(*argv, "--out", tmp_path / "o", "--seeds", "1", "--device", "cpu")
    assert refused.code == 2
    assert "cxrbench prepare siim" in refused.err


def test_evaluate_size_reads_data_prepared_at_that_size(fake_covid_rural, tmp_path, cli):
    """`prepare --size 128` writes covid_rural-128px; `evaluate` names it when --size is missing and reads it
    with --size 128; the record carries the size (part of the run key)."""
    data = tmp_path / "data"
    raw = fake_covid_rural
    prepared = cli("prepare", "covid_rural", "--raw", raw, "--out", data, "--size", "128", "--quiet")
    assert prepared.code == 0
    common = ["evaluate", "--backbone", "resnet18.random", "--tasks", "covid_linear", "--data", str(data)]
    common += ["--seeds", "1", "--no-lr-search", "--max-epochs", "1", "--device", "cpu", "--quiet"]
    unsized = cli(*common, "--out", tmp_path / "o224")
    assert unsized.code == 2
    err = unsized.err
    assert "covid_rural-128px" in err and "--size" in err
    odd = cli(*common, "--out", tmp_path / "o128", "--size", "100")
    assert odd.code == 2
    assert "multiple of 32" in odd.err
    assert cli(*common, "--out", tmp_path / "o128", "--size", "128").code == 0
    (record,) = read_records(tmp_path / "o128")
    assert record["status"] == "ok" and record["task_spec"]["size"] == 128
    assert record["dataset"]["prepared"].endswith("covid_rural-128px") and record["dataset"]["size"] == 128
