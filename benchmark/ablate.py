"""Loss ablations end to end: pretrain each preset, export, evaluate every export on the chosen tasks.

The pretraining itself is passed in as a function (the CLI, the one place that calls into ``pretrain``,
provides it). Everything resumes: a finished pretraining run is reused, an interrupted one resumes from its last
checkpoint, and ``evaluate`` skips runs already recorded. Layout of OUT::

    OUT/pretrain/<preset>/         one pretraining run per preset (backbone.safetensors + .json, ...)
    OUT/eval/runs/<backbone>/...   the benchmark records of each export
    OUT/ablation.csv               preset x task: mean / std of the test metric over seeds
    OUT/pretrain/<preset>/analysis.json   alignment / uniformity of each run (``cxrbench analyze``)
    OUT/ablation-joined.csv, .md, .png   per preset: the analysis numbers beside the test metric per task
    OUT/synthetic-data/, text-model/   (with --synthetic) the generated pairs and the small BERT

The comparison table (:func:`comparison_rows`, :func:`format_comparison`) is deliberately small so the
leaderboard module can replace it.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmark.runs import RunOptions, check_dataset_prepared, evaluate
from tasks.io import write_bytes_atomic, write_text_atomic
from tasks.registry import TaskSpec


def comparison_rows(records_by_preset: dict[str, list[dict]]) -> list[dict]:
    """One row per (preset, task): mean and std of the test score over the successful runs."""
    rows = []
    for preset, records in records_by_preset.items():
        by_task: dict[str, list[dict]] = {}
        for r in records:
            by_task.setdefault(r["task"], []).append(r)
        for task, recs in by_task.items():
            scores = [
                r["test_score"] for r in recs if r.get("status") == "ok" and r.get("test_score") is not None
            ]
            rows.append(
                {
                    "preset": preset,
                    "task": task,
                    "metric": recs[0].get("primary_metric"),
                    "n_ok": len(scores),
                    "n_failed": len(recs) - len(scores),
                    "mean": statistics.fmean(scores) if scores else math.nan,
                    "std": statistics.stdev(scores) if len(scores) > 1 else math.nan,
                }
            )
    return rows


def format_comparison(rows: list[dict]) -> str:
    """Presets as rows, tasks as columns, ``mean +- std`` (std over seeds; '-' when not available)."""
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cell = {(r["preset"], r["task"]): r for r in rows}

    def fmt(r: dict | None) -> str:
        if r is None or r["n_ok"] == 0:
            return "failed" if r else "-"
        return f"{r['mean']:.4f}" + (f" +- {r['std']:.4f}" if r["std"] == r["std"] else "")

    width = max([len(t) for t in tasks] + [18])
    head = f"{'preset':<20}" + "".join(f" {t:>{width}}" for t in tasks)
    lines = [head] + [
        f"{p:<20}" + "".join(f" {fmt(cell.get((p, t))):>{width}}" for t in tasks) for p in presets
    ]
    return "\n".join(lines)


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["preset", "task", "metric", "n_ok", "n_failed", "mean", "std"])
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {
                k: (round(v, 6) if isinstance(v, float) and v == v else ("" if v != v else v))
                for k, v in r.items()
            }
        )
    return buf.getvalue()


# the analysis numbers of the Markdown table and the plot (the CSV has all of them), with short headers
JOINED_ANALYSIS = {
    "global.alignment": "global align",
    "features.image.per_sample_uniformity": "regions unif",
    "features.report.per_sample_uniformity": "sentences unif",
    "global_head.image.per_sample_uniformity": "g-head regions unif",
    "global_head.report.per_sample_uniformity": "g-head sentences unif",
    "global_head.report.alignment_nearest": "g-head sentence align",
    "local_head.image.per_sample_uniformity": "l-head regions unif",
    "local_head.report.per_sample_uniformity": "l-head sentences unif",
    "local_head.report.alignment_nearest": "l-head sentence align",
}


def joined_rows(analysis: dict[str, dict[str, float]], rows: list[dict]) -> list[dict]:
    """One row per preset: its analysis numbers (``space.side.metric``) and ``test:<task>`` (mean over seeds)."""
    presets = list(dict.fromkeys([*analysis, *(r["preset"] for r in rows)]))
    out = []
    for preset in presets:
        row: dict = {"preset": preset, **analysis.get(preset, {})}
        for r in rows:
            if r["preset"] == preset:
                row[f"test:{r['task']}"] = r["mean"] if r["n_ok"] else math.nan
        out.append(row)
    return out


def _columns(joined: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in joined for k in r))


def joined_csv(joined: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(joined), restval="")
    writer.writeheader()
    for r in joined:
        writer.writerow({k: ("" if isinstance(v, float) and v != v else v) for k, v in r.items()})
    return buf.getvalue()


def joined_markdown(joined: list[dict]) -> str:
    """The presets as rows: the main analysis numbers (:data:`JOINED_ANALYSIS`), then the test metric per task."""
    tasks = [k for k in _columns(joined) if k.startswith("test:")]
    keys = [k for k in JOINED_ANALYSIS if any(k in r for r in joined)] + tasks
    heads = [JOINED_ANALYSIS.get(k, k) for k in keys]

    def cell(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) and v == v else "-"

    lines = ["| preset | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| `{r['preset']}` | " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in joined]
    return "\n".join(lines) + "\n"


def joined_plot(joined: list[dict]) -> bytes:
    """One panel per number of the Markdown table (analysis numbers, then test metric per task), a bar per
    preset (PNG bytes; empty panels for numbers a preset has not)."""
    from matplotlib.figure import Figure

    from benchmark.leaderboard.plots import png_bytes

    keys = [k for k in JOINED_ANALYSIS if any(k in r for r in joined)]
    keys += [k for k in _columns(joined) if k.startswith("test:")]
    ncols = min(5, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(2.5 * ncols, 2.1 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    x = range(len(joined))
    colors = [f"C{i % 10}" for i in x]
    for ax, key in zip(axes, keys):
        values = [r.get(key, math.nan) for r in joined]
        ax.bar(x, [v if v == v else 0.0 for v in values], color=colors)
        for i, v in enumerate(values):
            if v != v:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=6)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(JOINED_ANALYSIS.get(key, key), fontsize=7)
        ax.set_xticks(list(x), [r["preset"] for r in joined], rotation=45, ha="right", fontsize=6)
        ax.tick_params(labelsize=6)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle("Loss ablation: local alignment / per-sample uniformity (lower = better) and test metric", fontsize=8)
    return png_bytes(fig)


def ablate(
    presets: list[str],
    pretrain_one: Callable[[str], str | Path],
    tasks: list[TaskSpec],
    bench_data,
    out_dir,
    *,
    seeds: list[int],
    lr: float | None = None,
    lr_search: bool = True,
    eval_options: RunOptions | None = None,
    analyze_one: Callable[[str], dict[str, float]] | None = None,
    echo=print,
) -> tuple[dict[str, list[dict]], list[dict], list[dict]]:
    """Pretrain every preset (through ``pretrain_one``), then evaluate each export on ``tasks``.

    Args:
        presets: preset names.
        pretrain_one: preset -> path of its exported backbone (the CLI passes
            :func:`pretrain.runs.preset_runs`; this module does not import the pretraining package).
        tasks: the benchmark tasks (their prepared datasets are checked before pretraining starts).
        analyze_one: preset -> its flat analysis numbers (the CLI runs ``cxrbench analyze`` on the run:
            :func:`pretrain.analysis.analyze_backbone`);
            joined with the test metrics into OUT/ablation-joined.{csv,md,png}.

    Returns:
        ``(records per preset, comparison rows, joined rows)``; a preset whose pretraining failed gets one
        failed record per task (the reasons are also written to OUT/ablation-failures.txt).
    """
    for task in tasks:  # fail now, not after hours of pretraining
        check_dataset_prepared(bench_data, task)
    out_dir = Path(out_dir)
    records: dict[str, list[dict]] = {}
    failures: list[str] = []
    analysis: dict[str, dict[str, float]] = {}
    for i, preset in enumerate(presets, start=1):
        echo(f"\n=== [{i}/{len(presets)}] pretrain {preset} ===")
        try:
            backbone = pretrain_one(preset)
        except Exception as e:  # one failed preset must not lose the others
            failures.append(f"{preset}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}")
            echo(f"pretraining {preset} FAILED: {type(e).__name__}: {e}")
            records[preset] = [
                {"task": t.id, "status": "failed", "reason": f"pretraining failed: {e}"} for t in tasks
            ]
            continue
        if analyze_one is not None:
            echo(f"=== [{i}/{len(presets)}] analyze {preset} ===")
            try:
                analysis[preset] = analyze_one(preset)
            except Exception as e:  # the downstream results still count
                failures.append(f"{preset} (analysis): {type(e).__name__}: {e}")
                echo(f"analysis of {preset} FAILED: {type(e).__name__}: {e}")
        echo(f"=== [{i}/{len(presets)}] evaluate {preset}: {backbone} ===")
        records[preset] = evaluate(
            str(backbone),
            tasks,
            bench_data,
            out_dir / "eval",
            seeds=seeds,
            lr=lr,
            lr_search=lr_search,
            options=eval_options,
            echo=echo,
        )
    rows = comparison_rows(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "ablation.csv", rows_to_csv(rows))
    joined = joined_rows(analysis, rows) if analyze_one is not None else []
    if joined:
        write_text_atomic(out_dir / "ablation-joined.csv", joined_csv(joined))
        write_text_atomic(out_dir / "ablation-joined.md", joined_markdown(joined))
        write_bytes_atomic(out_dir / "ablation-joined.png", joined_plot(joined))
    if failures:
        write_text_atomic(out_dir / "ablation-failures.txt", "\n\n".join(failures))
    return records, rows, joined


def write_ablation_leaderboard(
    records: dict[str, list[dict]], presets: list[str], out_dir, *, seeds: int, plots: bool
):
    """The presets side by side in OUT/leaderboard (from OUT/eval), with significance against the first preset.

    Returns:
        The :func:`benchmark.leaderboard.write_leaderboard` result; raises its ``LeaderboardError``.
    """
    from benchmark.leaderboard import write_leaderboard

    out_dir = Path(out_dir)
    baseline = next((r["backbone"]["name"] for r in records.get(presets[0], []) if r.get("backbone")), None)
    return write_leaderboard(
        [out_dir / "eval"], out_dir / "leaderboard", seeds=seeds, baseline=baseline, plots=plots
    )
