"""Fixtures of the executor tests: one feature cache, and the records of the sequential reference sweep."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from benchmark.runs import evaluate
from tests.executors.reference import OPTIONS, TASK
from tests.support.records import records_by_key


@pytest.fixture(scope="package")
def cache_dir(tmp_path_factory) -> Path:
    """One feature cache for the sweeps of this package (built by the first, reused by the others)."""
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="package")
def reference(data_root, tmp_path_factory, cache_dir):
    """The records of an uninterrupted sequential single-worker sweep."""
    out = tmp_path_factory.mktemp("reference")
    options = replace(OPTIONS, feature_cache=str(cache_dir))  # as the sweeps below
    evaluate("resnet18.random", [TASK], data_root, out, seeds=[0], options=options, echo=lambda *a: None)
    records = records_by_key(out)
    assert len(records) == 3
    return records
