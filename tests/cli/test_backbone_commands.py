"""`cxrbench backbones` and `cxrbench inspect` (with --export)."""

from __future__ import annotations

import hashlib
import json

import torch

from benchmark.backbones.formats import FORMATS
from tests.support.fake_checkpoints import make_gloria, random_resnet, reference_levels

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_backbones_lists_every_format_with_source(cli):
    listing = cli("backbones", "--json")
    assert listing.code == 0
    cat = json.loads(listing.out)
    names = [f["name"] for f in cat["formats"]]
    assert names == [*FORMATS, "timm"]
    assert all(f["source"] and f["example"] for f in cat["formats"])
    assert {"resnet50.random", "timm:NAME", "FORMAT:PATH"} <= {s["spec"] for s in cat["specs"]}
    listing = cli("backbones")
    assert listing.code == 0
    text = listing.out
    assert "marshuang80/gloria" in text and "microsoft/hi-ml" in text and "--backbone gloria:" in text


def test_inspect_reports_and_exports(tmp_path, cli):
    net = random_resnet("resnet18", seed=7)
    state = make_gloria(net)
    path = tmp_path / "gloria18.ckpt"
    torch.save({"state_dict": state, "epoch": 1}, path)
    inspected = cli("inspect", path, "--json")
    assert inspected.code == 0
    report = json.loads(inspected.out)
    trunk = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("fc."))
    assert report["format"] == "gloria" and report["arch"] == "resnet18" and report["ok"]
    assert report["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report["mapped_keys"] == len(trunk) and report["parameters"] == params
    assert report["ignored"]["projection-head keys"]["count"] == 3
    assert report["container"] == "checkpoint['state_dict']" and report["other_entries"] == ["epoch"]
    assert report["normalization"]["name"] == "gloria" and len(report["levels"]) == 6

    out = tmp_path / "gloria18_resnet.safetensors"
    exported = cli("inspect", path, "--export", out)
    assert exported.code == 0
    text = exported.out
    assert "format        gloria - GLoRIA" in text and f"exported {len(trunk)} tensors" in text
    # the export is a plain torchvision file: same features, and the protocol's normalisation
    from benchmark.backbones import build_encoder

    enc, info = build_encoder(str(out))
    assert info.format == "torchvision" and info.normalization is None
    with torch.no_grad():
        assert torch.allclose(enc.eval()(X)[5], reference_levels(net, X)[5], atol=1e-5)


def test_inspect_unmapped_and_unknown(tmp_path, cli):
    net = random_resnet("resnet18", seed=7)
    state = make_gloria(net)
    state["gloria.img_encoder.new_pooler.weight"] = torch.zeros(2)
    path = tmp_path / "variant.pt"
    torch.save(state, path)
    unmapped = cli("inspect", path)
    assert unmapped.code == 1
    assert "gloria.img_encoder.new_pooler.weight" in unmapped.out
    torch.save({"something.else": torch.zeros(1)}, path)
    unknown = cli("inspect", path, "--json")
    assert unknown.code == 1
    assert "no known checkpoint layout" in json.loads(unknown.out)["error"]
    assert cli("inspect", tmp_path / "missing.pt").code == 2
