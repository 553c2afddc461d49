"""What did the runs write? The one reader of run records in the tests.

Records are one JSON file per run, ``OUT/runs/BACKBONE/TASK/KEY.json`` (``benchmark.runs.records``); the
tests read them here, through the package's own reader (``iter_records`` / ``read_record``), instead of
globbing that layout themselves. An output folder without ``runs/`` holds no record.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmark.runs.records import iter_records, read_record
from benchmark.runs.records import record_files as _record_files


def record_files(out: str | os.PathLike) -> list[Path]:
    """The record files under the output folder ``out``, sorted by path."""
    runs = Path(out) / "runs"
    return _record_files(runs) if runs.is_dir() else []


def read_records(out: str | os.PathLike) -> list[dict]:
    """Every record under the output folder ``out``, sorted by path."""
    runs = Path(out) / "runs"
    return list(iter_records(runs)) if runs.is_dir() else []


def records_by_key(out: str | os.PathLike) -> dict[str, dict]:
    """The records under the output folder ``out`` by run key (the name of the record's file)."""
    return {path.stem: read_record(path) for path in record_files(out)}
