"""The command line's parser: one module per command group, and building it (``cxrbench --help``) imports
none of the heavy packages the commands run on."""

from __future__ import annotations

import subprocess
import sys

from benchmark.cli import build_parser


def test_building_the_parser_imports_nothing_heavy():
    code = (
        "import sys; from benchmark.cli import build_parser; build_parser(); "
        "print(','.join(m for m in ('torch', 'numpy', 'mmengine', 'mmdet', 'mmseg', 'timm', 'transformers') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_each_command_runs_from_its_group_module():
    groups = {
        "doctor": "doctor",
        "tasks": "data",
        "fake": "data",
        "datasets": "data",
        "prepare": "data",
        "evaluate": "evaluate",
        "leaderboard": "leaderboard",
        "backbones": "backbones",
        "inspect": "backbones",
        "demo": "demo",
        "pretrain": "pretrain",
        "analyze": "pretrain",
        "ablate": "pretrain",
    }
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(groups)
    for command, parser in sub.choices.items():
        func = parser.get_default("func")
        assert func.__module__ == f"benchmark.cli.{groups[command]}" and func.__name__ == f"cmd_{command}"
