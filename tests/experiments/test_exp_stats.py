import numpy as np
import pytest
from scipy import stats as sps

from mutualctr.experiments.stats import (bootstrap_auc_diff, mean_std, paired_interval, paired_ttest, relaimp,
                                        weighted_auc)
from mutualctr.metrics import auc


def test_relaimp_matches_the_spec_example():
    # SPEC.md: FiBiNET Avazu 0.79743 -> 0.79837 is RelaImp +0.316%
    assert relaimp(0.79837, 0.79743) == pytest.approx(0.316, abs=5e-4)
    assert relaimp(0.8, 0.8) == 0.0


def test_mean_std_is_sample_std():
    m, s = mean_std([0.80, 0.81, 0.79])
    assert m == pytest.approx(0.80)
    assert s == pytest.approx(np.sqrt(((0.0) ** 2 + 0.01 ** 2 + 0.01 ** 2) / 2))
    assert mean_std([0.7]) == (0.7, 0.0)
    assert np.isnan(mean_std([])[0])


def test_paired_ttest_against_hand_computation():
    a = [0.800, 0.810, 0.790]
    b = [0.810, 0.815, 0.799]
    d = np.subtract(b, a)
    t = d.mean() / (d.std(ddof=1) / np.sqrt(3))
    p = 2 * sps.t.sf(abs(t), df=2)
    r = paired_ttest(a, b)
    assert r.n == 3 and r.mean_diff == pytest.approx(d.mean())
    assert r.t == pytest.approx(t) and r.p == pytest.approx(p)


def test_paired_ttest_degenerate_cases_give_nan():
    assert np.isnan(paired_ttest([0.8], [0.9]).p)
    assert np.isnan(paired_ttest([0.8, 0.7], [0.81, 0.71]).p)  # constant difference: no spread


def test_paired_interval_is_the_t_interval_of_the_mean_difference():
    a, b = [0.70, 0.71, 0.705], [0.711, 0.7212, 0.7158]
    d = np.subtract(b, a)
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t_{0.975, 2}
    assert paired_interval(a, b) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-12)
    low, high = paired_interval(a, b, level=0.5)
    assert d.mean() - half < low < d.mean() < high < d.mean() + half
    assert paired_interval([0.8, 0.7], [0.8, 0.7]) == (0.0, 0.0)  # no spread: the difference itself
    assert all(np.isnan(paired_interval([0.8], [0.9])))


def test_weighted_auc_equals_auc_of_the_repeated_rows():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.4
    s = np.round(rng.normal(size=300), 1)  # ties
    w = rng.integers(0, 4, size=(5, 300))
    got = weighted_auc(y, s, w)
    for b in range(5):
        assert got[b] == pytest.approx(auc(np.repeat(y, w[b]), np.repeat(s, w[b])), abs=1e-12)
    assert weighted_auc(y, s, np.ones((1, 300)))[0] == pytest.approx(auc(y, s), abs=1e-12)


def test_bootstrap_equals_a_naive_loop_with_the_same_draws():
    rng = np.random.default_rng(1)
    n = 500
    y = rng.random(n) < 0.3
    a = rng.normal(size=n) + y * 0.5
    b = a + rng.normal(size=n) * 0.3 + y * 0.1
    ci = bootstrap_auc_diff(y, a, b, resamples=200, seed=3, chunk_cells=n * 7)  # several chunks
    draws = np.random.default_rng(3)
    naive = []
    for _ in range(200):
        idx = draws.integers(0, n, n)
        naive.append(auc(y[idx], b[idx]) - auc(y[idx], a[idx]))
    lo, hi = np.quantile(naive, [0.025, 0.975])
    assert ci.low == pytest.approx(lo, abs=1e-12) and ci.high == pytest.approx(hi, abs=1e-12)
    assert ci.diff == pytest.approx(auc(y, b) - auc(y, a))
    assert ci.low <= ci.diff <= ci.high
    assert ci.p_le_0 == pytest.approx(np.mean(np.array(naive) <= 0))


def test_bootstrap_of_identical_models_is_zero():
    rng = np.random.default_rng(2)
    y = rng.random(200) < 0.5
    s = rng.normal(size=200)
    ci = bootstrap_auc_diff(y, s, s, resamples=50)
    assert (ci.diff, ci.low, ci.high) == (0.0, 0.0, 0.0)
