"""Statistics for leaderboards: pure functions on arrays (no I/O, no state).

Conventions (those of the published LoVT tables and of ``shared/spec/tasks.md``):

- the spread reported beside a mean is the *population* standard deviation (``ddof=0``);
- confidence intervals and tests use the *sample* standard deviation (``ddof=1``);
- comparisons are two-sided Welch t-tests (unequal variances) over seeds, corrected for the number of
  tasks with Holm's step-down method.

Undefined quantities (a mean of nothing, a spread of one value, a test with no variance) are ``nan``,
never an exception, so a leaderboard with missing runs still renders; callers write ``nan`` as an empty
cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

ArrayLike = Sequence[float] | np.ndarray


def _finite(values: ArrayLike) -> np.ndarray:
    """The values as a 1-d float array (nan stays nan: callers decide what to drop)."""
    return np.asarray(values, dtype=np.float64).reshape(-1)


def mean(values: ArrayLike) -> float:
    """Arithmetic mean; ``nan`` for no values."""
    x = _finite(values)
    return float(x.mean()) if x.size else math.nan


def std_population(values: ArrayLike) -> float:
    """Population standard deviation (``ddof=0``), the spread of the published tables; ``nan`` for none."""
    x = _finite(values)
    return float(x.std(ddof=0)) if x.size else math.nan


def std_sample(values: ArrayLike) -> float:
    """Sample standard deviation (``ddof=1``); ``nan`` for fewer than two values."""
    x = _finite(values)
    return float(x.std(ddof=1)) if x.size >= 2 else math.nan


def t_interval(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean.

    ``mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with the sample standard deviation ``s``.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than two values. Zero spread gives a zero-width interval.
    """
    x = _finite(values)
    if x.size < 2:
        return math.nan, math.nan
    m = float(x.mean())
    half = float(_sps.t.ppf(0.5 + confidence / 2, df=x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m - half, m + half


@dataclass(frozen=True)
class WelchResult:
    """A two-sided Welch t-test of ``mean(a) - mean(b)``.

    Attributes:
        diff: ``mean(a) - mean(b)``.
        t: the t statistic (``nan`` when undefined).
        df: Welch-Satterthwaite degrees of freedom (``nan`` when undefined).
        p: two-sided p-value (``nan`` when undefined: fewer than two values on a side, or no variance on
            either side).
    """

    diff: float
    t: float
    df: float
    p: float


def _clean_sd(sd: float, m: float) -> float:
    """A standard deviation at floating-point noise level (identical values whose mean is inexact) is 0.

    Without this, five identical runs would have a spread of ~1e-17, an enormous t and p = 0.
    """
    return 0.0 if abs(float(sd)) <= 1e-12 * max(1.0, abs(float(m))) else float(sd)


def welch_from_stats(
    mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int
) -> WelchResult:
    """Welch's two-sided t-test from summary statistics (``sd_*`` are SAMPLE standard deviations).

    Used where only means and spreads are known (the published rows: convert their population std with
    ``sd = std_pop * sqrt(n / (n - 1))``).
    """
    diff = float(mean_a) - float(mean_b)
    if n_a < 2 or n_b < 2 or not all(math.isfinite(v) for v in (mean_a, mean_b, sd_a, sd_b)):
        return WelchResult(diff, math.nan, math.nan, math.nan)
    va, vb = _clean_sd(sd_a, mean_a) ** 2 / n_a, _clean_sd(sd_b, mean_b) ** 2 / n_b
    se2 = va + vb
    if se2 <= 0.0:
        # No variance at all: the t statistic is undefined (0/0) or infinite; no test is possible.
        return WelchResult(diff, math.nan, math.nan, math.nan)
    t = diff / math.sqrt(se2)
    df = se2**2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    p = float(2.0 * _sps.t.sf(abs(t), df))
    return WelchResult(diff, t, df, min(p, 1.0))


def welch_t_test(a: ArrayLike, b: ArrayLike) -> WelchResult:
    """Two-sided Welch t-test of ``mean(a) - mean(b)`` on raw values (e.g. per-seed test scores)."""
    x, y = _finite(a), _finite(b)
    return welch_from_stats(
        float(x.mean()) if x.size else math.nan,
        float(x.std(ddof=1)) if x.size >= 2 else math.nan,
        x.size,
        float(y.mean()) if y.size else math.nan,
        float(y.std(ddof=1)) if y.size >= 2 else math.nan,
        y.size,
    )


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order.

    Sorted ascending, the i-th smallest of ``m`` p-values is multiplied by ``m - i`` (i from 0), made
    non-decreasing by a running maximum, and capped at 1. ``nan`` entries (tests that could not be done)
    stay ``nan`` and are not counted in ``m``. Reject where ``adjusted < alpha``.
    """
    p = _finite(pvalues)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    # A stable sort keeps equal p-values in input order, so the result does not depend on ties.
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def rank_descending(values: ArrayLike) -> np.ndarray:
    """Ranks with 1 = largest value; tied values share the average of their ranks; ``nan`` stays ``nan``.

    Equivalent to ``scipy.stats.rankdata(-values, method="average")`` on the finite entries.
    """
    x = _finite(values)
    out = np.full(x.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(x))
    if valid.size == 0:
        return out
    v = x[valid]
    order = np.argsort(-v, kind="stable")
    sorted_v = -np.sort(-v, kind="stable")
    ranks = np.empty(v.size)
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1  # positions i..j share ranks i+1..j+1
        i = j + 1
    out[valid] = ranks
    return out
