"""Leaderboards from run records: per-task CSVs, the wide table, published reference rows, significance
tests against a baseline, Markdown, a self-contained sortable HTML page and PNG plots.

Everything is derived from the records (``RUNS/runs/<backbone>/<task>/<key>.json``, see
``benchmark/runs/__init__.py: execute``); nothing is edited by hand. The same records give byte-identical CSV,
Markdown and HTML files: rows are sorted, numbers are rounded here in code, and no timestamps are written.

Units: record metrics are fractions in [0, 1]; every value written here is in percent, like the
published tables (``results/reference/``). Differences to a baseline are in percentage points.

Which runs count: final runs only (``phase`` ``"final"``, or no ``phase`` at all); learning-rate search
runs (``phase == "lr_search"``) are listed in ``runs.csv`` and summarised in the ``lr_search`` column.
Where one backbone has final runs of one task at several settings (learning rate, split, overrides, image
size), the setting with the most successful runs is used and the others are named in ``notes``.

Python use::

    from benchmark.leaderboard import write_leaderboard
    result = write_leaderboard(["out/runs"], "out/leaderboard", reference=True, baseline="published:ImageNet")
    print("\\n".join(result.summary))
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.leaderboard import stats
from benchmark.runs.records import metrics_as_published
from tasks.io import write_bytes_atomic, write_text_atomic
from tasks.registry import SECONDARY_METRICS, TASKS

# Where the published numbers live in a checkout (results/reference/*.csv, see its README).
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"
REFERENCE_COLUMNS = ("method", "pretraining_data", "task", "metric", "mean", "std_population")
# The published tables report 5 runs per task (tasks.md); used where a test needs n for published rows.
PUBLISHED_RUNS = 5
PUBLISHED_PREFIX = "published:"

DECIMALS = 3  # percent values in CSVs: 0.001 % resolution, far below any seed-to-seed spread
DISPLAY_DECIMALS = 1  # Markdown / HTML, like the published tables
ALPHA = 0.05

# Keys of ``metrics.test`` that are not scores in [0, 1] (so not secondary metrics in percent).
_NOT_SCORES = ("loss", "n_detections")
# Display order of secondary metrics; others follow alphabetically.
_SECONDARY_ORDER = ("mAP", "froc", "dice", *SECONDARY_METRICS)


class LeaderboardError(ValueError):
    """Bad input to the leaderboard (no records, an unknown baseline, a malformed reference file)."""


# ----------------------------------------------------------------------------------------------- data


@dataclass
class Cell:
    """One backbone on one task: the final runs used (or the published numbers) and their statistics.

    Values are in percent, in seed order. ``status`` is ``ok`` (all expected seeds), ``incomplete``
    (fewer successful seeds than expected), ``failed`` (final runs, none successful), ``missing`` (no
    final run) or ``published`` (a reference row: mean and std only).
    """

    backbone: str
    task: str
    source: str
    status: str = "missing"
    seeds: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # run keys of the values
    values: list[float] = field(default_factory=list)
    val_values: list[float] = field(default_factory=list)
    secondary: dict[str, list[float]] = field(default_factory=dict)
    n_failed: int = 0
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lr: float | None = None
    lr_source: str = ""
    lr_search: list[tuple[float, float]] = field(default_factory=list)
    split_hash: str = ""
    published_mean: float = math.nan
    published_std: float = math.nan
    published_n: int = 0
    # A published std printed as 0 only says it is below the printed precision: the tests use that rounding
    # bound (0.05 for "0.0"), not 0, which would make every Welch test undefined.
    published_std_bound: float = 0.0
    # Run cells: whether every record's primary metric has the published tables' definition (code version
    # 0.3 on); cells of older records are never ranked against or tested against published rows.
    as_published: bool = True

    @property
    def has_value(self) -> bool:
        return self.status in ("ok", "incomplete", "published")

    @property
    def n(self) -> int:
        return self.published_n if self.source == "published" else len(self.values)

    @property
    def mean(self) -> float:
        if self.source == "published":
            return self.published_mean
        return stats.mean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0), as the published tables."""
        if self.source == "published":
            return self.published_std
        return stats.std_population(self.values) if self.values else math.nan

    @property
    def std_sample(self) -> float:
        """Sample standard deviation (ddof=1); for published rows derived from their ddof=0 value and n."""
        if self.source == "published":
            n = self.published_n
            sd = self.published_std if self.published_std > 0 else self.published_std_bound
            return sd * math.sqrt(n / (n - 1)) if n > 1 else math.nan
        return stats.std_sample(self.values)


@dataclass
class Row:
    """One backbone (or one published method) of the leaderboard."""

    name: str
    source: str  # "run" | "published"
    backbone: dict = field(default_factory=dict)
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Comparison:
    """A row against the baseline on one task (values in percent, differences in percentage points)."""

    backbone: str
    task: str
    mean: float
    baseline_mean: float
    diff: float
    t: float
    df: float
    p: float
    p_holm: float = math.nan
    significant: bool = False
    test: str = ""  # "runs" (both sides per-seed values) or "summary" (a side from published mean/std)


@dataclass
class Leaderboard:
    """Everything the writers need; built by :func:`build_leaderboard`."""

    tasks: list[str]
    rows: list[Row]  # sorted: mean rank, then mean, then name
    seeds_expected: int
    baseline: str | None = None
    alpha: float = ALPHA
    ranks: dict[tuple[str, str], float] = field(default_factory=dict)  # (row, task) -> rank
    comparisons: dict[tuple[str, str], Comparison] = field(default_factory=dict)  # (row, task) -> ...
    summary: list[str] = field(default_factory=list)  # status lines, then the comparison lines
    comparison_lines: list[str] = field(default_factory=list)  # "X beats NAME on k of N tasks (...)"
    warnings: list[str] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # one dict per record (runs.csv)

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def n_tasks(self, row: Row) -> int:
        return sum(row.cells[t].has_value for t in self.tasks)

    def complete(self, row: Row) -> bool:
        return self.n_tasks(row) == len(self.tasks)

    def mean_over_tasks(self, row: Row) -> float:
        """Mean of the task means; nan unless the row has a value on every task (never a partial mean)."""
        if not self.complete(row) or not self.tasks:
            return math.nan
        return stats.mean([_round(row.cells[t].mean) for t in self.tasks])

    def mean_rank(self, row: Row) -> float:
        if not self.complete(row) or not self.tasks:
            return math.nan
        return stats.mean([self.ranks[(row.name, t)] for t in self.tasks])


@dataclass
class LeaderboardResult:
    """What :func:`write_leaderboard` wrote."""

    leaderboard: Leaderboard
    out_dir: Path
    files: list[Path]
    summary: list[str]


# ------------------------------------------------------------------------------------------- loading


def _runs_root(path: Path) -> Path:
    return path / "runs" if (path / "runs").is_dir() else path


def load_records(runs_dirs: Iterable[str | os.PathLike]) -> tuple[list[dict], list[str]]:
    """All records under the given folders (each a ``runs/`` folder or an output folder holding one).

    A record found twice (the same ``key`` in two folders) is used once. Unreadable files are skipped and
    reported (the second return value), never fatal.

    Raises:
        LeaderboardError: a folder does not exist.
    """
    records: dict[str, dict] = {}
    problems: list[str] = []
    for d in runs_dirs:
        root = Path(d)
        if not root.is_dir():
            raise LeaderboardError(
                f"runs folder {root} does not exist (pass the --out of `cxrbench evaluate`)"
            )
        for path in sorted(_runs_root(root).glob("*/*/*.json")):
            try:
                rec = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                problems.append(f"{path}: not a readable JSON record ({e}); skipped")
                continue
            if not isinstance(rec, dict) or "task" not in rec:
                problems.append(f"{path}: no 'task' field, not a run record; skipped")
                continue
            rec.setdefault("backbone", {})
            rec["_path"] = str(path)
            key = _key(rec)
            # The backbone folder name is the record's backbone name (benchmark.runs.records.record_path).
            rec["_backbone"] = str(rec["backbone"].get("name") or path.parent.parent.name)
            records.setdefault(key, rec)
    return [records[k] for k in sorted(records)], problems


def load_reference(path: str | os.PathLike | None = None) -> list[dict]:
    """The published rows: every ``*.csv`` in ``path`` (a folder, default ``results/reference/``) or one file.

    Columns: ``method, pretraining_data, task, metric, mean, std_population`` (percent), optional ``n_runs``.

    Raises:
        LeaderboardError: the folder / file is missing or a file lacks a column or has a non-number.
    """
    p = Path(path) if path is not None else REFERENCE_DIR
    files = sorted(p.glob("*.csv")) if p.is_dir() else [p]
    if not files or not files[0].exists():
        raise LeaderboardError(
            f"no published reference numbers at {p}: expected CSV files with columns "
            f"{', '.join(REFERENCE_COLUMNS)} (the checkout's results/reference/)"
        )
    out = []
    for f in files:
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REFERENCE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise LeaderboardError(f"{f}: missing column(s) {', '.join(missing)}")
            for line, rec in enumerate(reader, start=2):
                try:
                    mean, std = float(rec["mean"]), float(rec["std_population"])
                    n = int(rec.get("n_runs") or PUBLISHED_RUNS)
                except ValueError as e:
                    raise LeaderboardError(f"{f}, line {line}: mean / std_population / n_runs: {e}") from None
                digits = rec["std_population"].strip().partition(".")[2]
                bound = 0.5 * 10.0 ** -len(digits)  # half a unit of the last printed digit
                out.append(
                    rec
                    | {"mean": mean, "std_population": std, "n_runs": n, "std_bound": bound, "_file": str(f)}
                )
    return out


def published_name(method: str, pretraining_data: str) -> str:
    """Row name of a published method: ``published:ConVIRT@mimic_frontal_100pct``, ``published:ImageNet``."""
    data = (pretraining_data or "").strip()
    return f"{PUBLISHED_PREFIX}{method}" + ("" if data in ("", "none") else f"@{data}")


# ------------------------------------------------------------------------------------------- building


def _key(rec: dict) -> str:
    return str(rec.get("key") or Path(rec.get("_path", "")).stem)


def _phase(rec: dict) -> str:
    return rec.get("phase") or "final"


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ok(rec: dict) -> bool:
    return rec.get("status") == "ok" and _is_number(rec.get("test_score"))


def _failure_reason(rec: dict) -> str:
    if rec.get("status") == "ok":
        return f"test score {rec.get('primary_metric', '')} is missing or not finite"
    return str(rec.get("reason") or f"status {rec.get('status')!r}")


def _setting(rec: dict) -> tuple:
    return (
        float(rec.get("lr") or 0.0),
        str(rec.get("split_hash") or ""),
        json.dumps(rec.get("overrides") or {}, sort_keys=True),
        int((rec.get("task_spec") or {}).get("size") or 224),
    )


def _describe_setting(s: tuple) -> str:
    lr, split, over, size = s
    return (
        f"lr={lr:g}, split {split or '?'}"
        + ("" if over == "{}" else f", overrides {over}")
        + ("" if size == 224 else f", {size} px")
    )


def _secondary_keys(metrics: dict, primary: str) -> list[str]:
    return [
        k
        for k, v in metrics.items()
        if k != primary and k not in _NOT_SCORES and not k.startswith("n_") and not k.endswith("loss")
        if _is_number(v) or v is None
    ]


def _order_metrics(keys: Iterable[str]) -> list[str]:
    keys = set(keys)
    known = [k for k in _SECONDARY_ORDER if k in keys]
    return known + sorted(keys - set(known))


def _pct(x) -> float:
    return float(x) * 100.0 if _is_number(x) else math.nan


def _pick_setting(groups: dict[tuple, list[dict]]) -> tuple:
    def score(item):
        setting, recs = item
        oks = [r for r in recs if _ok(r)]
        vals = [r["val_score"] for r in oks if _is_number(r.get("val_score"))]
        # Most successful runs, then most runs, then best validation (never test), then the setting.
        return (-len(oks), -len(recs), -(stats.mean(vals) if vals else -math.inf), setting)

    return sorted(groups.items(), key=score)[0][0]


def _dedupe_seeds(recs: list[dict], notes: list[str]) -> list[dict]:
    """One record per seed: a successful one before a failed one, then the latest finished, then by key."""
    by_seed: dict[int, list[dict]] = defaultdict(list)
    for r in recs:
        by_seed[int(r.get("seed") or 0)].append(r)
    kept = []
    for seed in sorted(by_seed):
        cands = by_seed[seed]
        best = max(cands, key=lambda r: (_ok(r), str(r.get("finished_at") or ""), str(r.get("key") or "")))
        if len(cands) > 1:
            notes.append(f"seed {seed} recorded {len(cands)} times; used {best.get('key')}")
        kept.append(best)
    return kept


def _run_cell(name: str, task: str, finals: list[dict], searches: list[dict], seeds_expected: int) -> Cell:
    cell = Cell(backbone=name, task=task, source="run")
    for r in searches:
        if _ok(r) and _is_number(r.get("val_score")):
            cell.lr_search.append((float(r["lr"]), _pct(r["val_score"])))
    cell.lr_search.sort()
    if not finals:
        cell.status = "missing"
        if searches:
            cell.notes.append(f"{len(searches)} learning-rate search run(s) but no final run")
        return cell
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in finals:
        groups[_setting(r)].append(r)
    chosen = _pick_setting(groups)
    for s in sorted(groups):
        if s != chosen:
            cell.notes.append(
                f"ignored {len(groups[s])} final run(s) at another setting ({_describe_setting(s)})"
            )
    recs = _dedupe_seeds(groups[chosen], cell.notes)
    cell.lr, cell.split_hash = chosen[0], chosen[1]
    cell.lr_source = ";".join(sorted({str(r.get("lr_source") or "") for r in recs}))
    oks = [r for r in recs if _ok(r)]
    failed = [r for r in recs if not _ok(r)]
    cell.n_failed = len(failed)
    old = [r for r in oks if not metrics_as_published(r)]
    if old:
        cell.as_published = False
        cell.notes.append(
            f"{len(old)} run(s) recorded by cxrbench {old[0].get('code_version') or 'before 0.3'}: the metric is "
            "not defined as in the published tables, so never ranked or tested against published rows"
        )
    cell.reasons = [f"seed {r.get('seed')}: {_failure_reason(r)}" for r in failed]
    primary = oks[0].get("primary_metric") if oks else None
    keys = _order_metrics(
        k for r in oks for k in _secondary_keys(r.get("metrics", {}).get("test", {}), primary)
    )
    for r in oks:
        cell.seeds.append(int(r.get("seed") or 0))
        cell.keys.append(_key(r))
        cell.values.append(_pct(r["test_score"]))
        cell.val_values.append(_pct(r.get("val_score")))
        test = r.get("metrics", {}).get("test", {})
        for k in keys:
            cell.secondary.setdefault(k, []).append(_pct(test.get(k)))
    if not oks:
        cell.status = "failed"
    elif len(oks) < seeds_expected:
        cell.status = "incomplete"
    else:
        cell.status = "ok"
    return cell


def _task_order(task_ids: Iterable[str]) -> list[str]:
    ids = set(task_ids)
    known = [t for t in TASKS if t in ids]
    return known + sorted(ids - set(known))  # custom tasks (not in the registry) after the 18


def _round(x: float, nd: int = DECIMALS) -> float:
    return round(x, nd) if math.isfinite(x) else math.nan


def build_leaderboard(
    records: Sequence[dict],
    *,
    reference: Sequence[dict] | None = None,
    baseline: str | None = None,
    seeds: int = 5,
    tasks: Sequence[str] | None = None,
    alpha: float = ALPHA,
) -> Leaderboard:
    """Turn records (and optionally published rows) into a :class:`Leaderboard`.

    Args:
        records: run records (as :func:`load_records` returns them; plain record dicts work too).
        reference: published rows (as :func:`load_reference` returns them), or None.
        baseline: name of the row every other row is compared with (a backbone name such as
            ``resnet50.imagenet`` or a published row such as ``published:ImageNet``).
        seeds: expected number of successful final runs per task; fewer is flagged ``incomplete``.
        tasks: task columns (default: every task of the given records, or of the reference when there
            are no records), always in registry order.
        alpha: family-wise significance level (Holm over the tasks).

    Raises:
        LeaderboardError: nothing to tabulate, or an unknown baseline.
    """
    records = list(records)
    for r in records:
        r.setdefault("_backbone", str((r.get("backbone") or {}).get("name") or "unknown"))
    if tasks is None:
        present = {r["task"] for r in records} or {r["task"] for r in (reference or [])}
        tasks = _task_order(present)
    else:
        tasks = _task_order(tasks)
    if not tasks:
        raise LeaderboardError("no run records (and no reference rows) to make a leaderboard of")
    lb = Leaderboard(tasks=list(tasks), rows=[], seeds_expected=int(seeds), baseline=baseline, alpha=alpha)

    by_backbone: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_backbone[r["_backbone"]].append(r)
    for name in sorted(by_backbone):
        recs = by_backbone[name]
        row = Row(name=name, source="run", backbone=_backbone_meta(recs))
        for task in lb.tasks:
            mine = [r for r in recs if r["task"] == task]
            row.cells[task] = _run_cell(
                name,
                task,
                [r for r in mine if _phase(r) == "final"],
                [r for r in mine if _phase(r) == "lr_search"],
                lb.seeds_expected,
            )
        lb.rows.append(row)
    lb.runs = _run_table(records, lb)

    published: dict[str, Row] = {}
    for ref in reference or []:
        name = published_name(ref["method"], ref.get("pretraining_data", ""))
        row = published.setdefault(
            name,
            Row(
                name=name,
                source="published",
                backbone={"spec": ref["method"], "pretraining_data": ref.get("pretraining_data", "")},
            ),
        )
        if ref["task"] in lb.tasks:
            row.cells[ref["task"]] = Cell(
                backbone=name,
                task=ref["task"],
                source="published",
                status="published",
                published_mean=float(ref["mean"]),
                published_std=float(ref["std_population"]),
                published_n=int(ref["n_runs"]),
                published_std_bound=float(ref.get("std_bound") or 0.0),
                notes=[f"published ({Path(ref['_file']).name})"] if "_file" in ref else [],
            )
            cell = row.cells[ref["task"]]
            if cell.published_std == 0 and cell.published_std_bound > 0:
                cell.notes.append(
                    f"published std {ref['std_population']:g} is below the printed precision: the tests use "
                    f"its rounding bound {cell.published_std_bound:g}"
                )
    clash = sorted(set(published) & set(by_backbone))
    if clash:
        raise LeaderboardError(f"backbone name(s) {', '.join(clash)} clash with published rows")
    for name in sorted(published):
        row = published[name]
        for task in lb.tasks:
            row.cells.setdefault(task, Cell(backbone=name, task=task, source="published", status="missing"))
        lb.rows.append(row)

    for task in lb.tasks:
        # Ranks from the rounded means (the numbers the CSV shows), so a reader can check them. Beside
        # published rows, cells of records with other metric definitions are not ranked at all.
        values = [
            _round(r.cells[task].mean) if _rankable(r.cells[task], bool(published)) else math.nan
            for r in lb.rows
        ]
        for r, rank in zip(lb.rows, stats.rank_descending(values)):
            lb.ranks[(r.name, task)] = float(rank)

    if baseline is not None:
        _compare(lb)
    lb.rows.sort(key=lambda r: (_nan_last(lb.mean_rank(r)), _nan_last(-lb.mean_over_tasks(r)), r.name))
    status, lb.comparison_lines = _summary(lb)
    lb.summary = status + lb.comparison_lines
    return lb


def _rankable(cell: Cell, with_published: bool) -> bool:
    return cell.has_value and (cell.as_published or not with_published)


def _comparable(a: Cell, b: Cell) -> bool:
    """Published numbers are only set against records whose metric has their definition."""
    if "published" in (a.source, b.source):
        return a.as_published and b.as_published
    return True


def _nan_last(x: float) -> tuple[int, float]:
    return (1, 0.0) if not math.isfinite(x) else (0, x)


def _backbone_meta(recs: list[dict]) -> dict:
    metas = sorted(
        {json.dumps(r.get("backbone") or {}, sort_keys=True) for r in recs},
    )
    meta = json.loads(metas[0]) if metas else {}
    if len(metas) > 1:
        meta["note"] = f"{len(metas)} different backbone descriptions under one name"
    return meta


def _run_table(records: list[dict], lb: Leaderboard) -> list[dict]:
    order = {t: i for i, t in enumerate(lb.tasks)}
    rows = []
    for r in records:
        rows.append(
            {
                "backbone": r["_backbone"],
                "task": r["task"],
                "phase": _phase(r),
                "seed": int(r.get("seed") or 0),
                "lr": float(r.get("lr") or 0.0),
                "lr_source": str(r.get("lr_source") or ""),
                "status": "ok" if _ok(r) else "failed",
                "test": _pct(r.get("test_score")) if _ok(r) else math.nan,
                "val": _pct(r.get("val_score")),
                "metric": str(r.get("primary_metric") or ""),
                "split_hash": str(r.get("split_hash") or ""),
                "key": _key(r),
                "wall_time_s": r.get("wall_time_s") if _is_number(r.get("wall_time_s")) else math.nan,
                "reason": "" if _ok(r) else _failure_reason(r),
            }
        )
    rows.sort(
        key=lambda x: (
            x["backbone"],
            order.get(x["task"], len(order)),
            x["task"],
            x["phase"],
            x["lr"],
            x["seed"],
            x["key"],
        )
    )
    return rows


def _compare(lb: Leaderboard) -> None:
    names = [r.name for r in lb.rows]
    if lb.baseline not in names:
        raise LeaderboardError(
            f"baseline '{lb.baseline}' is not a row of this leaderboard; rows: {', '.join(sorted(names))}"
        )
    base = lb.row(lb.baseline)
    for row in lb.rows:
        if row.name == lb.baseline:
            continue
        comps = []
        for task in lb.tasks:
            a, b = row.cells[task], base.cells[task]
            if not (a.has_value and b.has_value and _comparable(a, b)):
                continue
            if a.source == "run" and b.source == "run":
                res = stats.welch_t_test(a.values, b.values)
                kind = "runs"
            else:
                res = stats.welch_from_stats(a.mean, a.std_sample, a.n, b.mean, b.std_sample, b.n)
                kind = "summary"
            comps.append(
                Comparison(row.name, task, a.mean, b.mean, res.diff, res.t, res.df, res.p, test=kind)
            )
        adjusted = stats.holm([c.p for c in comps])
        for c, ph in zip(comps, adjusted):
            c.p_holm = float(ph)
            c.significant = bool(math.isfinite(ph) and ph < lb.alpha)
            lb.comparisons[(row.name, c.task)] = c


def beats(lb: Leaderboard, row: Row) -> tuple[int, int, int, list[str]]:
    """Against the baseline: (tasks better, of those significant after Holm, significantly worse, tasks not compared)."""
    k = j = worse = 0
    missing = []
    for task in lb.tasks:
        c = lb.comparisons.get((row.name, task))
        if c is None:
            missing.append(task)
            continue
        # Compared as printed (rounded to DECIMALS): equal means whose float sums differ are no win.
        d = _round(c.diff)
        if d > 0:
            k += 1
            j += c.significant
        elif d < 0 and c.significant:
            worse += 1
    return k, j, worse, missing


def _summary(lb: Leaderboard) -> tuple[list[str], list[str]]:
    """Status lines (counts, incomplete / failed / missing cells) and, with a baseline, one line per row."""
    lines = []
    n_runs = sum(r.source == "run" for r in lb.rows)
    n_pub = sum(r.source == "published" for r in lb.rows)
    lines.append(
        f"{n_runs} backbone(s) from runs"
        + (f", {n_pub} published row(s)" if n_pub else "")
        + f", {len(lb.tasks)} task(s); values in %, mean over {lb.seeds_expected} expected seeds"
    )
    for row in lb.rows:
        if row.source != "run":
            continue
        incomplete = [t for t in lb.tasks if row.cells[t].status == "incomplete"]
        failed = [t for t in lb.tasks if row.cells[t].status == "failed"]
        missing = [t for t in lb.tasks if row.cells[t].status == "missing"]
        for label, ts in (("incomplete seeds", incomplete), ("failed", failed), ("missing", missing)):
            if ts:
                lines.append(f"{row.name}: {label} on {len(ts)} task(s): {', '.join(ts)}")
    for task in lb.tasks:
        # Rows evaluated on different splits are not comparable: say so instead of ranking silently.
        hashes = sorted({r.cells[task].split_hash for r in lb.rows if r.cells[task].has_value} - {""})
        if len(hashes) > 1:
            lines.append(f"warning: {task}: runs on {len(hashes)} different splits ({', '.join(hashes)})")
    comparisons = []
    if lb.baseline is not None:
        for row in lb.rows:
            if row.name == lb.baseline:
                continue
            k, j, _, missing = beats(lb, row)
            line = f"{row.name} beats {lb.baseline} on {k} of {len(lb.tasks)} tasks (significant: {j})"
            if missing:
                line += f" - not compared (no result): {', '.join(missing)}"
            comparisons.append(line)
    return lines, comparisons


# ------------------------------------------------------------------------------------------- formatting


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
    for k in _order_metrics(k for r in lb.rows for k in r.cells[task].secondary):
        cols += [f"{k}_mean", f"{k}_std"]
    if lb.baseline is not None:
        cols += ["diff", "p_value", "p_holm", "significant"]
    cols += ["spec", "sha256", "reason", "notes"]
    return cols


def _metric_name(lb: Leaderboard, task: str) -> str:
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
    metric = _metric_name(lb, task)
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
    out.sort(key=lambda d: (_nan_last(float(d["rank"]) if d["rank"] else math.nan), d["backbone"]))
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


def _cell_text(c: Cell, nd: int = DISPLAY_DECIMALS) -> str:
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
    heads = [_task_label(t) for t in lb.tasks]
    lines.append("| backbone | " + " | ".join(heads) + " | mean | mean rank |")
    lines.append("|---|" + "---:|" * (len(lb.tasks) + 2))
    for row in lb.rows:
        name = f"{row.name} *(published)*" if row.source == "published" else row.name
        cells = [_cell_text(row.cells[t]) for t in lb.tasks]
        lines.append(
            f"| {_md_escape(name)} | "
            + " | ".join(cells)
            + f" | {fmt(lb.mean_over_tasks(row), DISPLAY_DECIMALS) or '–'} | {fmt(lb.mean_rank(row), 2) or '–'} |"
        )
    lines += ["", "Tasks:", ""]
    lines += [f"- {_task_label(t)}: `{t}` ({_metric_name(lb, t)})" for t in lb.tasks]
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


def _task_label(task: str) -> str:
    return str(TASKS[task].number) if task in TASKS else task


# ------------------------------------------------------------------------------------------- HTML

# Sorting: numbers by value, text by code point; empty cells always last; ties keep the original order.
# `cxrSortTable` works on any object with the DOM members it uses, so tests drive it under node with a
# small stand-in DOM as well as in a real browser.
_SORT_JS = r"""
(function () {
  "use strict";
  function cellKey(cell) {
    var v = cell.getAttribute("data-sort");
    return v === null ? cell.textContent.trim() : v;
  }
  function compareKeys(a, b, numeric, dir) {
    var ea = a === "", eb = b === "";
    if (ea || eb) { return ea === eb ? 0 : (ea ? 1 : -1); }
    var r;
    if (numeric) { r = parseFloat(a) - parseFloat(b); } else { r = a < b ? -1 : (a > b ? 1 : 0); }
    return dir === "asc" ? r : -r;
  }
  function sortOrder(keys, numeric, dir) {
    var idx = keys.map(function (_, i) { return i; });
    idx.sort(function (i, j) { return compareKeys(keys[i], keys[j], numeric, dir) || (i - j); });
    return idx;
  }
  function cxrSortTable(table, col, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (x, y) {
      return Number(x.getAttribute("data-index")) - Number(y.getAttribute("data-index"));
    });
    var th = table.tHead.rows[0].cells[col];
    var numeric = th.getAttribute("data-type") === "number";
    var keys = rows.map(function (r) { return cellKey(r.cells[col]); });
    sortOrder(keys, numeric, dir).forEach(function (i) { body.appendChild(rows[i]); });
    var heads = table.tHead.rows[0].cells;
    for (var k = 0; k < heads.length; k++) { heads[k].setAttribute("aria-sort", "none"); }
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
  }
  function cxrInit(doc) {
    var tables = doc.querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r, i) { r.setAttribute("data-index", String(i)); });
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
        th.addEventListener("click", function () {
          var cur = th.getAttribute("aria-sort");
          var first = th.getAttribute("data-first") || "asc";
          var dir = cur === "ascending" ? "desc" : (cur === "descending" ? "asc" : first);
          cxrSortTable(table, col, dir);
        });
      });
    });
  }
  var api = { compareKeys: compareKeys, sortOrder: sortOrder, cxrSortTable: cxrSortTable, cxrInit: cxrInit };
  if (typeof module !== "undefined" && module.exports) { module.exports = api; }
  if (typeof document !== "undefined") { cxrInit(document); }
})();
"""

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem; color: #1d1d1f; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
p.note { color: #555; max-width: 70rem; font-size: 0.9rem; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.82rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d0d5; padding: 0.25rem 0.45rem; white-space: nowrap; }
td.num { text-align: right; }
th { background: #f0f1f5; position: sticky; top: 0; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
tr.published td { color: #555; font-style: italic; }
td.incomplete { background: #fff4d6; }
td.failed { background: #fde2e2; color: #8a1c1c; }
td.pos.sig { background: #d5f0d5; } td.neg.sig { background: #f8d7d7; }
ul.summary li { margin: 0.2rem 0; }
img { max-width: 100%; border: 1px solid #e0e0e5; margin: 0.5rem 0; }
"""


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
        f"<style>{_CSS}</style></head><body>",
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
    parts += [_th(_task_label(t), "number", "desc", f"{t} ({_metric_name(lb, t)})") for t in lb.tasks]
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
                    _cell_text(c),
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
            f"{_task_label(t)} = {html.escape(t)} ({html.escape(_metric_name(lb, t))})" for t in lb.tasks
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
        parts += [_th(_task_label(t), "number", "desc", t) for t in lb.tasks]
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
    parts.append(f"<script>{_SORT_JS}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------- plots


def default_plot_rows(lb: Leaderboard, limit: int = 12) -> list[str]:
    """Backbones shown in the bar plot: every backbone from runs, plus the baseline; at most ``limit``."""
    names = [r.name for r in lb.rows if r.source == "run"]
    if lb.baseline is not None and lb.baseline not in names:
        names.append(lb.baseline)
    return names[:limit]


def _png(fig) -> bytes:
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
        ax.set_title(f"{_task_label(task)}. {task}", fontsize=7)
        ax.set_xticks([])
        ax.tick_params(labelsize=6)
        ax.set_ylabel(f"{_metric_name(lb, task)} (%)", fontsize=6)
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
    return _png(fig)


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
    ax.set_xticks(range(len(lb.tasks)), [_task_label(t) for t in lb.tasks], fontsize=7)
    ax.set_yticks(range(len(rows)), [r.name for r in rows], fontsize=7)
    ax.set_xlabel("task (see `cxrbench tasks`)", fontsize=7)
    fig.colorbar(im, ax=ax, label="difference (percentage points)", shrink=0.8)
    ax.set_title(f"Difference to {lb.baseline} (* significant after Holm, alpha {lb.alpha:g})", fontsize=8)
    return _png(fig)


# ------------------------------------------------------------------------------------------- writing


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
