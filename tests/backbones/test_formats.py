"""Checkpoint formats of public CXR methods: a fake checkpoint per format, built from modules that mirror
the method's own (so the key layout is the method's, not a hand-typed copy), loads into features equal to
those of the plain ResNet holding the same weights."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from torch import nn

from benchmark.backbones import BackboneKeyError, CXRBackbone, build_encoder, parse_spec
from benchmark.backbones.formats import FormatError, UnmappedKeysError
from tests.support.fake_checkpoints import (
    FakeBert,
    make_biovil,
    make_gloria,
    make_lovt,
    make_medklip,
    make_mgca,
    make_mmpretrain,
    random_resnet,
    reference_levels,
)

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def assert_same_features(spec: str, net: nn.Module, stages: int = 4) -> None:
    enc, info = build_encoder(spec)
    enc.eval()
    with torch.no_grad():
        got = enc(X)
    ref = reference_levels(net, X, stages)
    assert sorted(k for k in got if k) == sorted(ref)
    for k, r in ref.items():
        assert torch.allclose(got[k], r, atol=1e-5), f"C{k} differs"
    return info


class FakeInert:
    """Stands for OmegaConf's DictConfig in Lightning hyper_parameters (a class torch refuses to unpickle).

    Pickled like the real one: NEWOBJ, then BUILD with the instance's ``__dict__``.
    """

    def __init__(self, **content):
        self._content = content
        self._metadata = {"ref_type": "typing.Any", "optional": True}


@pytest.fixture
def lightning_ckpt(monkeypatch):
    """Save a state dict the way Lightning does, with hyper_parameters in a class unknown at load time."""

    def save(state: dict, path) -> None:
        mod = types.ModuleType("omegaconf.dictconfig")
        FakeInert.__module__ = "omegaconf.dictconfig"
        FakeInert.__qualname__ = "DictConfig"
        mod.DictConfig = FakeInert
        monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
        monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", mod)
        hparams = FakeInert(model={"vision": {"model_name": "resnet_50"}})
        torch.save(
            {
                "epoch": 12,
                "global_step": 3456,
                "pytorch-lightning_version": "1.5.10",
                "state_dict": state,
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-5}]}],
                "lr_schedulers": [],
                "hyper_parameters": hparams,
            },
            path,
        )
        monkeypatch.delitem(sys.modules, "omegaconf.dictconfig")  # loading must not need the class
        monkeypatch.delitem(sys.modules, "omegaconf")

    return save


@pytest.fixture(scope="module")
def net50():
    return random_resnet("resnet50", seed=3)


LOVT_AGG = "global aggregator keys (attention pooling for the global embedding)"
TEMPORAL = "temporal-fusion keys (multi-image ViT pooler on C5)"
# name: (builder, container, ignored keys by reason - counted by hand from the modules above)
CASES = {
    "gloria": (make_gloria, "lightning", {"projection-head keys": 3, "text encoder keys": 5}),
    "mgca": (
        make_mgca,
        "lightning",
        {"projection-head keys": 21, "text encoder keys": 17, "alignment / prototype keys": 9},
    ),
    "lovt": (
        make_lovt,
        "lightning",
        {
            LOVT_AGG: 4,
            "projection-head keys": 18,
            "report (text) encoder keys": 7,
            "alignment / loss keys": 4,
        },
    ),
    "biovil": (make_biovil, "plain", {"classifier (fc) keys": 2, "projection-head keys": 8}),
    "biovil-t": (
        lambda n: make_biovil(n, temporal=True),
        "plain",
        {"classifier (fc) keys": 2, TEMPORAL: 6, "projection-head keys": 8},
    ),
    "medklip": (make_medklip, "medklip", {"patch projection keys": 4, "query-decoder / classifier keys": 8}),
    "mmpretrain": (make_mmpretrain, "mmengine", {"neck / head keys": 2}),
    # LoVT's baseline export: torch.save(backbone_model.state_dict(), 'backbone_weights.pt')
    "torchvision": (lambda n: n.state_dict(), "plain", {"classifier (fc) keys": 2}),
}


def save_case(name, state, path, lightning_ckpt):
    container = CASES[name][1]
    if container == "lightning":
        lightning_ckpt(state, path)
    elif container == "medklip":
        torch.save(
            {"model": state, "optimizer": {}, "config": {"res_base_model": "resnet50"}, "epoch": 99}, path
        )
    elif container == "mmengine":
        from mmengine.logging import HistoryBuffer  # mmengine's message hub: refused by weights_only

        torch.save(
            {"meta": {"epoch": 100}, "state_dict": state, "message_hub": {"loss": HistoryBuffer()}}, path
        )
    else:
        torch.save(state, path)


@pytest.mark.parametrize("name", list(CASES))
def test_format_detected_and_features_equal(name, net50, tmp_path, lightning_ckpt):
    builder, _, ignored = CASES[name]
    state = builder(net50)
    path = tmp_path / f"{name}.ckpt"
    save_case(name, state, path, lightning_ckpt)
    stages = 3 if name == "medklip" else 4
    info = assert_same_features(str(path), net50, stages)  # auto-detected
    assert info.format == name and info.arch == "resnet50" and info.tag == "file"
    conv = info.conversion
    trunk = [k for k in net50.state_dict() if not k.startswith("fc.") and (stages == 4 or "layer4" not in k)]
    assert conv["mapped"] == len(trunk)
    assert conv["ignored"] == ignored
    assert sum(conv["ignored"].values()) + conv["mapped"] == len(state)  # every key accounted for
    # the same through FORMAT:PATH
    assert parse_spec(f"{name}:{path}").format == name


def test_lightning_metadata_is_never_instantiated(net50, tmp_path, lightning_ckpt):
    path = tmp_path / "gloria.ckpt"
    lightning_ckpt(make_gloria(net50), path)
    with pytest.raises(Exception, match="Unsupported global|weights_only"):
        torch.load(path, weights_only=True)  # bare load on purpose: what torch alone does with such a file
    info = parse_spec(str(path))
    assert info.conversion["container"] == "checkpoint['state_dict']"
    assert info.conversion["not_loaded_objects"] == ["omegaconf.dictconfig.DictConfig"]


def test_medklip_levels_and_layer4_variant(net50, tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"model": make_medklip(net50)}, path)
    info = parse_spec(str(path))
    # MedKLIP's encoder ends at layer3: C5 is C4 max-pooled to stride 32, with C4's 1024 channels
    assert info.channels[3:] == (512, 1024, 1024)
    assert info.levels[5].endswith("(max-pool of native C4 at stride 16)")
    b = CXRBackbone(str(path), out_indices=(3, 4, 5), frozen=True)
    c3, c4, c5 = b(X)
    assert c5.shape[1:] == (1024, 2, 2) and torch.equal(c5, torch.nn.functional.max_pool2d(c4, 2))
    # the downstream ModelRes_ft keeps layer4 as res_features.7
    path4 = tmp_path / "finetuned.pth"
    torch.save({"model": make_medklip(net50, with_layer4=True)}, path4)
    assert_same_features(str(path4), net50, 4)


def test_biovil_hf_folder_and_declared_normalisation(net50, tmp_path):
    folder = tmp_path / "BiomedVLP-CXR-BERT-specialized"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "cxr-bert", "architectures": ["CXRBertModel"]})
    )
    torch.save(FakeBert().state_dict(), folder / "pytorch_model.bin")  # the text model sits next to it
    torch.save(make_biovil(net50), folder / "biovil_image_resnet50_proj_size_128.pt")
    info = assert_same_features(str(folder), net50)
    assert info.format == "biovil" and info.path.endswith("biovil_image_resnet50_proj_size_128.pt")
    assert info.normalization["name"] == "biovil" and info.normalization["mean"] == [0.0, 0.0, 0.0]
    assert "hi-ml" in info.normalization["source"]
    assert parse_spec(f"{folder}#norm=task").normalization is None
    assert parse_spec(f"{folder}#norm=imagenet").normalization["name"] == "imagenet"


def test_declared_convention_applied_in_backbone(net50, tmp_path):
    from benchmark.backbones import normalization_plan

    path = tmp_path / "gloria.pt"
    torch.save(make_gloria(net50), path)
    info = parse_spec(str(path))
    plan = normalization_plan(info, 0.4, 0.2)
    assert (
        plan["mean"] == 0.0
        and plan["std"] == 1.0
        and plan["input_norm"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    )
    assert plan["record"]["convention"] == "gloria" and plan["record"]["task_mean"] == 0.4
    b = CXRBackbone(str(path), out_indices=(5,), frozen=True, input_norm=plan["input_norm"])
    grey01 = torch.rand(2, 1, 64, 64)
    (c5,) = b(grey01)
    ref = reference_levels(net50, (grey01.expand(-1, 3, -1, -1) - 0.5) / 0.5)[5]
    assert torch.allclose(c5, ref, atol=1e-5)
    assert normalization_plan(parse_spec("resnet18.random"), 0.4, 0.2)["record"]["mean"] == 0.4


def test_unmapped_image_encoder_keys_are_an_error(net50, tmp_path):
    state = make_gloria(net50)
    state["gloria.img_encoder.attention_pool.weight"] = torch.zeros(3)
    path = tmp_path / "gloria_variant.pt"
    torch.save(state, path)
    with pytest.raises(
        UnmappedKeysError,
        match=r"1 key\(s\) of its image encoder.*gloria\.img_encoder\.attention_pool\.weight",
    ):
        parse_spec(str(path))
    # a missing trunk key is reported by the strict load
    state = make_gloria(net50)
    del state["gloria.img_encoder.model.layer3.2.bn2.running_var"]
    torch.save(state, path)
    with pytest.raises(BackboneKeyError, match=r"missing keys \(1\): layer3\.2\.bn2\.running_var"):
        build_encoder(str(path))


def test_wrong_or_unknown_format(net50, tmp_path):
    path = tmp_path / "mgca.pt"
    torch.save(make_mgca(net50), path)
    with pytest.raises(FormatError, match=r"not a GLoRIA checkpoint.*looks like a 'mgca' checkpoint"):
        parse_spec(f"gloria:{path}")
    torch.save({"visual.trunk.blocks.0.weight": torch.zeros(2)}, path)
    with pytest.raises(FormatError, match="no known checkpoint layout recognised"):
        parse_spec(str(path))


def test_timm_resnet_layout_is_torchvision(tmp_path):
    import timm  # a required dependency: a broken install fails here, it is not skipped
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / "timm_resnet18.safetensors"
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(path))
    enc, info = build_encoder(str(path))
    assert info.format == "torchvision" and info.arch == "resnet18"
    with torch.no_grad():
        assert torch.allclose(enc.eval()(X)[5], model.forward_features(X), atol=1e-5)


def test_config_heads_follow_declared_channels_and_convention(net50, tmp_path, data_root):
    """Heads read the backbone's declared channels; a declared convention moves normalisation into it."""
    from benchmark.openmmlab import build_config
    from benchmark.runs import RunOptions, plan_run, resolve
    from tasks.registry import get_task

    path = tmp_path / "checkpoint_final.pth"
    torch.save({"model": make_medklip(net50)}, path)  # C5 = pooled C4: 1024 channels, not 2048
    options = RunOptions(max_epochs=1, batch_size=2, progress=False)
    for task_id in ("rsna_yolov3_frozen_10", "rsna_linear_10"):
        run = plan_run(get_task(task_id), parse_spec(str(path)), data_root, tmp_path, 0, None, options)
        cfg = build_config(run.task, resolve(run, tmp_path, options, "cfg-test")).model
        assert cfg.data_preprocessor.mean == [0.0] and cfg.data_preprocessor.std == [255.0]
        assert cfg.backbone.input_norm == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
        if task_id.startswith("rsna_yolov3"):
            assert cfg.neck.in_channels == [1024, 1024, 512]
        else:
            assert cfg.decode_head.in_channels == 1024
    task_run = plan_run(
        get_task("rsna_linear_10"), parse_spec(f"{path}#norm=task"), data_root, tmp_path, 0, None, options
    )
    assert task_run.key != run.key  # the input convention is part of the run key
    cfg = build_config(task_run.task, resolve(task_run, tmp_path, options, "cfg-test")).model
    assert cfg.backbone.input_norm is None and cfg.data_preprocessor.std[0] != 255.0
