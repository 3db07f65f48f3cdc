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


# --- version churn, calibration, gAUC (issue 27) ---------------------------------------------

def test_version_churn_by_hand():
    from mutualctr.metrics import sigmoid, version_churn

    old = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    new = old.copy()
    new[[0, 9]] = new[[9, 0]]  # the lowest and the highest row swap places: ranks move by 0.9
    new[4] = 2.05  # a small change that keeps every rank
    c = version_churn(new, old)
    expected_diff = (2 * abs(sigmoid(7.0) - sigmoid(-2.0)) + abs(sigmoid(2.05) - sigmoid(2.0))) / 10
    assert c["mean_abs_diff"] == pytest.approx(expected_diff, rel=1e-12)
    assert c["rank_moved"] == pytest.approx(0.2)  # 2 of 10 rows moved by more than a decile
    assert c["logit_corr"] == pytest.approx(np.corrcoef(new, old)[0, 1], rel=1e-12)
    same = version_churn(old, old)
    assert same == {"mean_abs_diff": 0.0, "rank_moved": 0.0, "logit_corr": pytest.approx(1.0)}
    # two neighbours swap: each moves by one rank in ten rows, a decile, not more than one
    assert version_churn(np.array([0.0, 2, 1, 3, 4, 5, 6, 7, 8, 9]), np.arange(10.0))["rank_moved"] == 0.0
    with pytest.raises(ValueError, match="not the same rows"):
        version_churn(old, old[:3])


def test_calibration_and_ece_by_hand():
    from mutualctr.metrics import calibration

    p = np.array([0.05, 0.05, 0.15, 0.95, 1.0, 0.55])
    y = np.array([0, 1, 0, 1, 1, 0])
    c = calibration(y, p)
    assert c["predicted_rate"] == pytest.approx(p.mean())
    assert c["observed_rate"] == pytest.approx(0.5)
    assert c["ratio"] == pytest.approx(p.mean() / 0.5)
    # bins: [0, .1): 2 rows p .05 y .5; [.1, .2): 1 row p .15 y 0; [.5, .6): p .55 y 0;
    # [.9, 1.0] (1.0 falls in the last bin): 2 rows p .975 y 1
    ece = (2 * abs(0.05 - 0.5) + abs(0.15 - 0) + abs(0.55 - 0) + 2 * abs(0.975 - 1)) / 6
    assert c["ece"] == pytest.approx(ece, rel=1e-12)
    assert [(b["lower"], b["rows"]) for b in c["bins"]] == [(0.0, 2), (0.1, 1), (0.5, 1), (0.9, 2)]
    assert c["bins"][-1]["mean_predicted"] == pytest.approx(0.975) and c["bins"][-1]["observed"] == 1.0
    assert np.isnan(calibration([0, 0], [0.1, 0.2])["ratio"])  # no click: no ratio
    perfect = calibration(np.array([0, 1] * 50), np.full(100, 0.5))
    assert perfect["ece"] == 0.0 and perfect["ratio"] == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_gauc_matches_sklearn_per_group_weighted_by_rows(seed):
    from mutualctr.metrics import gauc

    rng = np.random.default_rng(seed)
    n = 3000
    g = rng.integers(0, 80, size=n)
    y = rng.random(n) < 0.3
    s = np.round(rng.normal(size=n) + y * 0.5, 1)  # ties within groups
    got = gauc(y, s, g)
    num = den = 0.0
    used = 0
    for k in np.unique(g):
        m = g == k
        if y[m].all() or not y[m].any():
            continue  # one class only: skipped
        num += roc_auc_score(y[m], s[m]) * m.sum()
        den += m.sum()
        used += 1
    assert got["gauc"] == pytest.approx(num / den, abs=1e-12)
    assert got["groups"] == len(np.unique(g)) and got["groups_scored"] == used


def test_gauc_skips_single_class_groups():
    from mutualctr.metrics import gauc

    y = np.array([1, 0, 1, 1, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.8, 0.7])
    g = np.array(["a", "a", "b", "b", "c", "c"])  # b all clicks, c none: only a counts
    assert gauc(y, s, g) == {"gauc": 1.0, "groups": 3, "groups_scored": 1}
    assert np.isnan(gauc([1, 0], [0.1, 0.2], [0, 1])["gauc"])
