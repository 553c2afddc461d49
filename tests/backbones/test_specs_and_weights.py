"""Backbone specs, weight loading and its errors, frozen / warm-up semantics."""

from __future__ import annotations

import types

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from benchmark.backbones import (
    ARCHS,
    BackboneError,
    BackboneKeyError,
    CXRBackbone,
    UnsafeCheckpointError,
    WeightsUnavailableError,
    build_encoder,
    parse_spec,
)


def tv_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)(weights=None).state_dict()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_random_spec_features(arch):
    b = CXRBackbone(f"{arch}.random", out_indices=(0, 1, 2, 3, 4, 5))
    feats = b(torch.randn(2, 1, 64, 64))
    assert [f.shape[1] for f in feats] == list(ARCHS[arch].channels) == b.channels
    assert [64 // f.shape[-1] for f in feats] == list(ARCHS[arch].strides) == b.strides


def test_features_equal_torchvision():
    state = tv_state("resnet18")
    enc, _ = build_encoder("resnet18.random")
    enc.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    ref = torchvision.models.resnet18(weights=None)
    ref.load_state_dict(state)
    enc.eval(), ref.eval()
    x = torch.randn(1, 3, 64, 64)
    r = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
    assert torch.allclose(enc(x)[5], r)


@pytest.mark.parametrize("prefix", ["", "module.", "backbone.", "encoder.", "module.encoder."])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_file_spec_with_prefixes(tmp_path, prefix, suffix):
    state = tv_state("resnet18", seed=1)
    wrapped = {prefix + k: v.contiguous() for k, v in state.items()}  # fc.* included: it must be dropped
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(wrapped, str(path))
    else:
        torch.save({"state_dict": wrapped, "epoch": 3}, path)
    info = parse_spec(str(path))
    assert info.arch == "resnet18" and info.tag == "file" and len(info.sha256) == 64
    enc, _ = build_encoder(info)
    assert torch.equal(enc.conv1.weight, state["conv1.weight"])
    assert torch.equal(enc.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_arch_inferred_from_keys(tmp_path):
    for arch in ARCHS:
        path = tmp_path / f"{arch}.pth"
        torch.save(tv_state(arch), path)
        assert parse_spec(str(path)).arch == arch
    assert parse_spec(f"resnet34:{tmp_path / 'resnet34.pth'}").arch == "resnet34"


def test_missing_and_unexpected_keys_listed(tmp_path):
    state = tv_state("resnet18")
    del state["layer2.0.conv1.weight"]
    state["projection.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(BackboneKeyError) as e:
        build_encoder(str(path))
    msg = str(e.value)
    assert "missing keys (1): layer2.0.conv1.weight" in msg
    assert "unexpected keys (1): projection.weight" in msg
    assert str(path) in msg


def test_shape_mismatch_names_key(tmp_path):
    state = tv_state("resnet18")
    state["layer3.0.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(
        BackboneKeyError,
        match=r"shape mismatch for key 'layer3.0.conv2.weight'.*\(256, 256, 1, 1\).*\(256, 256, 3, 3\)",
    ):
        build_encoder(str(path))


def test_bad_specs():
    with pytest.raises(BackboneError, match="unknown architecture"):
        parse_spec("resnet99.random")
    with pytest.raises(BackboneError, match="unknown weights tag"):
        parse_spec("resnet50.lovt")
    with pytest.raises(BackboneError, match="not found"):
        parse_spec("/nonexistent/weights.pth")
    with pytest.raises(BackboneError, match="cannot parse"):
        parse_spec("something")


def test_imagenet_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRBENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("CXRBENCH_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError, match=r"resnet50-0676ba61\.pth.*put it at"):
        build_encoder("resnet50.imagenet")


def test_imagenet_from_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRBENCH_WEIGHTS_DIR", str(tmp_path))
    state = tv_state("resnet18", seed=5)
    torch.save(state, tmp_path / "resnet18-f37072fd.pth")
    enc, info = build_encoder("resnet18.imagenet")
    assert info.tag == "imagenet"
    assert torch.equal(enc.conv1.weight, state["conv1.weight"])


def test_malicious_checkpoint_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Evil()}, path)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match="never runs code"):
        parse_spec(str(path))
    assert not marker.exists()


def _train_step(backbone: CXRBackbone) -> None:
    head = torch.nn.Conv2d(backbone.channels[-1], 1, 1)
    params = [p for p in backbone.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    backbone.train()
    head.train()
    loss = head(backbone(torch.randn(4, 1, 64, 64))[-1]).square().mean()
    loss.backward()
    opt.step()


def test_frozen_backbone_unchanged_by_training():
    b = CXRBackbone("resnet18.random", out_indices=(5,), frozen=True)
    before = {k: v.clone() for k, v in b.state_dict().items()}
    _train_step(b)
    assert not b.encoder.training and all(not m.training for m in b.encoder.modules())
    assert all(p.grad is None and not p.requires_grad for p in b.encoder.parameters())
    for k, v in b.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights AND BatchNorm running statistics
    with pytest.raises(RuntimeError, match="cannot be unfrozen"):
        b.set_encoder_frozen(False)


def test_finetune_backbone_trains():
    b = CXRBackbone("resnet18.random", out_indices=(5,))
    before = b.encoder.bn1.running_mean.clone()
    _train_step(b)
    assert b.encoder.training
    assert not torch.equal(b.encoder.bn1.running_mean, before)
    assert b.encoder.conv1.weight.grad is not None


def test_warmup_hook_unfreezes_at_iteration_n():
    from benchmark.openmmlab.hooks import FinetuneWarmupHook

    b = CXRBackbone("resnet18.random", out_indices=(5,), warmup_frozen_iters=3)
    assert b.encoder_frozen
    opt = torch.optim.Adam(b.parameters(), lr=5e-5)
    runner = types.SimpleNamespace(
        model=types.SimpleNamespace(backbone=b),
        optim_wrapper=types.SimpleNamespace(optimizer=opt),
        iter=0,
        logger=types.SimpleNamespace(info=lambda *a: None),
    )
    hook = FinetuneWarmupHook(warmup_iters=3, warmup_lr=1e-3, lr=5e-5)
    hook.before_train(runner)
    seen = []
    for it in range(6):
        runner.iter = it
        hook.before_train_iter(runner, it)
        b.train()
        seen.append((b.encoder_frozen, b.encoder.training, opt.param_groups[0]["lr"]))
        if it == 4:
            opt.param_groups[0]["lr"] = 2.5e-5  # a plateau halving after the switch must survive
    assert seen[:3] == [(True, False, 1e-3)] * 3
    assert seen[3] == (False, True, 5e-5)
    assert seen[5] == (False, True, 2.5e-5)
    assert all(p.requires_grad for p in b.encoder.parameters())
