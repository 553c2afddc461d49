"""The leaderboard page's script and style are package files: an installed wheel must carry them."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import benchmark.leaderboard
from benchmark.leaderboard import build_leaderboard, html, load_reference

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_page_assets_are_package_data():
    """Every non-Python file of benchmark/leaderboard/ matches pyproject's package-data (else a wheel lacks it)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    folder = Path(benchmark.leaderboard.__file__).parent
    assets = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc"))
    assert {"leaderboard.js", "leaderboard.css"} <= set(assets)
    missing = [a for a in assets if not any(fnmatch.fnmatch(a, pat) for pat in patterns)]
    assert missing == [], f"not in [tool.setuptools.package-data] of pyproject.toml: {missing}"


def test_page_inlines_the_package_files():
    """The page holds the script and the style verbatim (read through importlib.resources), inline."""
    folder = Path(benchmark.leaderboard.__file__).parent
    lb = build_leaderboard([], reference=load_reference(), tasks=["rsna_linear_10"])
    page = html.to_html(lb)
    js, css = ((folder / n).read_text(encoding="utf-8") for n in ("leaderboard.js", "leaderboard.css"))
    assert "cxrSortTable" in js and "aria-sort" in css
    assert f"<script>\n{js}</script>" in page and f"<style>\n{css}</style>" in page
