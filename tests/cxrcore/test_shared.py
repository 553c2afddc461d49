"""The neutral package cxrcore: what benchmark, pretrain and tasks share (atomic writes, the file hash, key
prefixes, the mmengine hooks), that it is the only copy, and that the import rules between the packages hold."""

from __future__ import annotations

import ast
import copy
import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cxrcore.hashing import sha256_file
from cxrcore.io import write_bytes_atomic, write_json_atomic
from cxrcore.keys import PRETRAIN_PREFIXES, STRIP_PREFIXES, normalize_keys
from cxrcore.mmengine_hooks import ProgressHook

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("benchmark", "cxrcore", "pretrain", "tasks")


def _modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "package, forbidden",
    [("cxrcore", {"benchmark", "pretrain", "tasks", "mmdet", "mmseg"}), ("pretrain", {"benchmark", "tasks"})],
)
def test_import_rules(package, forbidden):
    bad = [f"{p.relative_to(ROOT)}: {sorted(_imported(t) & forbidden)}" for p, t in _modules(package)]
    assert not [b for b in bad if not b.endswith("[]")]


def _shape(node: ast.AST) -> str:
    """A definition without its name and docstring: two copies of one helper have the same shape."""
    node = copy.deepcopy(node)
    node.name = ""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        node.body = body[1:]
    return ast.dump(node, include_attributes=False)


def test_no_second_copy_of_a_shared_helper():
    defs = (ast.FunctionDef, ast.ClassDef)
    shared = {
        _shape(node): f"{path.relative_to(ROOT)}:{node.name}"
        for path, tree in _modules("cxrcore")
        if path.name != "weights.py"
        for node in ast.walk(tree)
        if isinstance(node, defs)
    }
    copies = [
        f"{path.relative_to(ROOT)}:{node.name} copies {shared[_shape(node)]}"
        for package in PACKAGES
        if package != "cxrcore"
        for path, tree in _modules(package)
        for node in ast.walk(tree)
        if isinstance(node, defs) and _shape(node) in shared
    ]
    assert not copies
    prefix_lists = [  # the wrapper prefixes are listed once (cxrcore.keys)
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for package in PACKAGES
        if package != "cxrcore"
        for path, tree in _modules(package)
        for node in ast.walk(tree)
        if isinstance(node, ast.Tuple)
        and {"module.", "backbone."} <= {e.value for e in node.elts if isinstance(e, ast.Constant)}
    ]
    assert not prefix_lists


def test_write_json_atomic_bytes(tmp_path):
    path = tmp_path / "sub" / "record.json"
    obj = {
        "nan": float("nan"),
        "inf": -math.inf,
        1: np.float32(0.5),
        "t": torch.tensor(3),
        "p": Path("a/b"),
        "tuple": (1, np.int64(2)),
    }
    write_json_atomic(path, obj)
    expected = '{\n  "nan": null,\n  "inf": null,\n  "1": 0.5,\n  "t": 3,\n  "p": "a/b",\n  "tuple": [\n    1,\n    2\n  ]\n}\n'
    assert path.read_bytes() == expected.encode()
    write_json_atomic(path, [1], indent=None)
    assert path.read_bytes() == b"[1]\n"
    with pytest.raises(TypeError):  # not JSON: the old file stays, no temporary file is left behind
        write_json_atomic(path, {"x": object()})
    assert path.read_bytes() == b"[1]\n" and sorted(p.name for p in path.parent.iterdir()) == ["record.json"]


def test_sha256_file(tmp_path):
    data = bytes(range(256)) * 1000
    write_bytes_atomic(tmp_path / "f.bin", data)
    assert sha256_file(tmp_path / "f.bin", chunk=999) == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


def test_normalize_keys_prefixes():
    t = torch.zeros(1)
    nested = {"module.backbone.conv1.weight": t, "module.backbone.layer1.0.conv1.weight": t}
    assert set(normalize_keys(nested)) == {"conv1.weight", "layer1.0.conv1.weight"}
    mixed = {"visual.conv1.weight": t, "text.embed.weight": t}
    assert normalize_keys(mixed) == mixed  # only prefixes that every key shares
    wrapped = {"resnet.conv1.weight": t, "resnet.fc.weight": t}
    # the benchmark keeps "resnet." (it refuses such a file, as before the merge); pretrain strips it
    assert "resnet." not in STRIP_PREFIXES and normalize_keys(wrapped) == wrapped
    assert set(normalize_keys(wrapped, PRETRAIN_PREFIXES)) == {"conv1.weight", "fc.weight"}
    assert set(PRETRAIN_PREFIXES) == {*STRIP_PREFIXES, "resnet."}


def test_pretrain_strips_both_lists_and_the_classifier():
    from pretrain.model import strip_prefixes

    t = torch.zeros(1)
    for prefix in ("resnet.", "visual.", "module.resnet."):
        state = {f"{prefix}conv1.weight": t, f"{prefix}fc.weight": t}
        assert list(strip_prefixes(state)) == ["conv1.weight"]


class _Bar:
    def __init__(self):
        self.n, self.postfix = 0, None

    def update(self, n):
        self.n += n

    def set_postfix(self, post, refresh):
        self.postfix = post


@pytest.mark.parametrize(
    "kwargs, shown",
    [
        ({"monitor": "bbox/mAP"}, {"mAP": "12.3457"}),  # the benchmark's bar
        ({"monitor": "val/loss", "label": "val", "metric_format": ".4g"}, {"val": "12.35"}),  # pretraining's
    ],
)
def test_progress_hook_postfix(kwargs, shown):
    hook = ProgressHook("run", **kwargs)
    hook.bar = _Bar()
    runner = SimpleNamespace(epoch=1)
    hook.after_train_iter(runner, 0, outputs={"loss": torch.tensor(0.123456)})
    assert hook.bar.postfix == {"epoch": 2, "loss": "0.1235"}
    hook.after_val_epoch(runner, {kwargs["monitor"]: 12.345678, "other": 1.0})
    hook.after_train_iter(runner, 1, outputs={"loss": 2.0})
    assert hook.bar.n == 2 and hook.bar.postfix == {"epoch": 2, "loss": "2", **shown}
