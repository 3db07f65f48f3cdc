"""Evaluation metrics: exact tie-aware AUC, logloss, RelaImp (SPEC.md equations 4-5), churn between
models and between versions of a model, calibration (ECE, reliability curve) and grouped AUC.

The one implementation of each, shared by training, experiments, the synthetic generator and
the benchmarks (numpy only).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC with ties counted 1/2, in O(n log n).

    Mann-Whitney form: AUC = (sum of the positives' mid-ranks - P(P+1)/2) / (P N), where tied
    scores share the mean of the ranks they span. Scores may be logits or probabilities (only
    the order matters). Returns nan when a class is absent.
    """
    y = np.asarray(labels).reshape(-1) > 0.5
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    # Start of each run of equal scores; every member of a run gets the run's mid-rank.
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    ends = np.r_[starts[1:], s.size]
    midranks = (starts + ends + 1) / 2.0  # 1-based ranks start+1 .. end, their mean
    run_of = np.repeat(np.arange(starts.size), ends - starts)
    pos_ranks = midranks[run_of][y[order]]
    return float((pos_ranks.sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities of logits, in float64 (no overflow for large negative logits)."""
    return expit(np.asarray(logits, dtype=np.float64))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities, clipped to [eps, 1 - eps]."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def relaimp(auc_model: float, auc_base: float) -> float:
    """RelaImp in percent: ((AUC - 0.5) / (AUC_base - 0.5) - 1) * 100."""
    return ((auc_model - 0.5) / (auc_base - 0.5) - 1.0) * 100.0


def churn(logits: list[np.ndarray]) -> dict[str, float]:
    """How much a set of models disagree on the same rows, averaged over every pair (i, j):
    ``mean_abs_diff`` = mean_b |p_i - p_j| (probabilities), ``logit_corr`` = Pearson correlation
    of the logits. One model alone has nothing to disagree with: nan for both."""
    if len(logits) < 2:
        return {"mean_abs_diff": float("nan"), "logit_corr": float("nan")}
    z = [np.asarray(l, dtype=np.float64).reshape(-1) for l in logits]
    p = [sigmoid(l) for l in z]
    diffs, corrs = [], []
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            diffs.append(float(np.mean(np.abs(p[i] - p[j]))))
            corrs.append(float(np.corrcoef(z[i], z[j])[0, 1]))
    return {"mean_abs_diff": float(np.mean(diffs)), "logit_corr": float(np.mean(corrs))}


def percentile_ranks(scores: np.ndarray) -> np.ndarray:
    """Each row's rank among ``scores`` as a fraction in (0, 1]: its 1-based rank (ties share
    their mean rank) divided by the number of rows."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return rankdata(s, method="average") / max(s.size, 1)


def version_churn(new_logits: np.ndarray, old_logits: np.ndarray, decile: float = 0.1) -> dict[str, float]:
    """How much a new version of a model changed its predictions on the same rows:

    - ``mean_abs_diff``: mean over rows of |p_new - p_old| (probabilities);
    - ``rank_moved``: the share of rows whose percentile rank (:func:`percentile_ranks`) moved by
      more than ``decile`` (0.1: a tenth of the rows) between the versions;
    - ``logit_corr``: the Pearson correlation of the two logit vectors.
    """
    z_new = np.asarray(new_logits, dtype=np.float64).reshape(-1)
    z_old = np.asarray(old_logits, dtype=np.float64).reshape(-1)
    if z_new.shape != z_old.shape:
        raise ValueError(f"the two versions scored {z_new.size} and {z_old.size} rows: not the same rows")
    if z_new.size == 0:
        return {"mean_abs_diff": float("nan"), "rank_moved": float("nan"), "logit_corr": float("nan")}
    moved = np.abs(percentile_ranks(z_new) - percentile_ranks(z_old)) > decile + 1e-12  # no float noise
    return {"mean_abs_diff": float(np.mean(np.abs(sigmoid(z_new) - sigmoid(z_old)))),
            "rank_moved": float(np.mean(moved)),
            "logit_corr": float(np.corrcoef(z_new, z_old)[0, 1])}


#: probability bins of :func:`calibration`: equal-width, [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]
CALIBRATION_BINS = 10


def calibration(labels: np.ndarray, probs: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Calibration of probabilities against 0/1 labels.

    - ``predicted_rate`` / ``observed_rate``: the mean probability and the click rate;
      ``ratio`` = predicted / observed (1 is calibrated overall; nan without a click);
    - ``ece``: expected calibration error over ``bins`` equal-width probability bins
      ``[k/bins, (k+1)/bins)`` (the last one closed at 1): sum over bins of
      (rows in bin / rows) * |mean probability in bin - click rate in bin| (Guo et al., 2017);
    - ``bins``: the reliability curve, one entry per non-empty bin: ``lower``, ``upper``,
      ``rows``, ``mean_predicted``, ``observed``.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} differ in length")
    n = y.size
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    rows = np.bincount(which, minlength=bins)
    sum_p = np.bincount(which, weights=p, minlength=bins)
    sum_y = np.bincount(which, weights=y, minlength=bins)
    curve, ece = [], 0.0
    for k in np.flatnonzero(rows):
        mean_p, obs = sum_p[k] / rows[k], sum_y[k] / rows[k]
        ece += rows[k] / n * abs(mean_p - obs)
        curve.append({"lower": float(k / bins), "upper": float((k + 1) / bins), "rows": int(rows[k]),
                      "mean_predicted": float(mean_p), "observed": float(obs)})
    pred = float(p.mean()) if n else float("nan")
    obs = float(y.mean()) if n else float("nan")
    return {"predicted_rate": pred, "observed_rate": obs,
            "ratio": pred / obs if n and obs > 0 else float("nan"),
            "ece": float(ece) if n else float("nan"), "bins": curve}


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Grouped AUC, as FuxiCTR's ``gAUC`` and TorchRec's grouped AUC compute it: the AUC
    (:func:`auc`, ties 1/2) of each group's rows, averaged with each group weighted by its number
    of rows (impressions); groups whose rows are all clicks or all non-clicks have no AUC and are
    skipped (their rows count nowhere). Returns ``gauc`` (nan when no group has both classes),
    ``groups`` (distinct groups) and ``groups_scored`` (those with both classes).
    """
    y = np.asarray(labels).reshape(-1) > 0.5
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if not (y.shape == s.shape == g.shape):
        raise ValueError(f"labels {y.shape}, scores {s.shape} and groups {g.shape} differ in length")
    _, gid = np.unique(g, return_inverse=True)
    n_groups = int(gid.max()) + 1 if gid.size else 0
    order = np.lexsort((s, gid))
    gs, ss, ys = gid[order], s[order], y[order]
    # runs of equal (group, score): each member gets the run's mid-rank within its group
    new_run = np.r_[True, (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])] if gs.size else np.zeros(0, bool)
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], gs.size]
    group_start = np.r_[0, np.cumsum(np.bincount(gs, minlength=n_groups))[:-1]] if n_groups else np.zeros(0)
    mid = (starts + ends + 1) / 2.0 - group_start[gs[starts]]
    ranks = np.repeat(mid, ends - starts)
    n_pos = np.bincount(gs, weights=ys, minlength=n_groups)
    n_all = np.bincount(gs, minlength=n_groups).astype(np.float64)
    n_neg = n_all - n_pos
    rank_sum = np.bincount(gs, weights=ranks * ys, minlength=n_groups)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return {"gauc": float("nan"), "groups": n_groups, "groups_scored": 0}
    aucs = (rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg[ok])
    return {"gauc": float(np.sum(aucs * n_all[ok]) / np.sum(n_all[ok])), "groups": n_groups,
            "groups_scored": int(ok.sum())}
