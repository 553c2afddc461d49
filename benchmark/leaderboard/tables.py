"""How does the leaderboard read as text? Number formats, the rows of every CSV file (per task, the wide
table, the comparisons, every run), CSV and Markdown, and the labels (task number, metric) that the HTML
page and the plots share.
"""

from __future__ import annotations

import csv
import io
import math

from benchmark.leaderboard import stats
from benchmark.leaderboard.build import DECIMALS, Cell, Leaderboard, beats, nan_last, order_metrics
from tasks.registry import TASKS

DISPLAY_DECIMALS = 1  # Markdown / HTML, like the published tables


def fmt(x, nd: int = DECIMALS) -> str:
    """Fixed-point text of a number; empty for None / nan; never ``-0.000``."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    s = f"{float(x):.{nd}f}"
    return s[1:] if s.startswith("-") and float(s) == 0.0 else s


def fmt_p(p: float) -> str:
    """A p-value with 4 significant digits (``0.01234``, ``3.2e-07``); empty when undefined."""
    if p is None or not math.isfinite(p):
        return ""
    return f"{p:.4g}"


def fmt_lr(lr: float | None) -> str:
    return "" if lr is None else f"{lr:g}"


def _rank_text(r: float) -> str:
    return "" if not math.isfinite(r) else (f"{r:.1f}" if r != int(r) else f"{int(r)}")


def task_columns(lb: Leaderboard, task: str) -> list[str]:
    """Columns of ``tasks/<task>.csv``, in order (the secondary metrics depend on the records)."""
    cols = [
        "rank", "backbone", "source", "task", "metric", "status", "n", "n_expected", "n_failed",
        "seeds", "values", "mean", "std", "std_sample", "ci95_low", "ci95_high", "val_mean",
        "lr", "lr_source", "lr_search", "split_hash",
    ]  # fmt: skip
    for k in order_metrics(k for r in lb.rows for k in r.cells[task].secondary):
        cols += [f"{k}_mean", f"{k}_std"]
    if lb.baseline is not None:
        cols += ["diff", "p_value", "p_holm", "significant"]
    cols += ["spec", "sha256", "reason", "notes"]
    return cols


def metric_name(lb: Leaderboard, task: str) -> str:
    """The task's primary metric (registry name; for custom tasks the records' ``primary_metric``)."""
    if task in TASKS:
        return TASKS[task].metric
    for r in lb.runs:
        if r["task"] == task and r["metric"]:
            return r["metric"]
    return ""


def task_table(lb: Leaderboard, task: str) -> list[dict[str, str]]:
    """Rows of ``tasks/<task>.csv`` as text (sorted by rank, then name)."""
    out = []
    metric = metric_name(lb, task)
    for row in lb.rows:
        c = row.cells[task]
        lo, hi = stats.t_interval(c.values) if c.source == "run" else (math.nan, math.nan)
        comp = lb.comparisons.get((row.name, task))
        d = {
            "rank": _rank_text(lb.ranks[(row.name, task)]),
            "backbone": row.name,
            "source": row.source,
            "task": task,
            "metric": metric,
            "status": c.status,
            "n": str(c.n) if c.has_value else "0",
            "n_expected": str(lb.seeds_expected) if row.source == "run" else str(c.published_n or ""),
            "n_failed": str(c.n_failed) if row.source == "run" else "",
            "seeds": ";".join(str(s) for s in c.seeds),
            "values": ";".join(fmt(v) for v in c.values),
            "mean": fmt(c.mean),
            "std": fmt(c.std),
            "std_sample": fmt(c.std_sample) if c.source == "run" else "",
            "ci95_low": fmt(lo),
            "ci95_high": fmt(hi),
            "val_mean": fmt(stats.mean([v for v in c.val_values if math.isfinite(v)]))
            if any(math.isfinite(v) for v in c.val_values)
            else "",
            "lr": fmt_lr(c.lr),
            "lr_source": c.lr_source,
            "lr_search": ";".join(f"{lr:g}:{fmt(v)}" for lr, v in c.lr_search),
            "split_hash": c.split_hash,
            "spec": str(row.backbone.get("spec") or ""),
            "sha256": str(row.backbone.get("sha256") or ""),
            "reason": " | ".join(c.reasons),
            "notes": " | ".join(c.notes),
        }
        for k, vals in c.secondary.items():
            finite = [v for v in vals if math.isfinite(v)]
            d[f"{k}_mean"] = fmt(stats.mean(finite)) if finite else ""
            d[f"{k}_std"] = fmt(stats.std_population(finite)) if finite else ""
        if lb.baseline is not None:
            d["diff"] = fmt(comp.diff) if comp else ""
            d["p_value"] = fmt_p(comp.p) if comp else ""
            d["p_holm"] = fmt_p(comp.p_holm) if comp else ""
            d["significant"] = (
                ("yes" if comp.significant else "no") if comp and math.isfinite(comp.p_holm) else ""
            )
        out.append(d)
    out.sort(key=lambda d: (nan_last(float(d["rank"]) if d["rank"] else math.nan), d["backbone"]))
    return out


def wide_columns(lb: Leaderboard) -> list[str]:
    cols = ["backbone", "source", *lb.tasks, *(f"{t}_std" for t in lb.tasks)]
    cols += ["n_tasks", "n_missing", "n_failed", "incomplete", "mean", "mean_rank"]
    if lb.baseline is not None:
        cols += ["beats_baseline", "beats_baseline_significant", "worse_baseline_significant"]
    return cols


def wide_table(lb: Leaderboard) -> list[dict[str, str]]:
    """Rows of ``leaderboard.csv`` (the order of ``lb.rows``)."""
    out = []
    for row in lb.rows:
        d = {"backbone": row.name, "source": row.source}
        for t in lb.tasks:
            c = row.cells[t]
            d[t] = fmt(c.mean) if c.has_value else ""
            d[f"{t}_std"] = fmt(c.std) if c.has_value else ""
        d["n_tasks"] = str(lb.n_tasks(row))
        d["n_missing"] = str(sum(row.cells[t].status == "missing" for t in lb.tasks))
        d["n_failed"] = str(sum(row.cells[t].status == "failed" for t in lb.tasks))
        d["incomplete"] = ";".join(t for t in lb.tasks if row.cells[t].status == "incomplete")
        d["mean"] = fmt(lb.mean_over_tasks(row))
        d["mean_rank"] = fmt(lb.mean_rank(row), 2)
        if lb.baseline is not None:
            if row.name == lb.baseline:
                d |= {
                    "beats_baseline": "",
                    "beats_baseline_significant": "",
                    "worse_baseline_significant": "",
                }
            else:
                k, j, w, _ = beats(lb, row)
                d |= {
                    "beats_baseline": str(k),
                    "beats_baseline_significant": str(j),
                    "worse_baseline_significant": str(w),
                }
        out.append(d)
    return out


COMPARISON_COLUMNS = [
    "backbone", "baseline", "task", "mean", "baseline_mean", "diff", "t", "df", "p_value", "p_holm",
    "significant", "test",
]  # fmt: skip


def comparison_table(lb: Leaderboard) -> list[dict[str, str]]:
    out = []
    order = {t: i for i, t in enumerate(lb.tasks)}
    for (name, task), c in lb.comparisons.items():
        out.append(
            {
                "backbone": name,
                "baseline": lb.baseline or "",
                "task": task,
                "mean": fmt(c.mean),
                "baseline_mean": fmt(c.baseline_mean),
                "diff": fmt(c.diff),
                "t": fmt(c.t, 4),
                "df": fmt(c.df, 2),
                "p_value": fmt_p(c.p),
                "p_holm": fmt_p(c.p_holm),
                "significant": ("yes" if c.significant else "no") if math.isfinite(c.p_holm) else "",
                "test": c.test,
            }
        )
    out.sort(key=lambda d: (d["backbone"], order[d["task"]]))
    return out


RUNS_COLUMNS = [
    "backbone", "task", "phase", "seed", "lr", "lr_source", "status", "metric", "test", "val", "used",
    "split_hash", "key", "wall_time_s", "reason",
]  # fmt: skip


def runs_table(lb: Leaderboard) -> list[dict[str, str]]:
    used = {
        (row.name, k) for row in lb.rows if row.source == "run" for t in lb.tasks for k in row.cells[t].keys
    }
    out = []
    for r in lb.runs:
        is_used = (r["backbone"], r["key"]) in used
        out.append(
            {
                "backbone": r["backbone"],
                "task": r["task"],
                "phase": r["phase"],
                "seed": str(r["seed"]),
                "lr": fmt_lr(r["lr"]),
                "lr_source": r["lr_source"],
                "status": r["status"],
                "metric": r["metric"],
                "test": fmt(r["test"]),
                "val": fmt(r["val"]),
                "used": "yes" if is_used else "no",
                "split_hash": r["split_hash"],
                "key": r["key"],
                "wall_time_s": fmt(r["wall_time_s"], 1),
                "reason": r["reason"],
            }
        )
    return out


def to_csv(rows: list[dict[str, str]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    return buf.getvalue()


def cell_text(c: Cell, nd: int = DISPLAY_DECIMALS) -> str:
    if c.has_value:
        text = f"{fmt(c.mean, nd)} ± {fmt(c.std, nd)}"
        return text + (" †" if c.status == "incomplete" else "")
    return "failed" if c.status == "failed" else "–"


def to_markdown(lb: Leaderboard) -> str:
    """The leaderboard as Markdown: the wide table, the comparisons and a legend."""
    lines = [
        "# cxrbench leaderboard",
        "",
        f"Test metric in % per task: mean ± population std (ddof=0) over seeds ({lb.seeds_expected} expected). "
        "Task numbers as in `cxrbench tasks`.",
        "",
    ]
    heads = [task_label(t) for t in lb.tasks]
    lines.append("| backbone | " + " | ".join(heads) + " | mean | mean rank |")
    lines.append("|---|" + "---:|" * (len(lb.tasks) + 2))
    for row in lb.rows:
        name = f"{row.name} *(published)*" if row.source == "published" else row.name
        cells = [cell_text(row.cells[t]) for t in lb.tasks]
        lines.append(
            f"| {_md_escape(name)} | "
            + " | ".join(cells)
            + f" | {fmt(lb.mean_over_tasks(row), DISPLAY_DECIMALS) or '–'} | {fmt(lb.mean_rank(row), 2) or '–'} |"
        )
    lines += ["", "Tasks:", ""]
    lines += [f"- {task_label(t)}: `{t}` ({metric_name(lb, t)})" for t in lb.tasks]
    lines += [
        "",
        "† fewer successful seeds than expected; – no result (missing); failed: every final run failed. "
        "Mean and mean rank only for rows with a result on every task (ranks: 1 = best, ties averaged). "
        "*(published)*: numbers from the LoVT paper (arXiv 2112.02889), see `results/reference/`.",
    ]
    if lb.baseline is not None:
        lines += ["", f"## Differences to {_md_escape(lb.baseline)}", ""]
        lines += [f"- {_md_escape(s)}" for s in lb.comparison_lines]
        lines += ["", "| backbone | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(lb.tasks)]
        for row in lb.rows:
            if row.name == lb.baseline:
                continue
            cells = []
            for t in lb.tasks:
                c = lb.comparisons.get((row.name, t))
                cells.append(
                    "–"
                    if c is None
                    else f"{'+' if c.diff > 0 else ''}{fmt(c.diff, DISPLAY_DECIMALS)}{'*' if c.significant else ''}"
                )
            lines.append(f"| {_md_escape(row.name)} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Percentage points; * significant at {lb.alpha:g} after Holm's correction over the tasks "
            "(two-sided Welch t-test over seeds).",
        ]
    return "\n".join(lines) + "\n"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def task_label(task: str) -> str:
    return str(TASKS[task].number) if task in TASKS else task

