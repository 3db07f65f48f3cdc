"""encode_file(): raw rows -> ids with a store's vocabularies (prediction path)."""

from __future__ import annotations

import numpy as np
import pytest

from mutualctr.data.encode import encode_file
from mutualctr.data.prepare import prepare
from mutualctr.data.schema import AVAZU_COLUMNS
from mutualctr.errors import DataError

from .helpers import avazu_rows, criteo_rows, write_tsv


def test_criteo_unlabeled_and_unseen(tmp_path):
    rows = criteo_rows(400)
    raw = write_tsv(tmp_path / "c.txt", rows)
    store = prepare("criteo", [raw], tmp_path / "s", split="sequential", min_count=1,
                    progress=False).store
    enc = encode_file(store, raw)
    assert enc.X.dtype == np.int32 and enc.X.shape == (400, 39)
    assert np.array_equal(enc.X[:320], store.split("train")[0])
    assert np.array_equal(enc.labels, np.array([float(r[0]) for r in rows], np.float32))
    # a Kaggle test.txt-like file: no label column; unseen values -> OOV
    new = [r[1:] for r in criteo_rows(10, seed=5)]
    new[0][13] = "deadbeef"
    t = write_tsv(tmp_path / "test.txt", new)
    e2 = encode_file(store, t)
    assert e2.labels is None and e2.X.shape == (10, 39)
    assert e2.X[0, 13] == store.feature_map.fields[13].oov_index
    bad = write_tsv(tmp_path / "bad.txt", [r[:20] for r in rows[:5]])
    with pytest.raises(DataError, match=r"bad\.txt:1: expected 40 columns, found 20"):
        encode_file(store, bad)


def test_avazu_keep_id(tmp_path):
    rows = avazu_rows(200)
    raw = write_tsv(tmp_path / "a.csv", rows, sep=",", header=AVAZU_COLUMNS)
    store = prepare("avazu", [raw], tmp_path / "s", progress=False).store
    test_cols = [c for c in AVAZU_COLUMNS if c != "click"]
    test_rows = [[r[0]] + r[2:] for r in rows[:50]]
    t = write_tsv(tmp_path / "test.csv", test_rows, sep=",", header=test_cols)
    enc = encode_file(store, t, keep=["id"])
    assert enc.labels is None and enc.X.shape == (50, 24)
    assert enc.kept["id"].tolist() == [r[0] for r in rows[:50]]
    with pytest.raises(DataError, match="no column 'uid' to keep"):
        encode_file(store, t, keep=["uid"])
    wrong = write_tsv(tmp_path / "w.csv", [r[:-1] for r in rows[:5]], sep=",",
                      header=AVAZU_COLUMNS[:-1])
    with pytest.raises(DataError, match=r"w\.csv:1: missing column 'C21'"):
        encode_file(store, wrong)


def test_skip_bad_rows(tmp_path):
    rows = criteo_rows(100)
    raw = write_tsv(tmp_path / "c.txt", rows)
    store = prepare("criteo", [raw], tmp_path / "s", progress=False).store
    rows[4][2] = "oops"
    bad = write_tsv(tmp_path / "b.txt", rows)
    with pytest.raises(DataError, match=r"b\.txt:5: column I2"):
        encode_file(store, bad)
    enc = encode_file(store, bad, on_bad_rows="skip")
    assert enc.X.shape == (99, 39) and enc.rejected == 1 and enc.rejected_lines == [5]
