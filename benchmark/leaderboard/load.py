"""Where do the leaderboard's inputs come from? The run records under ``runs/`` folders and the published
reference rows (``results/reference/*.csv``), read as they are; nothing is computed here.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path

from benchmark.runs.records import read_record, record_files

# Where the published numbers live in a checkout (results/reference/*.csv, see its README).
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"
REFERENCE_COLUMNS = ("method", "pretraining_data", "task", "metric", "mean", "std_population")
# The published tables report 5 runs per task (tasks.md); used where a test needs n for published rows.
PUBLISHED_RUNS = 5
PUBLISHED_PREFIX = "published:"


class LeaderboardError(ValueError):
    """Bad input to the leaderboard (no records, an unknown baseline, a malformed reference file)."""


def record_key(rec: dict) -> str:
    """A record's run key (its ``key`` field, else its file name)."""
    return str(rec.get("key") or Path(rec.get("_path", "")).stem)


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
        for path in record_files(root):
            try:
                rec = read_record(path)
            except (OSError, json.JSONDecodeError) as e:
                problems.append(f"{path}: not a readable JSON record ({e}); skipped")
                continue
            if not isinstance(rec, dict) or "task" not in rec:
                problems.append(f"{path}: no 'task' field, not a run record; skipped")
                continue
            rec.setdefault("backbone", {})
            rec["_path"] = str(path)
            key = record_key(rec)
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

