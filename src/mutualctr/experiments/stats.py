"""Statistics for the experiment reports: mean +- std, RelaImp, paired t-test, paired bootstrap.

The paired bootstrap resamples *test rows*: both models are scored on the same resample, so
the interval is that of the AUC difference caused by the finite test set (not by seeds; the
paired t-test across instances covers seeds). AUC on a resample is computed exactly (ties
count 1/2) from multiplicity weights, with one sort of the scores shared by all resamples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats
from scipy import stats as scipy_stats

from mutualctr.metrics import auc, relaimp

__all__ = ["mean_std", "relaimp", "paired_ttest", "PairedTest", "paired_interval", "weighted_auc",
           "bootstrap_auc_diff", "BootstrapCI"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value, nan for none)."""
    v = np.asarray([x for x in values if x is not None and not _isnan(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _isnan(x) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


@dataclass
class PairedTest:
    """A paired t-test of b - a across instances."""

    n: int
    mean_diff: float
    t: float
    p: float

    def as_dict(self) -> dict:
        return {"n": self.n, "mean_diff": self.mean_diff, "t": self.t, "p": self.p}


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """scipy.stats.ttest_rel(b, a) (two-sided); nan t/p when fewer than 2 pairs or no spread."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    n = int(a.size)
    diff = float(np.mean(b - a)) if n else float("nan")
    if n < 2 or np.all(b - a == (b - a)[0]):
        return PairedTest(n, diff, float("nan"), float("nan"))
    r = scipy_stats.ttest_rel(b, a)
    return PairedTest(n, diff, float(r.statistic), float(r.pvalue))


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean paired difference b - a (the interval that goes with
    :func:`paired_ttest`): mean +- t_{(1+level)/2, n-1} x sd / sqrt(n). nan for fewer than 2
    pairs; (d, d) when every pair differs by the same d."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf((1 + level) / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return float(d.mean() - half), float(d.mean() + half)


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): the ascending sort order and where each run of equal scores begins."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Exact AUC (ties 1/2) of each row of ``weights`` (B, n) used as row multiplicities.

    Integer weights give the AUC of the data set in which row i appears weights[b, i] times.
    Returns a (B,) array (nan where a class has zero weight).
    """
    y = np.asarray(labels).reshape(-1) > 0.5
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order, starts = _tie_groups(s)
    yo = y[order]
    wo = w[:, order]
    pos = np.add.reduceat(wo * yo, starts, axis=1)  # (B, groups) positive weight per tie group
    neg = np.add.reduceat(wo * ~yo, starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each group
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


@dataclass
class BootstrapCI:
    """Paired bootstrap of AUC(b) - AUC(a) over test rows."""

    diff: float  # on the full test set
    low: float
    high: float
    level: float
    resamples: int
    seed: int
    p_le_0: float  # share of resamples with difference <= 0

    def as_dict(self) -> dict:
        return dict(diff=self.diff, low=self.low, high=self.high, level=self.level,
                    resamples=self.resamples, seed=self.seed, p_le_0=self.p_le_0)


def bootstrap_auc_diff(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                       resamples: int = 1000, level: float = 0.95, seed: int = 0,
                       chunk_cells: int = 4_000_000) -> BootstrapCI:
    """Percentile CI of AUC(b) - AUC(a), resampling test rows with replacement (paired).

    Each resample is a vector of multiplicities (bincount of n draws); both AUCs are computed
    on it exactly. Resamples are processed in chunks of at most ``chunk_cells`` (B x n) cells.
    """
    y = np.asarray(labels).reshape(-1)
    a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    n = y.size
    if not (a.size == b.size == n):
        raise ValueError("labels and both score vectors must have the same length")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, chunk_cells // max(n, 1))
    diffs = []
    done = 0
    while done < resamples:
        k = min(per_chunk, resamples - done)
        w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(k)])
        diffs.append(weighted_auc(y, b, w) - weighted_auc(y, a, w))
        done += k
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    alpha = (1 - level) / 2
    low, high = (np.quantile(d, [alpha, 1 - alpha]) if d.size else (np.nan, np.nan))
    return BootstrapCI(diff=float(auc(y, b) - auc(y, a)), low=float(low), high=float(high), level=level,
                       resamples=int(resamples), seed=seed, p_le_0=float(np.mean(d <= 0)) if d.size else float("nan"))
