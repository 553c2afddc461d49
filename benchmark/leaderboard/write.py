"""Which files does ``cxrbench leaderboard`` write, and where? :func:`write_leaderboard`: records (and the
published rows) -> CSV, Markdown, HTML, summary and plots in one output folder, written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmark.leaderboard.build import ALPHA, Leaderboard, build_leaderboard
from benchmark.leaderboard.html import to_html
from benchmark.leaderboard.load import LeaderboardError, load_records, load_reference
from benchmark.leaderboard.plots import default_plot_rows, plot_diff_heatmap, plot_task_bars
from benchmark.leaderboard.tables import (
    COMPARISON_COLUMNS,
    RUNS_COLUMNS,
    comparison_table,
    runs_table,
    task_columns,
    task_table,
    to_csv,
    to_markdown,
    wide_columns,
    wide_table,
)
from tasks.io import write_bytes_atomic, write_text_atomic


@dataclass
class LeaderboardResult:
    """What :func:`write_leaderboard` wrote."""

    leaderboard: Leaderboard
    out_dir: Path
    files: list[Path]
    summary: list[str]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def write_leaderboard(
    runs_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    reference: bool | str | os.PathLike = False,
    baseline: str | None = None,
    seeds: int = 5,
    tasks: Sequence[str] | None = None,
    plot_backbones: Sequence[str] | None = None,
    plots: bool = True,
    alpha: float = ALPHA,
) -> LeaderboardResult:
    """Records -> ``OUT/leaderboard.{csv,md,html}``, ``OUT/tasks/<task>.csv``, ``OUT/runs.csv``,
    ``OUT/comparison.csv`` (with a baseline), ``OUT/summary.txt`` and ``OUT/plots/*.png``.

    Args:
        runs_dirs: one or several ``runs/`` folders (or output folders of ``cxrbench evaluate``).
        out_dir: where to write (created; files of an earlier call that this one does not produce are
            removed from ``tasks/`` and ``plots/``).
        reference: add the published rows: True for ``results/reference/``, or a folder / CSV file.
        baseline: row to compare every other row with (Welch t-test over seeds, Holm over tasks).
        seeds: expected successful final runs per task (fewer is flagged).
        tasks: task ids for the columns (default: those with records).
        plot_backbones: rows in the bar plot (default: the backbones from runs and the baseline).
        plots: write PNG plots (and embed them in the HTML page).
        alpha: family-wise significance level.

    Returns:
        The leaderboard, the files written and the summary lines.
    """
    if isinstance(runs_dirs, (str, os.PathLike)):
        runs_dirs = [runs_dirs]
    if seeds < 1:
        raise LeaderboardError(f"seeds (the expected runs per task) must be >= 1, got {seeds}")
    records, problems = load_records(runs_dirs)
    ref_rows = None
    if reference:
        ref_rows = load_reference(None if reference is True else reference)
    if not records and not ref_rows:
        raise LeaderboardError(
            f"no run records under {', '.join(str(d) for d in runs_dirs)} "
            "(expected runs/<backbone>/<task>/<key>.json, as `cxrbench evaluate` writes)"
        )
    lb = build_leaderboard(
        records, reference=ref_rows, baseline=baseline, seeds=seeds, tasks=tasks, alpha=alpha
    )
    lb.warnings = problems
    out = Path(out_dir)
    written: list[Path] = []

    def put(rel: str, data: str | bytes) -> None:
        path = out / rel
        if isinstance(data, bytes):
            write_bytes_atomic(path, data)
        else:
            write_text_atomic(path, data)
        os.chmod(path, 0o644)  # published files: readable by others (atomic writes create 0600 temp files)
        written.append(path)

    for task in lb.tasks:
        put(f"tasks/{task}.csv", to_csv(task_table(lb, task), task_columns(lb, task)))
    put("leaderboard.csv", to_csv(wide_table(lb), wide_columns(lb)))
    put("runs.csv", to_csv(runs_table(lb), RUNS_COLUMNS))
    if lb.baseline is not None:
        put("comparison.csv", to_csv(comparison_table(lb), COMPARISON_COLUMNS))
    put("summary.txt", "\n".join(lb.summary + [f"warning: {w}" for w in problems]) + "\n")
    put("leaderboard.md", to_markdown(lb))

    images: dict[str, bytes] = {}
    if plots:
        names = list(plot_backbones) if plot_backbones else default_plot_rows(lb)
        unknown = [n for n in names if n not in {r.name for r in lb.rows}]
        if unknown:
            raise LeaderboardError(f"plot backbone(s) {', '.join(unknown)} are not rows of this leaderboard")
        if names:
            images["Per-task results"] = plot_task_bars(lb, names)
            put("plots/tasks.png", images["Per-task results"])
        if lb.baseline is not None and len(lb.rows) > 1:
            images[f"Differences to {lb.baseline}"] = plot_diff_heatmap(lb)
            put(f"plots/diff_to_{_safe(lb.baseline)}.png", images[f"Differences to {lb.baseline}"])
    put("leaderboard.html", to_html(lb, images))

    # Outputs of an earlier call for other tasks / baselines would read as current: remove them.
    keep = {p.resolve() for p in written}
    for pattern in ("tasks/*.csv", "plots/*.png"):
        for stale in out.glob(pattern):
            if stale.resolve() not in keep:
                stale.unlink()
    if lb.baseline is None and (out / "comparison.csv").exists():
        (out / "comparison.csv").unlink()
    return LeaderboardResult(leaderboard=lb, out_dir=out, files=written, summary=lb.summary)
