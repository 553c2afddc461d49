"""Pretraining model: torchvision export layout, sentence pooling, freezing, masking, offline errors."""

from __future__ import annotations

import pytest
import torch
import torchvision

from pretrain.config import PRESETS, LossConfig, ModelConfig, preset_config
from pretrain.data.synthetic import vocabulary
from pretrain.export import export_backbone, load_backbone_state
from pretrain.model import (
    AttentionPool,
    CrossModalAttention,
    ImageEncoder,
    ImageTextModel,
    ImageWeightsUnavailableError,
    ProjectionMLP,
)
from pretrain.text import TextModelUnavailableError, load_text_model, write_local_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    folder = write_local_bert(
        tmp_path_factory.mktemp("bert") / "bert", vocabulary(), hidden=32, layers=3, heads=2
    )
    return folder, *load_text_model(str(folder))


def test_resnet50_export_is_the_torchvision_layout_and_the_benchmark_loads_it(tmp_path):
    from benchmark.backbones import build_encoder

    enc = ImageEncoder("resnet50", "random")
    expected = {k for k in torchvision.models.resnet50().state_dict() if not k.startswith("fc.")}
    assert set(enc.backbone_state_dict()) == expected
    weights, sidecar = export_backbone(enc, tmp_path, {"preset": "lovt"})
    assert set(load_backbone_state(weights)) == expected
    model, info = build_encoder(str(weights))  # strict: raises on any missing / unexpected key
    assert info.arch == "resnet50" and info.tag == "file"
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    enc.eval()
    with torch.no_grad():
        assert torch.allclose(model(x)[5], enc(x), atol=1e-5)  # same weights, same C5
    import json

    meta = json.loads(sidecar.read_text())
    assert meta["format"] == "cxrbench-backbone" and meta["arch"] == "resnet50" and len(meta["sha256"]) == 64
    # the benchmark records which preset produced the weights, and whether the sidecar is theirs
    from benchmark.backbones import parse_spec

    assert info.provenance["preset"] == "lovt" and info.provenance["sha256_matches"]
    assert info.to_dict()["provenance"]["sidecar"] == str(sidecar.resolve())
    assert "preset lovt" in info.describe() and "WARNING" not in info.describe()
    from benchmark.backbones.catalog import format_report, inspect_weights

    report = inspect_weights(weights)
    assert (
        report["ok"] and report["provenance"]["preset"] == "lovt" and "preset lovt" in format_report(report)
    )
    sidecar.write_text(json.dumps(meta | {"sha256": "0" * 64}))
    stale = parse_spec(str(weights))
    assert not stale.provenance["sha256_matches"] and "stale sidecar" in stale.describe()
    sidecar.write_text(json.dumps({"format": "something-else", "preset": "x"}))
    assert parse_spec(str(weights)).provenance is None
    sidecar.write_text("{not json")
    assert parse_spec(str(weights)).provenance is None  # never stops a run


def test_image_init_from_file_and_offline_imagenet_error(tmp_path, monkeypatch):
    src = ImageEncoder("resnet18", "random")
    torch.save(
        {"state_dict": {f"module.encoder.{k}": v for k, v in src.backbone_state_dict().items()}},
        tmp_path / "w.pth",
    )
    loaded = ImageEncoder("resnet18", str(tmp_path / "w.pth"))
    assert torch.equal(loaded.resnet.conv1.weight, src.resnet.conv1.weight)
    with pytest.raises(ValueError, match="not a torchvision resnet50"):
        ImageEncoder("resnet50", str(tmp_path / "w.pth"))
    monkeypatch.setenv("CXRBENCH_WEIGHTS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("CXRBENCH_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ImageWeightsUnavailableError, match="not on disk.*--image-init random"):
        ImageEncoder("resnet18", "imagenet")


def test_text_model_offline_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRBENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(
        TextModelUnavailableError, match="not in the Hugging Face cache.*huggingface-cli download"
    ):
        load_text_model("emilyalsentzer/Bio_ClinicalBERT")
    with pytest.raises(TextModelUnavailableError, match="folder not found"):
        load_text_model(str(tmp_path / "no" / "such" / "folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextModelUnavailableError, match="not a loadable BERT folder"):
        load_text_model(str(tmp_path / "empty"))


def test_sentence_max_pooling_and_freezing(tiny_bert):
    from pretrain.model import TextEncoder

    _, tokenizer, bert = tiny_bert
    enc = TextEncoder(bert, frozen_layers=2).train()
    assert not any(p.requires_grad for p in bert.embeddings.parameters())
    assert not any(p.requires_grad for layer in bert.encoder.layer[:2] for p in layer.parameters())
    assert all(p.requires_grad for p in bert.encoder.layer[2].parameters())
    assert not bert.encoder.layer[0].training and bert.encoder.layer[2].training
    enc.eval()  # no dropout in the unfrozen layer: comparable with the reference below
    ids = torch.randint(5, 50, (2, 9))
    attn = torch.ones(2, 9, dtype=torch.long)
    attn[1, 7:] = 0
    sidx = torch.tensor([[-1, 0, 0, 1, 1, 1, 2, 2, -1], [-1, 0, 0, 0, 0, 0, -1, -1, -1]])
    out = enc(ids, attn, sidx, 3)
    states = bert(input_ids=ids, attention_mask=attn).last_hidden_state
    for b in range(2):  # loop reference: max over each sentence's tokens
        for s in range(3):
            tokens = (sidx[b] == s).nonzero().flatten()
            ref = states[b, tokens].max(0).values if len(tokens) else torch.zeros(32)
            assert torch.allclose(out[b, s], ref, atol=1e-6)
    out.sum().backward()
    assert bert.embeddings.word_embeddings.weight.grad is None
    assert bert.encoder.layer[2].attention.self.query.weight.grad is not None


def test_pooling_projection_and_cross_attention_ignore_padding():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    x2 = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    pool = AttentionPool(16, heads=4).eval()
    (p1, w1), (p2, w2) = pool(x, mask), pool(x2, mask)
    assert torch.allclose(p1, p2, atol=1e-5) and torch.allclose(w1, w2, atol=1e-6)
    assert torch.allclose(w1.sum(-1), torch.ones(3)) and (w1[~mask] == 0).all()
    proj = ProjectionMLP(16, 32, 8).train()
    y1, y2 = proj(x, mask), proj(x2, mask)  # BatchNorm statistics over real entries only
    assert torch.allclose(y1, y2, atol=1e-5) and (y1[~mask] == 0).all()
    cross = CrossModalAttention(16).train()
    img = torch.randn(3, 4, 16)
    (r2i_a, i2r_a), (r2i_b, i2r_b) = cross(img, x, mask), cross(img, x2, mask)
    assert r2i_a.shape == (3, 4, 16) and i2r_a.shape == (3, 5, 16)
    assert torch.allclose(r2i_a, r2i_b, atol=1e-5) and torch.allclose(i2r_a[mask], i2r_b[mask], atol=1e-5)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_model_builds_only_what_the_preset_needs(tiny_bert, preset):
    folder, _, bert = tiny_bert
    cfg = preset_config(
        preset,
        model=ModelConfig(
            image_arch="resnet18",
            image_init="random",
            text_model=str(folder),
            proj_hidden=32,
            proj_dim=16,
            heads=2,
        ),
    )
    net = ImageTextModel(cfg.model, cfg.loss, bert)
    loss = LossConfig(PRESETS[preset].weights)
    assert hasattr(net, "cross_attention") == loss.needs_cross_attention
    assert hasattr(net, "image_local_proj") == loss.needs_local
    assert hasattr(net, "image_pool") == (PRESETS[preset].pool == "attention")


def test_bench_pretrain_step_runs(capsys):
    """bench/pretrain_step.py at toy sizes: every preset steps and gets a ratio to clip."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "pretrain_step.py"
    spec = importlib.util.spec_from_file_location("pretrain_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = "--batch-size 2 --image-size 64 --steps 1 --heads-steps 1 --warmup 0 --image-arch resnet18".split()
    argv += ["--text-hidden", "32", "--text-layers", "2", "--text-heads", "2", "--frozen-layers", "1"]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split() and line.split()[0] in PRESETS
    }
    assert set(rows) == set(PRESETS) and rows["clip"][2] == "1.00" and rows["clip"][-1] == "1.000"


@pytest.mark.parametrize("preset", ["clip", "convirt"])
def test_tokens_in_global_space_of_identical_entries_are_the_global_embedding(tiny_bert, preset):
    """What the analysis uses for every preset: a region / sentence equal to all others of its sample maps
    exactly onto the sample's global embedding (attention pooling: value + output projection; avg: itself)."""
    folder, _, bert = tiny_bert
    cfg = preset_config(
        preset,
        model=ModelConfig(
            image_arch="resnet18", image_init="random", text_model=str(folder), proj_hidden=32, proj_dim=16, heads=2
        ),
    )
    net = ImageTextModel(cfg.model, cfg.loss, bert).eval()
    torch.manual_seed(0)
    regions = torch.randn(3, 1, 512).expand(3, 6, 512)
    pooled, _ = net._pool("image", regions, None)
    with torch.no_grad():
        tokens = net.tokens_in_global_space("image", regions)
        expected = net.image_global_proj(pooled)
    assert tokens.shape == (3, 6, 16)
    assert torch.allclose(tokens, expected[:, None].expand_as(tokens), atol=1e-5)
    sentences = torch.randn(2, 1, bert.config.hidden_size).expand(2, 4, -1).clone()
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    sentences[~mask] = 99.0  # padding: excluded from the pooling and left zero in the output
    pooled, _ = net._pool("text", sentences, mask)
    with torch.no_grad():
        tokens = net.tokens_in_global_space("text", sentences, mask)
        expected = net.text_global_proj(pooled)
    assert torch.allclose(tokens[mask], expected[:, None].expand(2, 4, 16)[mask], atol=1e-5)
    assert (tokens[~mask] == 0).all()
