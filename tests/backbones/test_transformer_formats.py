"""Transformer checkpoint formats: each layout, built by the method's public model code
(tests/support/transformer_checkpoints.py), is detected from its keys, every key is accounted for, and the converted
encoder gives the original module's features on the same input."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from benchmark.backbones import BackboneError, CXRBackbone, build_encoder, parse_spec
from benchmark.backbones.formats import FormatError, UnmappedKeysError
from tests.support.transformer_checkpoints import (
    make_biomedclip,
    make_chexzero,
    make_medclip_swin,
    make_mgca_vit,
    make_mrm,
    make_rad_dino,
)

pytest.importorskip("timm")
pytest.importorskip("transformers")
open_clip = pytest.importorskip("open_clip")

G = torch.Generator().manual_seed(0)
X64 = torch.randn(2, 3, 64, 64, generator=G)


def features(spec: str, x: torch.Tensor):
    enc, info = build_encoder(spec)
    with torch.no_grad():
        return enc.eval()(x), info


def assert_close(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert got.shape == ref.shape
    diff = (got - ref).abs().max().item()
    assert diff <= 2e-5 * max(1.0, ref.abs().max().item()), f"max |diff| {diff}"
    return diff


MAE = "MAE decoder keys (masked-patch reconstruction)"
REPORT = "report decoder keys (BERT on the image tokens)"
# name: (builder, file name, container, ignored keys: reason -> which keys of the saved state (regex),
# native level, channels)
VIT_CASES = {
    "biomedclip": (
        make_biomedclip,
        "open_clip_pytorch_model.bin",
        "state dict",
        {"projection-head keys": r"visual\.head\.", "text encoder keys": r"text\.", "logit scale / bias": "logit_"},
        4,
        192,
    ),
    "chexzero": (
        make_chexzero,
        "best_64_5e-05_original_22000_0.864.pt",
        "state dict",
        {
            "projection-head keys": r"visual\.proj$",
            "text encoder keys": r"(transformer|token_embedding|positional_embedding|ln_final|text_projection)",
            "logit scale / bias": "logit_",
        },
        5,
        128,
    ),
    "mrm": (
        make_mrm,
        "MRM.pth",
        "checkpoint['model']",
        {MAE: r"(decoder_|mask_token)", REPORT: r"bert_"},
        4,
        128,
    ),
    "mgca-vit": (
        make_mgca_vit,
        "vit_base.ckpt",
        "checkpoint['state_dict']",
        {
            "projection-head keys": r"img_encoder_q\.(global|local)_embed\.",
            "text encoder keys": r"text_encoder_q\.",
            "alignment / prototype keys": r"(patch_local|word_local|prototype)",
        },
        4,
        128,
    ),
}


@pytest.mark.parametrize("name", list(VIT_CASES))
def test_vit_formats_detected_and_features_equal(name, tmp_path):
    builder, filename, container, ignored, level, channels = VIT_CASES[name]
    saved, reference = builder()
    path = tmp_path / filename
    torch.save(saved, path)
    # open_clip builds BiomedCLIP's timm trunk at timm's default 224 px (a fixed-size model)
    x = torch.randn(2, 3, 224, 224, generator=G) if name == "biomedclip" else X64
    got, info = features(str(path), x)  # auto-detected
    assert info.format == name and info.tag == "file" and info.encoder["family"] == "vit"
    assert info.conversion["container"] == container
    state = saved.get("model") or saved.get("state_dict") or saved
    assert info.conversion["ignored"] == {
        reason: sum(1 for k in state if re.match(rx, k)) for reason, rx in ignored.items()
    }
    assert info.conversion["mapped"] + sum(info.conversion["ignored"].values()) == len(state)  # every key
    assert info.conversion["mapped"] == len(build_encoder(str(path))[0].model.state_dict())
    assert set(got) == {0, level}
    diff = assert_close(got[level], reference(x))
    if name in ("biomedclip", "mrm"):  # the same timm modules: bit-identical
        assert diff == 0.0
    else:  # timm's fused attention vs nn.MultiheadAttention (CheXzero) / MGCA's explicit softmax: ~1e-6
        assert diff < 5e-6
    assert info.channels[2:] == (channels,) * 4 and info.strides[2:] == (4, 8, 16, 32)
    assert info.encoder["train_resolution"] == x.shape[-1] and info.encoder["tokens"].startswith("last block")
    assert parse_spec(f"{name}:{path}").format == name  # FORMAT:PATH
    if name == "mrm":  # MAE's save_model pickles argparse.Namespace: an inert placeholder, never run
        assert info.conversion["not_loaded_objects"] == ["argparse.Namespace"]


@pytest.mark.parametrize("released", [True, False], ids=["released-names", "transformers5-names"])
def test_rad_dino_folder(tmp_path, released):
    folder = tmp_path / "rad-dino"
    model, reference = make_rad_dino(folder, image_size=56, released=released)
    x = torch.randn(2, 3, 56, 56, generator=G)
    got, info = features(str(folder), x)
    assert info.format == "rad-dino" and info.path.endswith("model.safetensors")
    assert info.encoder["num_heads"] == 2  # from config.json (64 // 64 would be 1)
    assert info.encoder["patch"] == 14 and info.encoder["train_resolution"] == 56
    assert info.conversion["ignored"] == {"mask token (masked-image modelling only)": 1}
    # every key accounted for: per block, query / key / value (weight, bias) become one qkv weight and bias
    assert info.conversion["mapped"] + 1 + 4 * 2 == len(model.state_dict())
    assert torch.equal(got[4], reference(x))  # bit-identical to transformers' Dinov2Model
    # the declared convention; a folder's own preprocessor_config.json takes precedence
    assert info.normalization["name"] == "rad-dino" and info.normalization["mean"] == [0.5307] * 3
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    n = parse_spec(str(folder)).normalization
    assert n["mean"] == [0.5] * 3 and n["std"] == [0.25] * 3 and n["source"].endswith("preprocessor_config.json")
    # patch 14: no native level; C2 / C3 upsampled, C4 / C5 adaptively max-pooled from the stride-14 map
    assert info.levels[2].endswith("(bilinear of the encoder's token map at stride 14)")
    assert info.levels[4].endswith("(max-pool of the encoder's token map at stride 14)")


def test_rad_dino_position_embeddings_interpolated_like_timm(tmp_path):
    """Off the training grid, the position embeddings are resampled by timm's resample_abs_pos_embed."""
    from timm.layers import resample_abs_pos_embed

    folder = tmp_path / "rad-dino"
    model, _ = make_rad_dino(folder, image_size=56)  # a 4 x 4 grid; run at 84 px: 6 x 6
    x = torch.randn(1, 3, 84, 84, generator=G)
    got, _ = features(str(folder), x)
    ref_model = type(model)(type(model.config).from_dict(model.config.to_dict() | {"image_size": 84})).eval()
    sd = dict(model.state_dict())
    sd["embeddings.position_embeddings"] = resample_abs_pos_embed(
        sd["embeddings.position_embeddings"], new_size=(6, 6), old_size=(4, 4), num_prefix_tokens=1
    )
    ref_model.load_state_dict(sd)
    with torch.no_grad():
        ref = ref_model(pixel_values=x).last_hidden_state[:, 1:].transpose(1, 2).reshape(1, -1, 6, 6)
        hf = model(pixel_values=x).last_hidden_state[:, 1:].transpose(1, 2).reshape(1, -1, 6, 6)
    assert_close(got[4], ref)
    # transformers' own interpolate_pos_encoding (bicubic by scale factor, no antialias) differs slightly
    assert (got[4] - hf).abs().max().item() > 1e-4


@pytest.mark.parametrize("released", [True, False], ids=["released-names", "transformers5-names"])
def test_medclip_swin_stages(tmp_path, released):
    state, reference = make_medclip_swin(released=released)
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    got, info = features(str(path), X64)
    assert info.format == "medclip-swin" and info.encoder["family"] == "swin-hf"
    assert info.encoder["depths"] == [1, 1, 2, 1] and info.encoder["num_heads"] == [1, 2, 2, 4]
    assert info.encoder["window_size"] == 2
    derived = sum(k.endswith("relative_position_index") for k in state)
    assert derived == (5 if released else 0)  # one per block (1 + 1 + 2 + 1)
    expected = {"projection-head keys": 1, "text encoder keys": 3, "logit scale / bias": 1}
    if derived:
        expected = {"derived buffers (relative_position_index, rebuilt from the window size)": derived} | expected
    assert info.conversion["ignored"] == expected
    assert info.conversion["mapped"] + sum(expected.values()) == len(state)
    assert "vision_model.model.encoder.layers.0.blocks.0.attention.self.query.weight" in state or not released
    assert info.channels[2:] == (16, 32, 64, 128) and all(lv.count("(") == 0 for lv in info.levels[2:])
    ref = reference(X64)
    for k in (2, 3, 4, 5):
        assert torch.equal(got[k], ref[k])  # it is transformers' SwinModel
    assert info.normalization["name"] == "medclip" and abs(info.normalization["mean"][0] - 0.5863) < 1e-4
    enc, _ = build_encoder(str(path))
    with pytest.raises(BackboneError, match="needs inputs of at least 64 px"):
        enc(torch.randn(1, 3, 32, 32))  # the last stage (1 x 1) would be smaller than the window (2)


def test_unknown_image_encoder_key_is_an_error(tmp_path):
    state, _ = make_biomedclip()
    state["visual.trunk.attn_pool.latent"] = torch.zeros(1, 1, 192)
    path = tmp_path / "variant.bin"
    torch.save(state, path)
    with pytest.raises(UnmappedKeysError, match=r"1 key\(s\) of its image encoder.*visual\.trunk\.attn_pool"):
        parse_spec(str(path))
    state, _ = make_chexzero()
    state["visual.transformer.resblocks.0.attn.gate"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(UnmappedKeysError, match=r"resblocks\.0\.attn\.gate"):
        parse_spec(str(path))
    with pytest.raises(FormatError, match=r"not a MRM .*looks like a 'chexzero' checkpoint"):
        parse_spec(f"mrm:{path}")


def test_pyramid_frozen_and_resolution_option(tmp_path):
    """ViT-B/32 layout: C5 native, C2..C4 upsampled; the frozen encoder has no trainable parameter and the
    pyramid adds none; SPEC#res=N runs the encoder on the input resized to N px."""
    state, reference = make_chexzero()
    path = tmp_path / "chexzero.pt"
    torch.save(state, path)
    b = CXRBackbone(str(path), out_indices=(2, 3, 4, 5), frozen=True)
    assert b.channels == [128] * 4 and b.strides == [4, 8, 16, 32]
    assert not any(p.requires_grad for p in b.parameters())
    x = torch.randn(1, 3, 64, 64, generator=G)
    c2, c3, c4, c5 = b(x)
    assert torch.equal(c5, b.encoder(x)[5])
    assert c2.shape[-2:] == (16, 16) and c4.shape[-2:] == (4, 4)
    assert torch.allclose(c4, F.interpolate(c5, size=(4, 4), mode="bilinear", align_corners=False))
    info = parse_spec(f"{path}#res=128")
    assert info.resolution == 128 and info.name.endswith("@128px") and info.name != parse_spec(str(path)).name
    # described on the protocol's 224-px input: a 4 x 4 map, stride 32 * 224 / 128 = 56, upsampled to C5
    assert info.levels[5].endswith("(bilinear of the encoder's token map at stride 56)")
    # the operation follows the actual sizes: on this 64-px input the 4 x 4 tokens are max-pooled to C5's 2 x 2
    hi = CXRBackbone(f"{path}#res=128", out_indices=(5,), frozen=True)
    (c5_hi,) = hi(x)
    up = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.equal(c5_hi, F.adaptive_max_pool2d(hi.encoder(up)[5], (2, 2)))
    from benchmark.runs.records import run_key

    common = dict(task={"id": "t"}, split_hash="s", seed=0, lr=0.1, size=224)
    assert run_key(backbone=info.to_dict(), **common) != run_key(backbone=parse_spec(str(path)).to_dict(), **common)
    with pytest.raises(Exception, match="res=abc"):
        parse_spec(f"{path}#res=abc")
    with pytest.raises(Exception, match="unknown option 'size'"):
        parse_spec(f"{path}#size=518")
    assert parse_spec(f"{path}#norm=task,res=448").resolution == 448


def test_cli_backbones_and_inspect_explain_them(tmp_path, cli):
    backbones = cli("backbones")
    assert backbones.code == 0
    listing = backbones.out
    for name in ("rad-dino", "biomedclip", "chexzero", "mrm", "mgca-vit", "medclip-swin"):
        assert f"  {name}" in listing
    assert "trained at 518 px" in listing and "SPEC#res=N" in listing
    folder = tmp_path / "rad-dino"
    make_rad_dino(folder, image_size=56)
    inspected = cli("inspect", folder)
    assert inspected.code == 0
    out = inspected.out
    assert "format        rad-dino - RAD-DINO (Hugging Face Dinov2)" in out
    assert "transformer   vit: patch 14, 2 blocks of 64, 2 heads; trained at 56 px" in out
    assert "tokens        last block's patch tokens after the final LayerNorm" in out
    assert "pos. embed.   bicubic (timm resample_abs_pos_embed" in out
    assert "ignored           1 mask token" in out
    assert f"spec          rad-dino:{folder / 'model.safetensors'}" in out
    export = tmp_path / "rad_dino_vit.safetensors"
    # evaluate could not read a plain timm ViT state dict back (heads, resolution, input convention are
    # lost), so inspect writes none, as for every file evaluate would reject
    refused = cli("inspect", folder, "--export", export)
    assert refused.code == 1
    assert "not exported: a rad-dino transformer encoder" in refused.err
    assert not export.exists()
