"""A backbone spec is resolved twice per run (``evaluate`` before planning, ``CXRBackbone`` from the mmengine
config), but its weights file is read, converted and hashed once per process while it is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

import benchmark.backbones.spec as spec_mod
import cxrcore.weights
from benchmark.backbones import CXRBackbone, build_encoder, parse_spec


def tv_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


def count_reads(monkeypatch) -> tuple[list[Path], list[Path]]:
    """Every read of a weights file through the one loader, and every sha256 of one while resolving."""
    reads: list[Path] = []
    hashes: list[Path] = []
    load, sha = cxrcore.weights.load_weights, spec_mod.sha256_file

    def counted_load(path, *a, **k):
        reads.append(Path(path))
        return load(path, *a, **k)

    def counted_sha(path, *a, **k):
        hashes.append(Path(path))
        return sha(path, *a, **k)

    monkeypatch.setattr(cxrcore.weights, "load_weights", counted_load)
    monkeypatch.setattr(spec_mod, "sha256_file", counted_sha)
    return reads, hashes


def trunk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def test_unchanged_file_is_read_and_hashed_once_and_a_rewritten_one_again(tmp_path, monkeypatch):
    path = tmp_path / "encoder.pt"
    torch.save(tv_state(0), path)
    reads, hashes = count_reads(monkeypatch)
    info = parse_spec(str(path))
    backbone = CXRBackbone(str(path), frozen=True)
    assert backbone.info == info
    assert reads == [path] and hashes == [path]
    for k, v in trunk(tv_state(0)).items():
        assert torch.equal(backbone.encoder.state_dict()[k], v), k
    # the cached tensors are copied into each model: training one does not change the next one's weights
    with torch.no_grad():
        for p in backbone.encoder.parameters():
            p.add_(1.0)
    again, again_info = build_encoder(str(path))
    assert again_info == info and len(reads) == 1 and len(hashes) == 1
    for k, v in trunk(tv_state(0)).items():
        assert torch.equal(again.state_dict()[k], v), k
    # a rewritten file (new content, new mtime) is read, converted and hashed again
    torch.save(tv_state(1), path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = parse_spec(str(path))
    assert changed.sha256 != info.sha256 and len(reads) == 2 and len(hashes) == 2
    model, _ = build_encoder(str(path))
    assert len(reads) == 2
    for k, v in trunk(tv_state(1)).items():
        assert torch.equal(model.state_dict()[k], v), k


def test_a_failed_read_is_not_cached(tmp_path, monkeypatch):
    path = tmp_path / "encoder.pt"
    state = tv_state(0)
    state["layer4.1.conv2.weight"] = torch.zeros(512, 512, 1, 1)
    torch.save(state, path)
    reads, _ = count_reads(monkeypatch)
    for _ in range(2):
        with pytest.raises(ValueError, match="shape mismatch for key 'layer4.1.conv2.weight'"):
            parse_spec(str(path))
    assert len(reads) == 2


@pytest.mark.slow
def test_one_evaluate_reads_and_hashes_the_checkpoint_once(data_root, tmp_path, monkeypatch):
    from benchmark.runs import RunOptions, evaluate
    from tasks.registry import get_task

    path = tmp_path / "encoder.pt"
    torch.save(tv_state(0), path)
    expected_sha = spec_mod.sha256_file(path)
    reads, hashes = count_reads(monkeypatch)
    records = evaluate(
        str(path),
        [get_task("rsna_linear_10")],
        data_root,
        tmp_path / "out",
        seeds=[0, 1],
        lr=1e-3,
        options=RunOptions(max_epochs=1, batch_size=2, train_limit=4, progress=False),
        echo=lambda *a: None,
    )
    assert [r["status"] for r in records] == ["ok", "ok"]  # two runs: three resolutions of the spec
    assert all(r["backbone"]["sha256"] == expected_sha for r in records)
    assert reads == [path] and hashes == [path]
