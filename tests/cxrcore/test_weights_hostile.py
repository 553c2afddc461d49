"""Hostile and broken weight files: the one loader (cxrcore.weights) ends each in a clear error naming the
file, in bounded time and memory, and no entry point runs code from a checkpoint, even with
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in the environment."""

from __future__ import annotations

import io
import json
import logging
import pickle
import struct
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.backbones import BackboneKeyError, parse_spec
from cxrcore.weights import (
    MAX_DEPTH,
    MAX_PLACEHOLDERS,
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_weights,
    mmengine_path,
)
from tests.support.fake_checkpoints import random_resnet

DEPTH = 500_000
P2 = b"\x80\x02"


def _u(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _base_zip(tmp: Path) -> Path:
    path = tmp / "base.pt"
    if not path.exists():
        torch.save({"conv1.weight": torch.arange(6.0).view(2, 3)}, path)
    return path


def zip_with(tmp: Path, name: str, data_pkl: bytes) -> Path:
    """A torch.save zip whose data.pkl is ``data_pkl`` (the other records as torch wrote them)."""
    path = tmp / name
    with zipfile.ZipFile(_base_zip(tmp)) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info in zin.infolist():
            z.writestr(info, data_pkl if info.filename.endswith("/data.pkl") else zin.read(info.filename))
    return path


def legacy_with(tmp: Path, name: str, main_pkl: bytes, tail: bytes = b"") -> Path:
    """A legacy (non-zip) torch file: magic, protocol, sys_info, ``main_pkl``, storage keys, ``tail``."""
    b = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, b, protocol=2)
    pickle.dump(1001, b, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, b, protocol=2)
    b.write(main_pkl)
    pickle.dump([], b, protocol=2)
    path = tmp / name
    path.write_bytes(b.getvalue() + tail)
    return path


# 500,000 levels, ~500 KB: as a dict key (hashing it recursed in C: SIGSEGV), as a value, through MARKs
DEEP = {
    "tuple-key": P2 + b"}" + b")" + b"\x85" * DEPTH + b"K\x01s.",
    "tuple-value": P2 + b"}" + _u("state_dict") + b")" + b"\x85" * DEPTH + b"s.",
    "marks": P2 + b"(" * DEPTH + b")" + b"t" * DEPTH + b".",
    "lists": P2 + b"](" * DEPTH + b"]" + b"e" * DEPTH + b".",
    "dicts": P2 + (b"}(" + _u("k")) * DEPTH + b"}" + b"u" * DEPTH + b".",
}


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _bounded(fn, seconds: float = 2.0, megabytes: float = 64.0):
    """Run ``fn``; assert it took < ``seconds`` and raised the process's resident memory by less than
    ``megabytes`` at its peak (VmHWM, reset before the call). Returns what fn returned or raised
    (a CheckpointError; any other exception fails the test)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS (Linux)
    before = _rss_mib("VmRSS")
    t0 = time.perf_counter()
    try:
        out = fn()
    except CheckpointError as e:
        out = e
    elapsed = time.perf_counter() - t0
    grew = _rss_mib("VmHWM") - before
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert grew < megabytes, f"resident memory grew by {grew:.0f} MiB at its peak"
    return out


# ------------------------------------------------------------------------------------------- deep nesting


@pytest.mark.parametrize("kind", list(DEEP))
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_deep_nesting_is_a_clear_error(tmp_path, kind, container):
    make = zip_with if container == "zip" else legacy_with
    path = make(tmp_path, f"deep-{kind}.pth", DEEP[kind])
    assert path.stat().st_size > DEPTH
    err = _bounded(lambda: load_weights(path))
    assert isinstance(err, CheckpointError)
    assert str(path) in str(err) and f"deeper than {MAX_DEPTH}" in str(err)


def test_deep_key_does_not_crash_inspect_or_evaluate(tmp_path, cli):
    """The file that killed `inspect` and `evaluate` with SIGSEGV: now exit code 2 and a message."""
    path = zip_with(tmp_path, "deep.pth", DEEP["tuple-key"])
    evaluate = ["evaluate", "--backbone", str(path), "--tasks", "rsna_yolov3_frozen_10", "--data", str(tmp_path)]
    for command in (["inspect", str(path)], evaluate, [*evaluate, "--workers", "2"]):
        proc = cli.run(*command, *(["--out", str(tmp_path / "o")] if len(command) > 2 else []), timeout=600)
        assert proc.code in (1, 2), (command, proc.code, proc.err[-2000:])
        assert str(path) in proc.err + proc.out and "deeper than" in proc.err + proc.out
    with pytest.raises(CheckpointError, match="deeper than"):
        parse_spec(str(path))  # what evaluate's planning resolves


def test_moderate_nesting_still_loads(tmp_path):
    depth = MAX_DEPTH - 5
    pkl = P2 + b"}" + _u("meta") + b")" + b"\x85" * depth + b"s" + _u("w") + b"K\x01s."
    obj, _ = load_checkpoint(zip_with(tmp_path, "ok.pth", pkl))
    inner, n = obj["meta"], 0
    while inner:
        inner, n = inner[0], n + 1
    assert n == depth


# ----------------------------------------------------------------------------------------- unknown globals


def _globals_pickle(n: int) -> bytes:
    body = b"".join(_u(f"k{i}") + f"cpkg{i}.mod\nCls{i}\n".encode() + b")R" for i in range(n))
    return P2 + b"}(" + _u("state_dict") + b"}(" + _u("w") + b"K\x01u" + body + b"u."


def test_thousands_of_unknown_globals_fail_fast(tmp_path):
    path = zip_with(tmp_path, "g8000.pt", _globals_pickle(8000))
    err = _bounded(lambda: load_weights(path), seconds=2.0)
    assert isinstance(err, CheckpointError) and str(path) in str(err)
    assert f"more than {MAX_PLACEHOLDERS}" in str(err) and "8000 distinct" in str(err)


def test_allowed_number_of_unknown_globals_become_placeholders(tmp_path):
    pkl = P2 + b"}(" + _u("state_dict") + b"}(" + _u("w") + b"cpkg.mod\nCls0\n)Ru"
    body = b"".join(_u(f"m{i}") + f"cpkg{i}.mod\nCls{i}\n".encode() + b")R" for i in range(MAX_PLACEHOLDERS - 1))
    path = zip_with(tmp_path, "g64.pt", pkl + body + b"u.")
    obj, names = _bounded(lambda: load_checkpoint(path, placeholders=True))
    assert len(names) == MAX_PLACEHOLDERS and repr(obj["m3"]) == "<inert pkg3.mod.Cls3>"
    with pytest.raises(CheckpointError, match="outside torch's weights-only allow-list"):
        load_checkpoint(path)  # the strict mode (resume, analysis) refuses them


# ------------------------------------------------------------------------------------- sizes beyond the file


def _call_pickle(call: bytes) -> bytes:
    return P2 + b"}" + _u("x") + call + b"s."


def _long(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


SIZE_ATTACKS = {
    "bytearray-3GiB": b"cbuiltins\nbytearray\n" + _long(3 << 30) + b"\x85R",
    "bytearray-2^70": b"cbuiltins\nbytearray\n" + _long(1 << 70) + b"\x85R",
    "bytearray-negative": b"cbuiltins\nbytearray\n" + _long(-1) + b"\x85R",
    "torch.Tensor(n)": b"ctorch\nTensor\n" + _long(1 << 33) + b"\x85R",
    "FloatStorage-class(n)": b"ctorch.storage\nUntypedStorage\n" + _long(1 << 33) + b"\x85R",
    "set(tensor)": b"cbuiltins\nset\n" + b"ctorch._utils\n_rebuild_tensor_v2\n" + b"(t" + b"R\x85R",
}


@pytest.mark.parametrize("attack", list(SIZE_ATTACKS))
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_sizes_the_file_cannot_hold_are_refused(tmp_path, attack, container):
    make = zip_with if container == "zip" else legacy_with
    path = make(tmp_path, "size.pth", _call_pickle(SIZE_ATTACKS[attack]))
    assert path.stat().st_size < 2000
    err = _bounded(lambda: load_weights(path))
    assert isinstance(err, CheckpointError) and str(path) in str(err), err
    assert "refused to load" in str(err)


def _storage_pickle(numel: int, key: str = "0") -> bytes:
    pid = b"(" + _u("storage") + b"ctorch\nFloatStorage\n" + _u(key) + _u("cpu") + _long(numel) + b"tQ"
    args = b"(" + pid + b"K\x00" + _long(numel) + b"\x85" + b"K\x01\x85" + b"\x89" + b"ccollections\nOrderedDict\n)R" + b"t"
    return P2 + b"}" + _u("w") + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"Rs."


def test_storage_larger_than_its_record_or_file(tmp_path):
    # the base zip's record data/0 holds 6 floats (24 bytes)
    assert load_weights(zip_with(tmp_path, "ok.pt", _storage_pickle(6))).state["w"].shape == (6,)
    err = _bounded(lambda: load_weights(zip_with(tmp_path, "big.pt", _storage_pickle(1 << 31))))
    assert isinstance(err, CheckpointError) and "declared as 8589934592 bytes" in str(err)
    err = _bounded(lambda: load_weights(zip_with(tmp_path, "nokey.pt", _storage_pickle(6, key="7"))))
    assert isinstance(err, CheckpointError) and "does not hold" in str(err)
    # legacy: torch allocates each storage from the declared size before reading the data
    err = _bounded(lambda: load_weights(legacy_with(tmp_path, "big.pth", _storage_pickle(1 << 31))))
    assert isinstance(err, CheckpointError) and "only" in str(err) and "follow the pickles" in str(err)


class _ReaderWithoutRecordSize:
    """torch 2.11's zip reader (the GPU nodes' torch) has no get_record_size; 2.14's has."""

    def __init__(self, path):
        self._reader = _REAL_READER(path)

    def __getattr__(self, name):
        if name == "get_record_size":
            raise AttributeError(name)
        return getattr(self._reader, name)


_REAL_READER = torch._C.PyTorchFileReader


def test_record_sizes_without_torch_s_get_record_size(tmp_path, monkeypatch):
    # found by loading a checkpoint over torch 2.11 on Python 3.12: the sizes then come from the zip's directory
    monkeypatch.setattr(torch._C, "PyTorchFileReader", _ReaderWithoutRecordSize)
    assert not hasattr(torch._C.PyTorchFileReader(str(zip_with(tmp_path, "r.pt", _storage_pickle(6)))), "get_record_size")
    assert load_weights(zip_with(tmp_path, "ok.pt", _storage_pickle(6))).state["w"].shape == (6,)
    err = _bounded(lambda: load_weights(zip_with(tmp_path, "big.pt", _storage_pickle(1 << 31))))
    assert isinstance(err, CheckpointError) and "declared as 8589934592 bytes" in str(err)
    err = _bounded(lambda: load_weights(zip_with(tmp_path, "nokey.pt", _storage_pickle(6, key="7"))))
    assert isinstance(err, CheckpointError) and "does not hold" in str(err)
    path = tmp_path / "resnet.pth"
    torch.save(random_resnet("resnet18").state_dict(), path)  # a real torch.save file, read end to end
    assert load_weights(path).state


@pytest.mark.parametrize("name", ["empty.pth", "empty.pt", "empty.ckpt", "empty.bin"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{path}: the file is empty"):
        load_weights(path)


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_and_wrong_files(tmp_path, legacy):
    path = tmp_path / "r18.pth"
    state = random_resnet("resnet18").state_dict()
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    loaded = load_weights(path)  # a real file loads, legacy too
    assert loaded.state.keys() == state.keys() and torch.equal(loaded.state["fc.weight"], state["fc.weight"])
    data = path.read_bytes()
    for cut in (1, 3, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        err = _bounded(lambda: load_weights(path))  # noqa: B023
        assert isinstance(err, CheckpointError) and str(path) in str(err), (cut, err)
    path.write_bytes(b"just some text\n")
    with pytest.raises(CheckpointError, match="r18.pth"):
        load_weights(path)


# --------------------------------------------------------------------- no payload runs, from any entry point


class _Touch:
    """Would create ``marker`` if unpickled with a full unpickler: logging.FileHandler opens its file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (logging.FileHandler, (str(self.marker),))


class _Open(_Touch):
    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def no_weights_only(monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def _payloads(tmp_path: Path, marker: Path, state: dict | None = None) -> list[Path]:
    state = state if state is not None else random_resnet("resnet18").state_dict()
    out = []
    for cls in (_Touch, _Open):
        for legacy in (False, True):
            p = tmp_path / f"evil-{cls.__name__}-{'legacy' if legacy else 'zip'}.pth"
            torch.save({"state_dict": state, "meta": cls(marker)}, p, _use_new_zipfile_serialization=not legacy)
            out.append(p)
    return out


def test_payloads_never_run_in_inspect_and_evaluate(tmp_path, no_weights_only, cli):
    marker = tmp_path / "pwned"
    for path in _payloads(tmp_path, marker):
        inspected = cli("inspect", path, "--export", tmp_path / "out.safetensors")
        if "_Open" in path.name:
            assert inspected.code == 2 and "never runs code" in inspected.err
        else:  # the FileHandler name is bound to an inert stand-in: the weights load, nothing runs
            assert inspected.code == 0 and "logging.FileHandler" in inspected.out
            assert parse_spec(str(path)).conversion["not_loaded_objects"] == ["logging.FileHandler"]
        assert not marker.exists()
    # proof that the payload is real: a bare torch.load under the same environment runs it
    torch.load(tmp_path / "evil-_Touch-zip.pth")  # bare load on purpose: the payload runs
    assert marker.exists()


def test_payloads_never_run_through_mmengine(tmp_path, no_weights_only):
    """The scheme the benchmark's best-checkpoint test and pretrain's resume hand to mmengine."""
    from mmengine.runner.checkpoint import CheckpointLoader

    marker = tmp_path / "pwned"
    for path in _payloads(tmp_path, marker, state={"w": torch.zeros(2)}):
        expected = UnsafeCheckpointError if "_Open" in path.name else CheckpointError
        with pytest.raises(expected, match=str(path)):
            CheckpointLoader.load_checkpoint(mmengine_path(path))
        assert not marker.exists()
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": {"epoch": 3}}, plain)
    assert CheckpointLoader.load_checkpoint(mmengine_path(plain))["meta"] == {"epoch": 3}


@pytest.mark.slow
def test_payloads_never_run_in_pretrain_resume_and_analyze(tmp_path, no_weights_only):
    from tests.pretrain.test_train import Interrupted, StopAfterEpoch

    from pretrain.config import AugmentConfig, ModelConfig, TrainConfig, preset_config
    from pretrain.data.manifest import read_manifest
    from pretrain.train import PretrainError, load_run, prepare_synthetic, pretrain

    manifest, bert = prepare_synthetic(tmp_path, n=16, size=32)
    cfg = preset_config(
        "clip",
        model=ModelConfig(image_arch="resnet18", image_init="random", text_model=str(bert), proj_dim=16),
        train=TrainConfig(epochs=2, batch_size=8, accumulate=1, image_size=32, patience=0),
        augment=AugmentConfig(enabled=False),
    )
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        pretrain(cfg, read_manifest(manifest), out, progress=False, extra_hooks=[StopAfterEpoch(1)])
    ckpt = out / "work" / "epoch_1.pth"
    good = load_checkpoint(ckpt)[0]
    marker = tmp_path / "pwned"
    torch.save({**good, "meta": {**good["meta"], "x": _Touch(marker)}}, ckpt)
    with pytest.raises(CheckpointError, match=str(ckpt)):  # resume reads the checkpoint named last
        pretrain(cfg, read_manifest(manifest), out, progress=False)
    assert not marker.exists()
    # cxrbench analyze: the checkpoint a run folder's backbone.json names
    (out / "backbone.json").write_text(json.dumps({"checkpoint": str(ckpt)}))
    with pytest.raises(PretrainError, match=str(ckpt)):
        load_run(out)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ inspect = evaluate


def test_inspect_approves_exactly_what_evaluate_accepts(tmp_path, cli):
    net = random_resnet("resnet18")
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("layer4")}
    path = tmp_path / "no_layer4.pt"
    torch.save(state, path)
    out = tmp_path / "exported.safetensors"
    refused = cli("inspect", path, "--export", out)
    assert refused.code == 1
    text = refused.out
    assert "missing keys" in text and "layer4.0.conv1.weight" in text and not out.exists()
    with pytest.raises(BackboneKeyError, match=r"no_layer4.pt: .*\n  missing keys \(25\): layer4"):
        parse_spec(str(path))  # evaluate's resolution: the same check, before any run
    # a shape that does not fit: inspect used to approve it, evaluate failed
    bad = dict(net.state_dict())
    bad["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(bad, path)
    mismatch = cli("inspect", path, "--json")
    assert mismatch.code == 1
    assert "shape mismatch for key 'layer1.0.conv1.weight'" in json.loads(mismatch.out)["error"]
    with pytest.raises(BackboneKeyError, match="shape mismatch"):
        parse_spec(str(path))


def test_inspect_never_exports_a_three_stage_encoder(tmp_path, cli):
    from tests.support.fake_checkpoints import make_medklip

    path = tmp_path / "checkpoint_final.pth"
    torch.save({"model": make_medklip(random_resnet("resnet50"))}, path)
    assert parse_spec(str(path)).format == "medklip"  # evaluate takes it (C5 = max-pooled C4) ...
    out = tmp_path / "medklip.safetensors"
    refused = cli("inspect", path, "--export", out)
    assert refused.code == 1  # ... but not as a torchvision file
    assert "evaluate would reject" in refused.err and not out.exists()


# ---------------------------------------------------------------------------------- property-based checks

_SAMPLE = {
    "state_dict": OrderedDict(w=torch.arange(4.0), b=torch.ones(2, dtype=torch.int64)),
    "meta": {"epoch": 3, "name": "x", "t": (1, 2.5, None, True)},
    "s": {1, 2},
}


def _sample_bytes(legacy: bool) -> bytes:
    b = io.BytesIO()
    torch.save(_SAMPLE, b, _use_new_zipfile_serialization=not legacy)
    return b.getvalue()


def _sample_pickle() -> bytes:
    with zipfile.ZipFile(io.BytesIO(_sample_bytes(False))) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


_ZIP, _LEGACY, _PKL = _sample_bytes(False), _sample_bytes(True), _sample_pickle()
_HYP = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            break
        i = pos % len(buf)
        if kind == 0:
            buf[i] = value
        elif kind == 1:
            buf.insert(i, value)
        elif kind == 2:
            del buf[i]
        else:
            del buf[i:]
    return bytes(buf)


_EDITS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=6
)


def _load_bounded(path: Path) -> None:
    out = _bounded(lambda: load_weights(path))
    assert isinstance(out, CheckpointError) or isinstance(out.state, dict)


@_HYP
@given(st.binary(max_size=4096), st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x02\x8a\x0a"]))
def test_random_bytes(tmp_path_factory, data, prefix):
    path = tmp_path_factory.mktemp("rand") / "random.pt"
    path.write_bytes(prefix + data)
    _load_bounded(path)


@_HYP
@given(_EDITS)
def test_mutated_pickles_in_zip_and_legacy_files(tmp_path_factory, edits):
    tmp = tmp_path_factory.mktemp("mut")
    pkl = _mutate(_PKL, edits)
    _load_bounded(zip_with(tmp, "m.pt", pkl))
    _load_bounded(legacy_with(tmp, "m.pth", pkl))


@_HYP
@given(_EDITS, st.booleans())
def test_mutated_checkpoint_files(tmp_path_factory, edits, legacy):
    path = tmp_path_factory.mktemp("mutf") / "m.pth"
    path.write_bytes(_mutate(_LEGACY if legacy else _ZIP, edits))
    _load_bounded(path)
