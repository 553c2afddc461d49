"""Pretraining end to end on synthetic pairs: the loss goes down, an interrupted run resumes, the export
is evaluated by the benchmark; the pretrain / analyze / ablate commands."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pytest
from mmengine.hooks import Hook

from cxrcore.weights import load_checkpoint
from pretrain.config import AugmentConfig, ModelConfig, TrainConfig, preset_config
from pretrain.data.manifest import read_manifest
from pretrain.train import PretrainError, prepare_synthetic, pretrain
from tests.support.records import read_records

pytestmark = pytest.mark.slow


class Interrupted(RuntimeError):
    pass


class StopAfterEpoch(Hook):
    """Simulates a killed job: raises once epoch N is done and checkpointed."""

    priority = "LOWEST"

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:
            raise Interrupted(f"stopped after epoch {self.epoch}")


def test_pretraining_lowers_the_loss_resumes_and_exports(tmp_path, data_root, cli):
    from benchmark.backbones import build_encoder

    manifest, bert = prepare_synthetic(tmp_path, n=24, size=64)
    pairs = read_manifest(manifest)
    cfg = preset_config(
        "lovt",
        model=ModelConfig(
            image_arch="resnet18",
            image_init="random",
            text_model=str(bert),
            text_frozen_layers=1,
            proj_hidden=128,
            proj_dim=64,
            heads=2,
        ),
        train=TrainConfig(
            epochs=4, batch_size=8, accumulate=1, lr=1e-3, image_size=64, patience=0, log_interval=1
        ),
        augment=AugmentConfig(enabled=False),
    )
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        pretrain(cfg, pairs, out, progress=False, extra_hooks=[StopAfterEpoch(2)])
    assert (out / "work" / "epoch_2.pth").exists() and not (out / "backbone.safetensors").exists()
    ckpt, _ = load_checkpoint(out / "work" / "epoch_2.pth")  # the one loader, strict: plain types only
    assert {"state_dict", "optimizer", "message_hub", "param_schedulers"} <= set(ckpt)

    messages: list[str] = []
    result = pretrain(cfg, pairs, out, progress=False, echo=messages.append)
    assert any(m.startswith("resuming") for m in messages), messages
    history = result.history
    assert [e["epoch"] for e in history] == [1, 2, 3, 4]
    assert history[-1]["iterations"] == 4 * (21 // 8)  # epochs 3-4 continued the iteration count
    assert set(cfg.loss.active()) <= set(history[0]["train"])
    # validated every epoch (but the one whose validation the interruption cut off)
    assert [e["epoch"] for e in history if "val" in e] == [1, 3, 4]
    first, last = history[0]["train"]["loss"], history[-1]["train"]["loss"]
    assert last < first - 0.3, (first, last)
    assert history[-1]["lr"] < history[0]["lr"]  # cosine schedule
    logged = [json.loads(line) for p in (out / "work").glob("*/vis_data/scalars.json") for line in p.open()]
    assert all(
        set(cfg.loss.active()) <= set(row) for row in logged if "loss" in row
    )  # every term, every iteration

    info = result.info
    assert info["preset"] == "lovt" and info["epochs_run"] == 4 and info["arch"] == "resnet18"
    assert info["losses"]["weights"]["img_l2att_align"] == 0.375 and info["data"]["pairs"]["train"] == 21
    from pretrain.export import sha256_file

    assert info["sha256"] == sha256_file(result.backbone) and info["normalization"]["image_size"] == 64
    encoder, spec = build_encoder(str(result.backbone))
    assert spec.arch == "resnet18"
    evaluated = cli(
        "evaluate", "--backbone", result.backbone, "--tasks", "rsna_linear_100", "--data", data_root,
        "--out", tmp_path / "eval", "--seeds", "1", "--max-epochs", "0", "--device", "cpu", "--quiet",
        "--no-lr-search",
    )  # fmt: skip
    assert evaluated.code == 0, evaluated.err
    (record,) = read_records(tmp_path / "eval")
    assert record["status"] == "ok" and record["backbone"]["sha256"] == info["sha256"]

    again: list[str] = []
    reused = pretrain(cfg, pairs, out, progress=False, echo=again.append)
    assert reused.reused and "nothing to do" in again[0]
    with pytest.raises(PretrainError, match=r"another configuration \(train.lr: 0.001 -> 0.0005"):
        pretrain(replace(cfg, train=replace(cfg.train, lr=5e-4)), pairs, out, progress=False)


def test_cli_ablate_then_analyze(tmp_path, data_root, cli):
    out = tmp_path / "ablate"
    common = ["--synthetic", "--synthetic-n", "20", "--synthetic-size", "64", "--device", "cpu", "--quiet"]
    ablated = cli(
        "ablate", "--presets", "clip,lovt", "--tasks", "rsna_linear_100", "--bench-data", data_root,
        "--out", out, "--image-size", "64", "--epochs", "1", "--batch-size", "4", "--accumulate", "2",
        "--max-epochs", "0", "--no-lr-search", *common,
    )  # fmt: skip
    printed = ablated.out
    assert ablated.code == 0, printed
    table = printed[printed.index("test dice") :]
    assert "clip" in table and "lovt" in table and "rsna_linear_100" in table
    rows = (out / "ablation.csv").read_text().splitlines()
    assert rows[0] == "preset,task,metric,n_ok,n_failed,mean,std" and len(rows) == 3
    assert all(",1,0," in r for r in rows[1:])
    for preset in ("clip", "lovt"):
        info = json.loads((out / "pretrain" / preset / "backbone.json").read_text())
        assert (
            info["preset"] == preset and info["train"]["accumulate"] == 2 and info["train"]["batch_size"] == 4
        )
    # the analysis beside the test metric: CSV (every number), Markdown (printed too) and a plot
    joined = list(csv.DictReader(io.StringIO((out / "ablation-joined.csv").read_text())))
    assert [r["preset"] for r in joined] == ["clip", "lovt"]
    dice = {r["preset"]: float(r["mean"]) for r in csv.DictReader(io.StringIO("\n".join(rows)))}
    for r in joined:
        assert float(r["test:rsna_linear_100"]) == pytest.approx(dice[r["preset"]], abs=1e-6)
        for key in ("features.image.per_sample_uniformity", "global_head.report.alignment_nearest"):
            assert r[key] != "" and float(r[key]) == float(r[key])
    assert joined[0]["local_head.image.per_sample_uniformity"] == ""  # clip has no local projections
    assert float(joined[1]["local_head.image.alignment_to_attended_report"]) >= 0
    md = (out / "ablation-joined.md").read_text()
    assert md.splitlines()[0].startswith("| preset | global align | regions unif") and md in printed
    assert (out / "ablation-joined.png").read_bytes()[:4] == b"\x89PNG"

    # analyze prints the same local table (same rows, same columns) for clip and lovt
    tables = {}
    for preset in ("clip", "lovt"):
        report = tmp_path / f"analysis-{preset}.json"
        analyzed = cli("analyze", "--backbone", out / "pretrain" / preset, "--json", report, *common)
        assert analyzed.code == 0
        printed = analyzed.out
        tables[preset] = [line.split()[:2] for line in printed[printed.index("\nlocal ") :].splitlines()[1:7]]
        result = json.loads(report.read_text())
        assert 0 <= result["global"]["alignment"] <= 4
        for space in ("features", "global_head"):
            for side in ("image", "report"):
                assert -4 * 2 <= result["local"][space][side]["per_sample_uniformity"] <= 0
        assert 0 <= result["local"]["global_head"]["report"]["alignment_nearest"] <= 4
    assert tables["clip"] == tables["lovt"] and len(tables["clip"]) == 6

    checkpoint = out / "pretrain" / "lovt" / "work" / "epoch_1.pth"  # a checkpoint of the run
    analyzed = cli("analyze", "--backbone", checkpoint, *common)
    assert analyzed.code == 0
    assert "preset lovt, both modalities" in analyzed.out

    report = tmp_path / "analysis.json"
    assert cli("analyze", "--backbone", "resnet18.random", "--json", report, *common).code == 0
    image_only = json.loads(report.read_text())
    assert "report" not in image_only["global"] and "alignment" not in image_only["global"]
    assert image_only["local"]["features"]["image"]["per_sample_uniformity"] <= 0


def test_cli_errors(tmp_path, cli):
    missing = cli("pretrain", "--preset", "lovt", "--manifest", tmp_path / "none.csv", "--out", tmp_path)
    assert missing.code == 2
    assert "manifest not found" in missing.err
    r = cli(
        "ablate", "--presets", "clip,nope", "--synthetic", "--tasks", "rsna", "--bench-data", tmp_path,
        "--out", tmp_path,
    )  # fmt: skip
    assert r.code == 2 and "unknown preset(s) nope" in r.err
    r = cli(
        "ablate", "--presets", "clip", "--synthetic", "--tasks", "rsna_linear_100", "--bench-data", tmp_path,
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert r.code == 2 and "cxrbench prepare rsna" in r.err
    assert not (tmp_path / "o" / "pretrain").exists()  # nothing pretrained before the task check
    r = cli("pretrain", "--preset", "lovt", "--synthetic", "--weight", "bogus=1", "--out", tmp_path / "p")
    assert r.code == 2 and "TERM=VALUE" in r.err
