"""Every read of weights goes through the one loader (cxrcore/weights.py): no other module of the package, and
no test, calls torch.load, safetensors' readers, torch.jit.load, pickle or torch.hub's state-dict download
itself. A test may do so only on a line that says why (``# bare load on purpose``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOADER = ROOT / "cxrcore" / "weights.py"
SOURCES = ("benchmark", "pretrain", "cxrcore", "tasks", "scripts", "tests")
MARK = "# bare load on purpose"
# calls that read a weights (or any pickle) file; matched on the call's last name and its written form
READERS = {"load_file", "safe_open", "load_state_dict_from_url", "pickle.load", "pickle.loads"}
READERS |= {"torch.load", "torch.jit.load", "serialization.load", "torch.serialization.load"}
READER_MODULES = {"safetensors", "safetensors.torch", "torch.serialization", "pickle", "torch.hub"}
READER_NAMES = {"load_file", "safe_open", "load", "loads", "load_state_dict_from_url"}


def _sources():
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path != LOADER:
                yield path


def bare_reads(path: Path) -> list[str]:
    """``file:line: call`` for every read of weights in ``path`` that bypasses the loader."""
    text = path.read_text()
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        what = None
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name in READERS or name.rsplit(".", 1)[-1] in {"load_file", "safe_open", "load_state_dict_from_url"}:
                what = name
        elif isinstance(node, ast.ImportFrom) and node.module in READER_MODULES:
            names = [a.name for a in node.names if a.name in READER_NAMES]
            what = f"from {node.module} import {', '.join(names)}" if names else None
        if what and MARK not in lines[node.lineno - 1]:
            found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}: {what}")
    return found


def test_no_weights_read_outside_the_loader():
    bare = [hit for path in _sources() for hit in bare_reads(path)]
    assert not bare, "weights read outside cxrcore/weights.py:\n" + "\n".join(bare)


def test_the_check_finds_bare_reads(tmp_path):
    """The check itself can fail: each way of reading weights around the loader is found."""
    path = tmp_path / "sneaky.py"
    path.write_text(
        "import torch, pickle\n"
        "from safetensors.torch import load_file as lf\n"
        "from torch.hub import load_state_dict_from_url\n"
        "torch.load('a.pt')\n"
        "torch.jit.load('a.pt')\n"
        "pickle.loads(b'')\n"
        "lf('a.safetensors')\n"
        "torch.load('b.pt')  " + MARK + ": shown to be unsafe\n"
        "'''torch.load(x) in a docstring is no call'''\n"
    )
    hits = sorted(h.split(": ", 1)[1] for h in bare_reads(path))
    assert hits == [  # an aliased reader is caught at its import; the marked line and the docstring are not
        "from safetensors.torch import load_file",
        "from torch.hub import load_state_dict_from_url",
        "pickle.loads",
        "torch.jit.load",
        "torch.load",
    ]
