"""Evaluation metrics: exact tie-aware AUC, logloss, RelaImp (SPEC.md equations 4-5).

The one implementation of each, shared by training, experiments, the synthetic generator and
the benchmarks (numpy only).
"""

from __future__ import annotations

import numpy as np


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
    from scipy.special import expit

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
