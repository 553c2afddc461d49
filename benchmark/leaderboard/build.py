"""How do records become a leaderboard? Cells (one backbone on one task: the final runs used, or the
published numbers), rows, ranks, the comparisons with a baseline and their significance (Welch t-tests,
Holm over the tasks), and the summary lines: :func:`build_leaderboard` gives the :class:`Leaderboard` that
every writer reads.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.leaderboard import stats
from benchmark.leaderboard.load import LeaderboardError, published_name, record_key
from benchmark.runs.records import metrics_as_published
from tasks.registry import SECONDARY_METRICS, TASKS

DECIMALS = 3  # percent values in CSVs: 0.001 % resolution, far below any seed-to-seed spread
ALPHA = 0.05

# Keys of ``metrics.test`` that are not scores in [0, 1] (so not secondary metrics in percent).
_NOT_SCORES = ("loss", "n_detections")
# Display order of secondary metrics; others follow alphabetically.
_SECONDARY_ORDER = ("mAP", "froc", "dice", *SECONDARY_METRICS)


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


# ------------------------------------------------------------------------------------------- building


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


def order_metrics(keys: Iterable[str]) -> list[str]:
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
    keys = order_metrics(
        k for r in oks for k in _secondary_keys(r.get("metrics", {}).get("test", {}), primary)
    )
    for r in oks:
        cell.seeds.append(int(r.get("seed") or 0))
        cell.keys.append(record_key(r))
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
    lb.rows.sort(key=lambda r: (nan_last(lb.mean_rank(r)), nan_last(-lb.mean_over_tasks(r)), r.name))
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


def nan_last(x: float) -> tuple[int, float]:
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
                "key": record_key(r),
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

