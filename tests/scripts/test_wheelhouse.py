"""scripts/wheelhouse.sh: the resolution for an offline GPU node (Python 3.12, torch 2.11, timm, ... as in
scripts/node-packages.example.txt), so that the offline install path cannot rot. Resolution only (uv, from
PyPI, seconds): no wheel is fetched."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "scripts" / "node-packages.example.txt"
FIRST_PARTY = ("tasks", "benchmark", "pretrain", "cxrcore")  # pyproject.toml's packages


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_imports() -> set[str]:
    """Top-level modules that cxrbench's installed packages import (at module level or inside functions)."""
    found = set()
    for package in FIRST_PARTY:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in FIRST_PARTY and m != "__future__"}


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheelhouse")
    env = dict(os.environ, CXRBENCH_VENV=str(Path(sys.executable).parent.parent))
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "wheelhouse.sh"), "--resolve-only", "--python-version", "3.12",
         "--have", str(EXAMPLE), "--out", str(out), "--python", sys.executable],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fetch = {norm(line.split("==")[0]): line.split("==")[1] for line in (out / "requirements.txt").read_text().split()}
    left = {norm(line.split()[0]) for line in (out / "left-out.txt").read_text().splitlines() if line.strip()}
    return fetch, left, out


def test_the_node_s_torch_stack_is_never_fetched(resolved):
    fetch, left, _ = resolved
    assert fetch, "nothing to fetch"
    for name in fetch:
        assert name not in ("torch", "torchvision", "triton") and not name.startswith(("nvidia-", "cuda-")), name
    assert {"torch", "torchvision", "triton"} <= left  # resolved (timm needs them) and left to the node
    # every fetched wheel is pinned to one version, and what the node has is not fetched again
    have = {norm(line.split("==")[0]) for line in EXAMPLE.read_text().splitlines() if line and not line.startswith("#")}
    assert not (set(fetch) - {"setuptools"}) & have
    assert {"mmdet", "mmsegmentation", "mmengine", "mmcv-lite", "pydicom", "albumentations"} <= set(fetch)
    # opencv-python is satisfied by an empty wheel requiring the node's opencv-python-headless
    assert "opencv-python" not in fetch and "opencv-python" in left
    assert list(resolved[2].glob("opencv_python-*+headless-py3-none-any.whl"))


def test_every_runtime_import_is_covered(resolved):
    fetch, left, _ = resolved
    have = {norm(line.split("==")[0]) for line in EXAMPLE.read_text().splitlines() if line and not line.startswith("#")}
    provided = set(fetch) | left | have
    dists = packages_distributions()  # this venv has every dependency installed
    imports = runtime_imports()
    assert {"mmdet", "mmseg", "torch", "pydicom", "timm"} <= imports  # the scan sees cxrbench's imports
    missing = {}
    for module in sorted(imports):
        if module == "tomli":
            continue  # only on Python < 3.11 (tomllib before it), behind a guard
        names = {norm(d) for d in dists.get(module, [])}
        if not names & provided:
            missing[module] = sorted(names)
    assert not missing, f"imported by cxrbench, neither on the node nor in the wheelhouse: {missing}"


def test_bad_have_file_is_named(tmp_path):
    have = tmp_path / "node.txt"
    have.write_text("numpy==2.5.2\n")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "wheelhouse.sh"), "--resolve-only", "--have", str(have), "--out",
         str(tmp_path / "wh"), "--python", sys.executable],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and f"{have}: no torch in the node's packages" in proc.stderr
