"""timm's pretrained weights (timm:NAME.TAG, timm:hf-hub:ID) are downloaded where timm downloads them and read
through cxrbench's one loader. No network: the download functions timm calls (Hugging Face Hub's
hf_hub_download, torch.hub's download_url_to_file) are replaced by fakes that copy generated files in the exact
formats into the caches, as the real ones would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub.utils import EntryNotFoundError
from safetensors.torch import save_file
from timm.models import _hub

from benchmark.backbones import BackboneError, WeightsFileError, build_encoder, parse_spec
from benchmark.backbones import timm_models as tb
from tests.cxrcore.test_weights_hostile import DEEP, SIZE_ATTACKS, _call_pickle, _Touch, zip_with


class FakeDownloads:
    """What the Hub and the URLs hold, and how often each was really downloaded."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hub: dict[tuple[str, str], Path] = {}
        self.urls: dict[str, Path] = {}
        self.downloads: list[str] = []

    def hf_hub_download(self, repo_id, filename, *, revision=None, cache_dir=None, **_):
        if (repo_id, filename) not in self.hub:
            raise EntryNotFoundError(f"{repo_id}/{filename} not found")
        # Hugging Face Hub's cache layout: models--ORG--NAME/snapshots/REVISION/FILE
        cached = self.root / "hf" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / (revision or "main")
        cached = cached / filename
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.hub[repo_id, filename], cached)
            self.downloads.append(f"{repo_id}/{filename}")
        return str(cached)

    def download_url_to_file(self, url, dst, hash_prefix=None, progress=True):
        shutil.copyfile(self.urls[url], dst)
        self.downloads.append(url)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    f = FakeDownloads(tmp_path)
    monkeypatch.setenv("CXRBENCH_OFFLINE", "0")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch-hub"))
    monkeypatch.setattr(_hub, "hf_hub_download", f.hf_hub_download)
    monkeypatch.setattr(_hub, "download_url_to_file", f.download_url_to_file)  # timm's download_cached_file
    monkeypatch.setattr(torch.hub, "download_url_to_file", f.download_url_to_file)  # load_state_dict_from_url
    return f


def _random(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def _same_as_timm(spec: str, name: str, x: torch.Tensor) -> None:
    """cxrbench's encoder for ``spec`` gives exactly the features of timm's own loading of the same download."""
    enc, info = build_encoder(spec)
    assert info.tag == "pretrained"
    indices, native = tb.feature_plan(tb.split_name(name)[0])
    ref = timm.create_model(name, pretrained=True, features_only=True, out_indices=indices).eval()
    with torch.no_grad():
        ours = enc.eval()(x)
        theirs = ref(x)
        random_init = enc.__class__(name)(x)
    assert len(theirs) == len(native)
    for k, t in zip(native, theirs):
        assert torch.equal(ours[k], t), k
    # and the weights are the file's, not a random initialisation
    assert not torch.equal(ours[max(native)], random_init[max(native)])


@pytest.mark.parametrize("kind", ["model.safetensors", "pytorch_model.bin"])
def test_tag_from_the_hub_equals_timm_and_is_cached(tmp_path, fake, kind):
    sd = {k: v.contiguous() for k, v in _random("convnext_atto", 3).state_dict().items()}
    src = tmp_path / kind
    save_file(sd, str(src)) if kind.endswith(".safetensors") else torch.save(sd, src)
    fake.hub["timm/convnext_atto.d2_in1k", kind] = src
    path = tb.pretrained_weights_file("convnext_atto.d2_in1k")
    assert path.name == kind and fake.downloads == [f"timm/convnext_atto.d2_in1k/{kind}"]
    _same_as_timm("timm:convnext_atto.d2_in1k", "convnext_atto.d2_in1k", torch.randn(2, 3, 64, 64))
    assert len(fake.downloads) == 1  # ours twice and timm's own: one download, the cache serves the rest


def test_tag_from_a_url_equals_timm_and_is_cached(tmp_path, fake):
    name = "legacy_seresnet18.in1k"
    url = timm.models.get_pretrained_cfg(name).url
    src = tmp_path / "weights.pth"
    torch.save(_random("legacy_seresnet18", 5).state_dict(), src)
    fake.urls[url] = src
    path = tb.pretrained_weights_file(name)
    assert path == Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name  # torch.hub's cache layout
    _same_as_timm(f"timm:{name}", name, torch.randn(1, 3, 64, 64))
    assert fake.downloads == [url]


def test_hf_hub_spec_equals_timm(tmp_path, fake):
    folder = tmp_path / "hub-folder"
    _hub.save_for_hf(_random("convnext_atto", 7), str(folder), safe_serialization="both")
    for f in folder.iterdir():
        fake.hub["someone/cxr-convnext", f.name] = f
    info = parse_spec("timm:hf-hub:someone/cxr-convnext")
    assert info.arch == "timm:hf-hub:someone/cxr-convnext" and info.tag == "pretrained"
    assert info.channels == parse_spec("timm:convnext_atto").channels
    _same_as_timm("timm:hf-hub:someone/cxr-convnext", "hf-hub:someone/cxr-convnext", torch.randn(1, 3, 64, 64))
    assert sorted(fake.downloads) == ["someone/cxr-convnext/config.json", "someone/cxr-convnext/model.safetensors"]
    with pytest.raises(BackboneError, match="hf-hub"):
        parse_spec("timm:hf-hub:someone/cxr-convnext:/some/file.pt")


def test_hub_spec_refused_offline(monkeypatch):
    monkeypatch.setenv("CXRBENCH_OFFLINE", "1")
    with pytest.raises(Exception, match="needs the network"):
        parse_spec("timm:hf-hub:someone/cxr-convnext")


def _hostile(tmp_path: Path) -> dict[str, Path]:
    out = {
        "deep": zip_with(tmp_path, "deep.pth", DEEP["tuple-key"]),
        "size": zip_with(tmp_path, "size.pth", _call_pickle(SIZE_ATTACKS["bytearray-3GiB"])),
        "payload": tmp_path / "payload.pth",
        "empty": tmp_path / "empty.pth",
    }
    torch.save({"w": torch.zeros(2), "meta": _Touch(tmp_path / "pwned")}, out["payload"])
    out["empty"].write_bytes(b"")
    return out


@pytest.mark.parametrize("attack", ["deep", "size", "payload", "empty"])
def test_hostile_downloads_are_refused_naming_the_file(tmp_path, fake, monkeypatch, attack):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    src = _hostile(tmp_path)[attack]
    fake.hub["timm/convnext_atto.d2_in1k", "pytorch_model.bin"] = src
    url = timm.models.get_pretrained_cfg("legacy_seresnet18.in1k").url
    fake.urls[url] = src
    for spec in ("timm:convnext_atto.d2_in1k", "timm:legacy_seresnet18.in1k"):
        cached = tb.pretrained_weights_file(spec[len("timm:") :])
        with pytest.raises(WeightsFileError) as e:
            build_encoder(spec)
        assert str(cached) in str(e.value)
        expected = {
            "deep": "nested deeper than",
            "size": "bytearray",
            "payload": "outside torch's weights-only allow-list",
            "empty": "the file is empty",
        }[attack]
        assert expected in str(e.value)
    assert not (tmp_path / "pwned").exists()
