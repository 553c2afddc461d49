"""Which plots does the leaderboard draw? Bars per task (mean and std of each backbone) and a heatmap of the
differences to the baseline, as PNG bytes that are the same for the same numbers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

from benchmark.leaderboard.build import Leaderboard
from benchmark.leaderboard.tables import metric_name, task_label


def default_plot_rows(lb: Leaderboard, limit: int = 12) -> list[str]:
    """Backbones shown in the bar plot: every backbone from runs, plus the baseline; at most ``limit``."""
    names = [r.name for r in lb.rows if r.source == "run"]
    if lb.baseline is not None and lb.baseline not in names:
        names.append(lb.baseline)
    return names[:limit]


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the leaderboard's plots, and ``benchmark.ablate``'s)."""
    buf = io.BytesIO()
    # No software / date metadata: the same numbers give the same bytes on the same matplotlib.
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def plot_task_bars(lb: Leaderboard, names: Sequence[str]) -> bytes:
    """One panel per task: a bar per backbone (mean, %) with population-std error bars (PNG bytes)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = [lb.row(n) for n in names]
    ncols = min(6, max(1, len(lb.tasks)))
    nrows = math.ceil(len(lb.tasks) / ncols)
    fig = Figure(figsize=(2.6 * ncols, 2.3 * nrows + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colors = [f"C{i % 10}" for i in range(len(rows))]
    x = np.arange(len(rows))
    for ax, task in zip(axes, lb.tasks):
        cells = [r.cells[task] for r in rows]
        means = [c.mean if c.has_value else 0.0 for c in cells]
        errs = [c.std if c.has_value and math.isfinite(c.std) else 0.0 for c in cells]
        bars = ax.bar(x, means, yerr=errs, color=colors, capsize=2, error_kw={"lw": 0.8})
        for b, c in zip(bars, cells):
            if not c.has_value:
                b.set_alpha(0.0)
                ax.text(b.get_x() + b.get_width() / 2, 0, "n/a", ha="center", va="bottom", fontsize=6)
            elif c.status == "incomplete":
                b.set_hatch("//")
        ax.set_title(f"{task_label(task)}. {task}", fontsize=7)
        ax.set_xticks([])
        ax.tick_params(labelsize=6)
        ax.set_ylabel(f"{metric_name(lb, task)} (%)", fontsize=6)
    for ax in axes[len(lb.tasks) :]:
        ax.set_visible(False)
    handles = [Patch(color=c, label=r.name) for c, r in zip(colors, rows)]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(4, max(1, len(rows))),
        fontsize=7,
        frameon=False,
    )
    fig.suptitle(
        "Test metric per task (mean ± population std over seeds; hatched: incomplete seeds)", fontsize=9
    )
    return png_bytes(fig)


def plot_diff_heatmap(lb: Leaderboard) -> bytes:
    """Rows x tasks of differences to the baseline (percentage points), * = significant after Holm."""
    import matplotlib
    from matplotlib.figure import Figure

    rows = [r for r in lb.rows if r.name != lb.baseline]
    data = np.full((len(rows), len(lb.tasks)), np.nan)
    for i, r in enumerate(rows):
        for j, t in enumerate(lb.tasks):
            c = lb.comparisons.get((r.name, t))
            if c is not None:
                data[i, j] = c.diff
    vmax = float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 1.0
    vmax = vmax or 1.0
    fig = Figure(figsize=(1.0 + 0.62 * len(lb.tasks) + 2.2, 1.2 + 0.36 * len(rows)), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
    for i, r in enumerate(rows):
        for j, t in enumerate(lb.tasks):
            c = lb.comparisons.get((r.name, t))
            if c is not None:
                dark = abs(c.diff) > 0.6 * vmax  # white text on the saturated ends of the colour map
                text = f"{c.diff:+.1f}" + ("*" if c.significant else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=6, color="white" if dark else "black")
    ax.set_xticks(range(len(lb.tasks)), [task_label(t) for t in lb.tasks], fontsize=7)
    ax.set_yticks(range(len(rows)), [r.name for r in rows], fontsize=7)
    ax.set_xlabel("task (see `cxrbench tasks`)", fontsize=7)
    fig.colorbar(im, ax=ax, label="difference (percentage points)", shrink=0.8)
    ax.set_title(f"Difference to {lb.baseline} (* significant after Holm, alpha {lb.alpha:g})", fontsize=8)
    return png_bytes(fig)

