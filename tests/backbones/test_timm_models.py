"""timm models as encoders: levels from feature_info, local weights, the parameter-free pyramid."""

from __future__ import annotations

import json

import pytest
import timm  # a required dependency: a broken install fails these tests, it is not skipped
import torch
from safetensors.torch import save_file

from benchmark.backbones import (
    BackboneError,
    BackboneKeyError,
    CXRBackbone,
    WeightsUnavailableError,
    build_encoder,
    parse_spec,
)
from benchmark.backbones.levels import plan_levels


def test_convnext_levels_from_feature_info():
    info = parse_spec("timm:convnext_atto")
    # ConvNeXt has no stride-2 stage: C1 is C2 upsampled (channels of C2)
    assert info.arch == "timm:convnext_atto" and info.tag == "random" and info.format == "timm"
    assert info.channels == (3, 40, 40, 80, 160, 320) and info.strides == (1, 2, 4, 8, 16, 32)
    assert "bilinear of native C2" in info.levels[1]
    b = CXRBackbone("timm:convnext_atto", out_indices=(1, 2, 3, 4, 5))
    feats = b(torch.randn(2, 1, 64, 64))
    assert [f.shape[1] for f in feats] == list(info.channels[1:]) == b.channels
    assert [64 // f.shape[-1] for f in feats] == [2, 4, 8, 16, 32] == b.strides


def test_vit_simple_pyramid():
    """A ViT has one stride-16 level: C3 is upsampled, C5 max-pooled from it (YOLOv3 needs all three)."""
    info = parse_spec("timm:vit_tiny_patch16_224")
    assert info.channels[3:] == (192, 192, 192)
    assert [lv.split(":")[0] for lv in info.levels] == ["C0", "C1", "C2", "C3", "C4", "C5"]
    assert "max-pool of native C4" in info.levels[5] and "bilinear of native C4" in info.levels[3]
    b = CXRBackbone("timm:vit_tiny_patch16_224", out_indices=(3, 4, 5), frozen=True)
    x = torch.randn(1, 1, 224, 224)
    c3, c4, c5 = b(x)
    assert c3.shape == (1, 192, 28, 28) and c4.shape == (1, 192, 14, 14) and c5.shape == (1, 192, 7, 7)
    assert torch.equal(c5, torch.nn.functional.max_pool2d(c4, 2))
    assert torch.allclose(c3, torch.nn.functional.interpolate(c4, size=(28, 28), mode="bilinear"))
    assert not any(p.requires_grad for p in b.parameters())  # the pyramid adds no parameters


def test_plan_levels_rules():
    plan = plan_levels({4: (384, 16)})
    assert [(lv.source, lv.op) for lv in plan] == [
        (0, "native"),
        (4, "bilinear"),
        (4, "bilinear"),
        (4, "bilinear"),
        (4, "native"),
        (4, "max-pool"),
    ]
    # a gap is filled from the level below (pooling keeps the finer detail)
    gap = plan_levels({2: (8, 4), 4: (16, 16)})
    assert (gap[3].source, gap[3].op, gap[3].channels) == (2, "max-pool", 8)


def timm_weights(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def test_local_weights_file_and_hf_folder(tmp_path):
    model = timm_weights("convnext_atto", seed=4)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "atto.safetensors"
    save_file(sd, str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.forward_features(x)
    enc, info = build_encoder(f"timm:convnext_atto:{path}")
    assert info.tag == "file" and info.sha256 and info.conversion["ignored"] == {"classifier keys": 2}
    with torch.no_grad():
        assert torch.allclose(enc.eval()(x)[5], ref, atol=1e-5)
    # a Hugging Face timm folder is recognised from its config.json, no spec prefix needed
    folder = tmp_path / "convnext_atto.hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "convnext_atto", "num_classes": 1000}))
    torch.save(sd, folder / "pytorch_model.bin")
    enc, info = build_encoder(str(folder))
    assert info.arch == "timm:convnext_atto" and info.path.endswith("pytorch_model.bin")
    with torch.no_grad():
        assert torch.allclose(enc.eval()(x)[5], ref, atol=1e-5)


def test_local_weights_mismatch_and_bad_specs(tmp_path):
    sd = timm_weights("convnext_atto").state_dict()
    del sd["stages.1.blocks.0.conv_dw.weight"]
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(BackboneKeyError, match=r"missing keys \(1\): stages\.1\.blocks\.0\.conv_dw\.weight"):
        build_encoder(f"timm:convnext_atto:{path}")
    with pytest.raises(BackboneError, match="unknown timm model 'convnext_tinyy'"):
        parse_spec("timm:convnext_tinyy")
    with pytest.raises(WeightsUnavailableError, match="offline mode"):
        parse_spec("timm:convnext_atto.d2_in1k")  # the test suite runs with CXRBENCH_OFFLINE=1
    with pytest.raises(BackboneError, match="unknown normalisation"):
        parse_spec("timm:convnext_atto#norm=weird")
    assert parse_spec("timm:convnext_atto#norm=imagenet").normalization["name"] == "imagenet"
