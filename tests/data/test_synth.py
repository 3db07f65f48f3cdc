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


def _probabilities_from_file(path, seed):
    """(labels, p) read back from the written TSV: each token mapped back to its value rank and
    the hidden model's probability recomputed from the row as written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    from mutualctr.data import synth

    model = synth._Model(seed)
    model.calibrate(seed)
    names = ["label"] + [f"I{i + 1}" for i in range(13)] + [f"C{i + 1}" for i in range(26)]
    t = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names),
                       parse_options=pacsv.ParseOptions(delimiter="\t"),
                       convert_options=pacsv.ConvertOptions(
                           column_types={n: pa.string() for n in names}, strings_can_be_null=True))
    y = np.asarray(t["label"].to_numpy(zero_copy_only=False)).astype(np.int64)
    ints = np.stack([pc.cast(t[f"I{i + 1}"], pa.float64()).to_numpy(zero_copy_only=False)
                     for i in range(13)], axis=1)
    cats = np.stack([pc.fill_null(pc.index_in(t[f"C{i + 1}"], value_set=model.tokens[i]),
                                  int(model.cards[i])).to_numpy(zero_copy_only=False)
                     for i in range(26)], axis=1).astype(np.int64)
    assert (cats >= 0).all()
    return y, 1.0 / (1.0 + np.exp(-model.logit(cats, ints)))


def test_ceiling_is_exact_on_a_bounded_sample(tmp_path, monkeypatch):
    """Beyond CEILING_ROWS the ceiling AUC is mutualctr.metrics.auc on every stride-th row of the
    file (recomputed here from the written rows), and the click rate and logloss cover all rows."""
    from mutualctr.data import synth
    from mutualctr.metrics import logloss

    monkeypatch.setattr(synth, "CEILING_ROWS", 5_000)
    monkeypatch.setattr(synth, "CHUNK", 3_001)  # chunk starts not aligned with the stride
    rows = 23_457
    r = generate(rows, tmp_path / "a.txt", seed=5, progress=False)
    y, p = _probabilities_from_file(tmp_path / "a.txt", 5)
    assert len(y) == rows
    stride = 5  # ceil(23457 / 5000)
    meta = json.loads(r.meta_path.read_text())
    assert meta["ceiling_auc_rows"] == len(y[::stride]) == 4_692
    assert abs(r.ceiling_auc - auc(y[::stride], p[::stride])) < 1e-12
    assert abs(r.ceiling_auc - auc(y, p)) < 0.03  # a sample, not another quantity
    assert r.click_rate == y.mean()
    assert abs(meta["ceiling_logloss"] - logloss(y, p)) < 1e-9
    # up to CEILING_ROWS every row is used
    monkeypatch.setattr(synth, "CEILING_ROWS", rows)
    r_all = generate(rows, tmp_path / "b.txt", seed=5, progress=False)
    assert (tmp_path / "b.txt").read_bytes() == (tmp_path / "a.txt").read_bytes()
    assert abs(r_all.ceiling_auc - auc(y, p)) < 1e-12


def test_ceiling_buffer_does_not_grow_with_rows():
    from mutualctr.data.synth import _CeilingSample

    for rows in (10, 999, 1_000, 1_001, 10**6, 10**12):
        acc = _CeilingSample(rows, 1_000)
        assert len(acc.probs) == len(acc.labels) == len(range(0, rows, acc.stride))
        assert len(acc.probs) <= 1_000
        assert acc.probs.nbytes <= 8_000
