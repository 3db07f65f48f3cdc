import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from mutualctr.metrics import auc, logloss, relaimp


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_on_continuous_scores(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(5000) < 0.3
    s = rng.normal(size=5000) + y * 0.7
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_heavy_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(3000) < 0.4
    s = rng.integers(0, 7, size=3000) + y * rng.integers(0, 2, size=3000)  # few distinct values
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_against_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.5
    s = np.round(rng.random(300), 1)
    pos, neg = s[y], s[~y]
    brute = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auc(y, s) == pytest.approx(brute, abs=1e-12)


def test_auc_edge_cases():
    assert auc([1, 0], [0.2, 0.2]) == 0.5
    assert auc([1, 1, 0], [3, 2, 1]) == 1.0
    assert auc([0, 0, 1], [3, 2, 1]) == 0.0
    assert np.isnan(auc([1, 1], [0.1, 0.2]))


def test_logloss_matches_sklearn():
    rng = np.random.default_rng(1)
    y = (rng.random(1000) < 0.3).astype(float)
    p = rng.random(1000) * 0.98 + 0.01
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-12)


def test_relaimp_spec_example():
    # SPEC.md: FiBiNET Avazu 0.79743 -> 0.79837 is RelaImp +0.316%.
    assert relaimp(0.79837, 0.79743) == pytest.approx(0.316, abs=5e-4)
    assert relaimp(0.7, 0.7) == 0.0
