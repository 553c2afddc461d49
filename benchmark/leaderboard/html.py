"""What does the leaderboard's HTML page look like? One static, self-contained page (inline style and
script, plots as data URIs) whose tables sort by clicking a header. The script and the style are package
files beside this module: ``leaderboard.js`` and ``leaderboard.css``.
"""

from __future__ import annotations

import base64
import functools
import html
from importlib import resources

from benchmark.leaderboard.build import Leaderboard, beats
from benchmark.leaderboard.load import PUBLISHED_RUNS
from benchmark.leaderboard.tables import DISPLAY_DECIMALS, cell_text, fmt, metric_name, task_label


# The page's script (leaderboard.js) sorts numbers by value, text by code point; empty cells always last;
# ties keep the original order. `cxrSortTable` works on any object with the DOM members it uses, so tests
# drive it under node with a small stand-in DOM as well as in a real browser.
@functools.cache
def _asset(name: str) -> str:
    """A package file of the page (``leaderboard.js``, ``leaderboard.css``), as text (pyproject's
    package-data ships them in the wheel)."""
    return resources.files("benchmark.leaderboard").joinpath(name).read_text(encoding="utf-8")


def _th(label: str, kind: str, first: str, title: str = "") -> str:
    t = f' title="{html.escape(title)}"' if title else ""
    return f'<th data-type="{kind}" data-first="{first}" aria-sort="none"{t}>{html.escape(label)}</th>'


def _td(text: str, sort: str | None = None, cls: str = "") -> str:
    s = "" if sort is None else f' data-sort="{html.escape(sort)}"'
    c = f' class="{cls}"' if cls else ""
    return f"<td{s}{c}>{html.escape(text)}</td>"


def to_html(lb: Leaderboard, images: dict[str, bytes] | None = None) -> str:
    """A static, self-contained page (inline CSS/JS, plots as data URIs): sortable by clicking a header."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>cxrbench leaderboard</title>",
        f"<style>\n{_asset('leaderboard.css')}</style></head><body>",
        "<h1>cxrbench leaderboard</h1>",
        f'<p class="note">Test metric in % per task: mean ± population std (ddof=0) over seeds '
        f"({lb.seeds_expected} expected). Click a column header to sort (again to reverse); empty cells "
        "sort last. † fewer seeds than expected; – no result. Mean and mean rank only for rows with a "
        "result on every task. Italic rows: published numbers (LoVT, arXiv 2112.02889).</p>",
        '<ul class="summary">'
        + "".join(f"<li>{html.escape(s)}</li>" for s in lb.summary if s not in lb.comparison_lines)
        + "</ul>",
        '<div class="wrap"><table class="sortable" id="leaderboard"><thead><tr>',
        _th("backbone", "text", "asc"),
        _th("source", "text", "asc"),
    ]
    parts += [_th(task_label(t), "number", "desc", f"{t} ({metric_name(lb, t)})") for t in lb.tasks]
    parts += [
        _th("n tasks", "number", "desc"),
        _th("mean", "number", "desc"),
        _th("mean rank", "number", "asc"),
    ]
    parts.append("</tr></thead><tbody>")
    for row in lb.rows:
        cls = ' class="published"' if row.source == "published" else ""
        cells = [_td(row.name), _td(row.source)]
        for t in lb.tasks:
            c = row.cells[t]
            cells.append(
                _td(
                    cell_text(c),
                    fmt(c.mean) if c.has_value else "",
                    "num"
                    + (
                        " incomplete"
                        if c.status == "incomplete"
                        else " failed"
                        if c.status == "failed"
                        else ""
                    ),
                )
            )
        cells.append(_td(str(lb.n_tasks(row)), str(lb.n_tasks(row)), "num"))
        cells.append(
            _td(fmt(lb.mean_over_tasks(row), DISPLAY_DECIMALS) or "–", fmt(lb.mean_over_tasks(row)), "num")
        )
        cells.append(_td(fmt(lb.mean_rank(row), 2) or "–", fmt(lb.mean_rank(row), 2), "num"))
        parts.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></div>")
    parts.append(
        '<p class="note">Tasks: '
        + "; ".join(
            f"{task_label(t)} = {html.escape(t)} ({html.escape(metric_name(lb, t))})" for t in lb.tasks
        )
        + "</p>"
    )
    if lb.baseline is not None:
        parts.append(f"<h2>Differences to {html.escape(lb.baseline)} (percentage points)</h2>")
        parts.append(
            f'<p class="note">Two-sided Welch t-test over seeds, Holm-corrected over the tasks; shaded: '
            f"significant at {lb.alpha:g}. Published rows are tested from their mean, std and n = "
            f"{PUBLISHED_RUNS}.</p>"
        )
        parts.append(
            '<ul class="summary">'
            + "".join(f"<li>{html.escape(s)}</li>" for s in lb.comparison_lines)
            + "</ul>"
        )
        parts.append('<div class="wrap"><table class="sortable" id="comparison"><thead><tr>')
        parts.append(_th("backbone", "text", "asc"))
        parts += [_th(task_label(t), "number", "desc", t) for t in lb.tasks]
        parts += [_th("beats", "number", "desc"), _th("significant", "number", "desc")]
        parts.append("</tr></thead><tbody>")
        for row in lb.rows:
            if row.name == lb.baseline:
                continue
            cells = [_td(row.name)]
            for t in lb.tasks:
                c = lb.comparisons.get((row.name, t))
                if c is None:
                    cells.append(_td("–", "", "num"))
                    continue
                sign = "pos" if c.diff > 0 else "neg" if c.diff < 0 else ""
                text = f"{'+' if c.diff > 0 else ''}{fmt(c.diff, DISPLAY_DECIMALS)}" + (
                    "*" if c.significant else ""
                )
                cells.append(_td(text, fmt(c.diff), f"num {sign}{' sig' if c.significant else ''}"))
            k, j, _, _ = beats(lb, row)
            cells += [_td(str(k), str(k), "num"), _td(str(j), str(j), "num")]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table></div>")
    for name, data in sorted((images or {}).items()):
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">')
    parts.append(f"<script>\n{_asset('leaderboard.js')}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

