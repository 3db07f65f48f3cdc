"""Synthetic Criteo-format data: format, determinism, click rate, recorded ceiling AUC."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np

from mutualctr.data.prepare import prepare
from mutualctr.data.synth import generate
from mutualctr.metrics import auc


def test_auc_reference():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    pairs = [(p, n) for p in s[y == 1] for n in s[y == 0]]
    ref = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert abs(auc(y, s) - ref) < 1e-12


def test_generate_format_determinism_and_ceiling(tmp_path):
    r = generate(20_000, tmp_path / "a.txt", seed=3, progress=False)
    lines = (tmp_path / "a.txt").read_text().splitlines()
    assert len(lines) == 20_000 == r.rows
    cells = [ln.split("\t") for ln in lines[:2000]]
    assert {len(c) for c in cells} == {40}
    assert {c[0] for c in cells} == {"0", "1"}
    ints = [v for c in cells for v in c[1:14] if v]
    assert all(v.lstrip("-").isdigit() for v in ints) and any(v.startswith("-") for v in ints)
    cats = [v for c in cells for v in c[14:] if v]
    assert all(len(v) == 8 and int(v, 16) >= 0 for v in cats)
    assert sum(v == "" for c in cells for v in c[1:]) > 0  # missing values
    assert 0.22 < r.click_rate < 0.28
    assert 0.75 < r.ceiling_auc < 0.87
    meta = json.loads(r.meta_path.read_text())
    assert meta["ceiling_auc"] == r.ceiling_auc and meta["rows"] == 20_000 and meta["seed"] == 3
    same = generate(20_000, tmp_path / "b.txt.gz", seed=3, progress=False)
    digest = hashlib.sha256((tmp_path / "a.txt").read_bytes()).hexdigest()
    assert hashlib.sha256(gzip.decompress((tmp_path / "b.txt.gz").read_bytes())).hexdigest() == digest
    assert same.ceiling_auc == r.ceiling_auc
    other = generate(20_000, tmp_path / "c.txt", seed=4, progress=False)
    assert (tmp_path / "c.txt").read_bytes() != (tmp_path / "a.txt").read_bytes()
    assert other.ceiling_auc != r.ceiling_auc
    store = prepare("criteo", [tmp_path / "b.txt.gz"], tmp_path / "store", progress=False).store
    assert store.rows("train") == 16_000
    sizes = [f.vocab_size for f in store.feature_map.fields[13:]]
    assert min(sizes) < 20 and max(sizes) > 200  # cardinalities from ~10 up


def test_signal_is_learnable(tmp_path):
    """Logistic regression on the prepared one-hot ids gets well above chance."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    generate(40_000, tmp_path / "s.txt", seed=0, progress=False)
    store = prepare("criteo", [tmp_path / "s.txt"], tmp_path / "st", progress=False).store
    D = store.feature_map.num_features

    def onehot(X):
        n, F = X.shape
        return sp.csr_matrix((np.ones(n * F), np.asarray(X).ravel(), np.arange(0, n * F + 1, F)),
                             shape=(n, D))

    Xtr, ytr = store.split("train")
    Xte, yte = store.split("test")
    m = LogisticRegression(C=0.1, max_iter=300).fit(onehot(Xtr), ytr)
    assert auc(yte, m.predict_proba(onehot(Xte))[:, 1]) > 0.68
