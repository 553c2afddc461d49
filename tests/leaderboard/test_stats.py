"""benchmark.leaderboard.stats against scipy / numpy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from benchmark.leaderboard import stats

SAMPLES = [
    [0.31, 0.29, 0.33, 0.30, 0.32],
    [12.0, 15.5, 9.25, 11.0],
    [5.0, 5.0, 5.0, 5.1, 4.9],
    [1.0, 2.0],
]


@pytest.mark.parametrize("x", SAMPLES)
def test_mean_and_spreads_match_numpy(x):
    assert stats.mean(x) == pytest.approx(np.mean(x), rel=1e-12)
    assert stats.std_population(x) == pytest.approx(np.std(x, ddof=0), rel=1e-12)
    assert stats.std_sample(x) == pytest.approx(np.std(x, ddof=1), rel=1e-12)
    # ddof=0 is what the published tables report: smaller than the sample std by sqrt((n-1)/n).
    n = len(x)
    assert stats.std_population(x) == pytest.approx(stats.std_sample(x) * math.sqrt((n - 1) / n), rel=1e-12)


def test_population_std_by_hand():
    # values 1, 2, 3, 4: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, /4 -> 1.25.
    assert stats.std_population([1, 2, 3, 4]) == pytest.approx(math.sqrt(1.25))
    assert stats.std_sample([1, 2, 3, 4]) == pytest.approx(math.sqrt(5 / 3))


@pytest.mark.parametrize("x", SAMPLES)
@pytest.mark.parametrize("conf", [0.95, 0.9])
def test_t_interval_matches_scipy(x, conf):
    lo, hi = stats.t_interval(x, conf)
    elo, ehi = sps.t.interval(conf, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert (lo, hi) == pytest.approx((elo, ehi), rel=1e-10)


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on the reference side
def test_undefined_cases_are_nan():
    assert math.isnan(stats.mean([]))
    assert math.isnan(stats.std_population([]))
    assert math.isnan(stats.std_sample([0.3]))
    assert all(math.isnan(v) for v in stats.t_interval([0.3]))
    assert stats.t_interval([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2), abs=1e-15)  # no spread: zero width
    assert math.isnan(stats.welch_t_test([0.1], [0.2, 0.3]).p)
    # No variance at all (identical runs; 0.1 * 3 / 3 is inexact, so numpy's std is ~1e-17): no test.
    r = stats.welch_t_test([0.1, 0.1, 0.1], [0.7, 0.7, 0.7, 0.7])
    assert r.diff == pytest.approx(-0.6) and math.isnan(r.p) and math.isnan(r.t)
    assert math.isnan(stats.welch_from_stats(43.3, 0.0, 5, 50.0, 0.0, 5).p)
    # One side without variance is still a test (df = n - 1 of the other side).
    one = stats.welch_t_test([0.1, 0.1, 0.1], [0.6, 0.7, 0.8])
    ref = sps.ttest_ind([0.1, 0.1, 0.1], [0.6, 0.7, 0.8], equal_var=False)
    assert one.p == pytest.approx(ref.pvalue, rel=1e-6) and one.df == pytest.approx(2.0)


PAIRS = [
    ([31.2, 29.8, 33.1, 30.4, 32.0], [28.0, 27.5, 29.9, 28.8, 27.1]),
    ([0.31, 0.29, 0.33], [0.30, 0.35, 0.28, 0.36, 0.27]),
    ([5.0, 5.0, 5.1, 4.9, 5.0], [5.6, 4.1, 6.3, 3.9, 5.2]),  # very unequal variances
    ([1.0, 2.0], [1.0, 2.0]),
]


@pytest.mark.parametrize("a,b", PAIRS)
def test_welch_matches_scipy(a, b):
    ours = stats.welch_t_test(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert ours.t == pytest.approx(ref.statistic, rel=1e-10, abs=1e-12)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours.df == pytest.approx(ref.df, rel=1e-10)
    assert ours.diff == pytest.approx(np.mean(a) - np.mean(b))


@pytest.mark.parametrize("a,b", PAIRS)
def test_welch_from_stats_matches_scipy(a, b):
    ours = stats.welch_from_stats(
        np.mean(a), np.std(a, ddof=1), len(a), np.mean(b), np.std(b, ddof=1), len(b)
    )
    ref = sps.ttest_ind_from_stats(
        np.mean(a), np.std(a, ddof=1), len(a), np.mean(b), np.std(b, ddof=1), len(b), equal_var=False
    )
    assert ours.t == pytest.approx(ref.statistic, rel=1e-10, abs=1e-12)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)


def _holm_brute_force(p):
    """The textbook definition: adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)) (1-based)."""
    p = list(p)
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for rank, i in enumerate(order, start=1):
        out[i] = max(min(1.0, (m - j + 1) * p[order[j - 1]]) for j in range(1, rank + 1))
    return out


def test_holm_by_hand():
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


@pytest.mark.parametrize("seed", range(5))
def test_holm_matches_definition(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, size=18)
    p[3] = p[7]  # a tie
    assert stats.holm(p) == pytest.approx(_holm_brute_force(p), rel=1e-12)


def test_holm_skips_undefined_tests():
    adj = stats.holm([0.01, math.nan, 0.04])
    assert math.isnan(adj[1])
    assert [adj[0], adj[2]] == pytest.approx([0.02, 0.04])  # m = 2, not 3
    assert np.isnan(stats.holm([math.nan])).all()
    assert stats.holm([0.9, 0.8]).tolist() == [1.0, 1.0]  # capped at 1


@pytest.mark.parametrize(
    "x",
    [
        [3.0, 1.0, 2.0],
        [30.5, 30.5, 12.0, 40.1],
        [1.0, 1.0, 1.0],
        [5.0, math.nan, 5.0, 7.0, math.nan, 1.0],
        list(np.round(np.random.default_rng(0).uniform(0, 5, 40), 0)),  # many ties
    ],
)
def test_ranks_match_scipy(x):
    x = np.asarray(x)
    ours = stats.rank_descending(x)
    ok = ~np.isnan(x)
    assert np.isnan(ours[~ok]).all()
    assert ours[ok] == pytest.approx(sps.rankdata(-x[ok], method="average"))


def test_ranks_by_hand():
    # 40.1 best; the two 30.5 share ranks 2 and 3 -> 2.5; 12.0 last.
    assert stats.rank_descending([30.5, 30.5, 12.0, 40.1]).tolist() == [2.5, 2.5, 4.0, 1.0]
