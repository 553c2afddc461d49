"""Loss ablations end to end: pretrain each preset, export, evaluate every export on the chosen tasks.

The pretraining itself is passed in as a function (the CLI, the one place that calls into ``pretrain``,
provides it). Everything resumes: a finished pretraining run is reused, an interrupted one resumes from its last
checkpoint, and ``evaluate`` skips runs already recorded. Layout of OUT::

    OUT/pretrain/<preset>/         one pretraining run per preset (backbone.safetensors + .json, ...)
    OUT/eval/runs/<backbone>/...   the benchmark records of each export
    OUT/ablation.csv               preset x task: mean / std of the test metric over seeds
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

from benchmark.run import RunOptions, check_dataset_prepared, evaluate
from tasks.io import write_text_atomic
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
    echo=print,
) -> tuple[dict[str, list[dict]], list[dict]]:
    """Pretrain every preset (through ``pretrain_one``), then evaluate each export on ``tasks``.

    Args:
        presets: preset names.
        pretrain_one: preset -> path of its exported backbone (the CLI passes a function that runs
            ``pretrain``; this module does not import the pretraining package).
        tasks: the benchmark tasks (their prepared datasets are checked before pretraining starts).

    Returns:
        ``(records per preset, comparison rows)``; a preset whose pretraining failed gets one failed
        record per task (the reasons are also written to OUT/ablation-failures.txt).
    """
    for task in tasks:  # fail now, not after hours of pretraining
        check_dataset_prepared(bench_data, task)
    out_dir = Path(out_dir)
    records: dict[str, list[dict]] = {}
    failures: list[str] = []
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
    if failures:
        write_text_atomic(out_dir / "ablation-failures.txt", "\n\n".join(failures))
    return records, rows
