"""Shared fixtures: one fake RSNA download and its prepared dataset per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CXRBENCH_OFFLINE", "1")  # tests never download weights


@pytest.fixture(scope="session")
def fake_rsna(tmp_path_factory):
    from tasks.fakes import make_fake_rsna

    return make_fake_rsna(tmp_path_factory.mktemp("rsna_raw"), n_patients=40, seed=0)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory, fake_rsna):
    """A data root with RSNA prepared at 224 px."""
    from tasks.prepare import prepare

    root = tmp_path_factory.mktemp("data")
    report = prepare("rsna", fake_rsna, root, workers=2, progress=False)
    assert not report.failures
    return root
