"""prepare on hashed, multi-valued, sequence and dense fields (issue 25): the store's arrays
against a pure-Python reading of the same small CSV (tests/data/kinds_cases.py)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mutualctr.data import reader as reader_mod
from mutualctr.data.prepare import prepare
from mutualctr.data.store import PAD, Store
from mutualctr.errors import StoreError

from . import kinds_cases as kc

N = 60  # rows; sequential split: train = the first 48


def _prep(tmp_path, table=None, out="st", **kw):
    schema, raw = kc.write(tmp_path, table or kc.rows(N))
    return prepare(schema, [raw], tmp_path / out, split="sequential", progress=False, **kw)


def test_layout_ids_and_feature_map(tmp_path):
    r = _prep(tmp_path)
    fm = r.store.feature_map
    assert [f.kind for f in fm.fields] == ["hashed", "categorical", "multi-valued", "sequence",
                                           "dense", "dense", "dense"]
    assert fm.id_fields == [0, 1] and fm.bag_fields == [2, 3] and fm.dense_fields == [4, 5, 6]
    assert fm.pad_index == PAD == 0
    user, item, genres, hist = fm.fields[:4]
    assert user.offset == 1  # global id 0 is the pad: no field owns it
    assert (user.vocab_size, item.offset) == (2 + 13, 1 + 15)
    assert (hist.offset, hist.vocab_size, hist.missing_index) == (item.offset, item.vocab_size, item.missing_index)
    assert hist.spec == {"max_length": 3, "separator": "|", "vocab_from": "item"}
    assert genres.spec == {"max_length": 2, "separator": "|", "pooling": "sum"}
    assert fm.num_features == fm.fields[-1].offset + 2
    assert r.store.vocab("hist").to_pylist() == r.store.vocab("item").to_pylist()
    train = r.store.split_arrays("train")
    assert train.X.shape == (48, 2) and train.bags["genres"].shape == (48, 2)
    assert train.bags["hist"].shape == (48, 3) and train.values.shape == (48, 3)
    assert train.missing.dtype == np.bool_ and train.X.dtype == np.int32
    files = sorted(p.name for p in r.store.path.iterdir())
    assert "train.bags.002.npy" in files and "test.missing.npy" in files and "dev.values.npy" in files
    d = json.loads((r.store.path / "feature_map.json").read_text())
    assert "spec" not in d["fields"][1] and d["fields"][0]["spec"]["hash"] == "xxh64"


def test_arrays_equal_pure_python_parse(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_mod, "BLOCK_SIZE", 512)  # several chunks
    table = kc.rows(N)
    r = _prep(tmp_path, table)
    fm, store = r.store.feature_map, r.store
    cols = {c: [row[i] for row in table] for i, c in enumerate(kc.COLUMNS)}
    user, item, genres = fm.fields[:3]
    items = kc.vocab(cols["item"][:48], listed=False)
    gvocab = kc.vocab(cols["genres"][:48], listed=True)
    assert store.vocab("item").to_pylist() == items and store.vocab("genres").to_pylist() == gvocab
    X = np.concatenate([store.split_arrays(s).X for s in ("train", "dev", "test")])
    bags = [store.split_arrays(s).bags for s in ("train", "dev", "test")]
    want_user = [user.missing_index if u == "" else kc.hashed_id(u, 13, user.offset) for u in cols["user"]]
    assert X[:, 0].tolist() == want_user

    def item_id(v):
        return item.offset + 2 + items.index(v) if v in items else item.oov_index

    assert X[:, 1].tolist() == [item_id(v) for v in cols["item"]]
    want_g = [kc.bag([genres.offset + 2 + gvocab.index(g) if g in gvocab else genres.oov_index
                      for g in kc.items(c)], 2, False, genres.missing_index) for c in cols["genres"]]
    assert np.concatenate([b["genres"] for b in bags]).tolist() == want_g
    want_h = [kc.bag([item_id(h) for h in kc.items(c)], 3, True, item.missing_index) for c in cols["hist"]]
    assert np.concatenate([b["hist"] for b in bags]).tolist() == want_h
    lists = r.summary.lists
    assert lists["genres"] == {"truncated": sum(len(kc.items(c)) > 2 for c in cols["genres"]),
                               "empty": sum(c == "" for c in cols["genres"])}
    assert lists["hist"]["truncated"] == sum(len(kc.items(c)) > 3 for c in cols["hist"]) > 0


def test_dense_transforms_against_numpy_on_train(tmp_path):
    table = kc.rows(N)
    store = _prep(tmp_path, table).store
    values = np.concatenate([store.split_arrays(s).values for s in ("train", "dev", "test")])
    missing = np.concatenate([store.split_arrays(s).missing for s in ("train", "dev", "test")])
    for j, (col, tr) in enumerate([("price", "standardize"), ("clicks", "log1p"), ("score", "none")]):
        cells = [row[kc.COLUMNS.index(col)] for row in table]
        want, miss = kc.dense(cells, tr, train=48)
        assert missing[:, j].tolist() == miss
        np.testing.assert_allclose(values[:, j], want, rtol=1e-6, atol=1e-6)
    # the statistics: numpy on the train split's present values only
    raw = np.array([float(r[5]) if r[5] else np.nan for r in table[:48]])
    spec = store.feature_map.fields[4].spec
    assert spec["mean"] == pytest.approx(np.nanmean(raw)) and spec["std"] == pytest.approx(np.nanstd(raw))
    assert values[:48, 0][~missing[:48, 0]].mean() == pytest.approx(0, abs=1e-6)


def test_hashed_ids_are_the_same_in_every_store(tmp_path):
    a = _prep(tmp_path, kc.rows(N, seed=3), out="a").store
    b = _prep(tmp_path, kc.rows(N, seed=4), out="b").store
    ua = {u: x for u, x in zip([r[1] for r in kc.rows(N, seed=3)], np.concatenate(
        [a.split_arrays(s).X[:, 0] for s in ("train", "dev", "test")]).tolist())}
    ub = {u: x for u, x in zip([r[1] for r in kc.rows(N, seed=4)], np.concatenate(
        [b.split_arrays(s).X[:, 0] for s in ("train", "dev", "test")]).tolist())}
    common = set(ua) & set(ub)
    assert len(common) > 5 and all(ua[u] == ub[u] for u in common)
    assert a.vocab("user").to_pylist() == []  # nothing counted


def test_parquet_list_columns_read_directly(tmp_path):
    table = kc.rows(N)
    csv_store = _prep(tmp_path, table).store
    cols = {c: [row[i] for row in table] for i, c in enumerate(kc.COLUMNS)}
    t = pa.table({
        "y": pa.array([int(v) for v in cols["y"]]),
        "user": pa.array([v or None for v in cols["user"]]),
        "item": pa.array([int(v) for v in cols["item"]]),
        "genres": pa.array([kc.items(c) for c in cols["genres"]], pa.list_(pa.string())),
        "hist": pa.array([[int(h) for h in kc.items(c)] or None for c in cols["hist"]], pa.list_(pa.int64())),
        **{c: pa.array([float(v) if v else None for v in cols[c]]) for c in ("price", "clicks", "score")},
    })
    pq.write_table(t, tmp_path / "d.parquet")
    (tmp_path / "p.yaml").write_text("format: parquet\n" + kc.SCHEMA)
    pstore = prepare(tmp_path / "p.yaml", [tmp_path / "d.parquet"], tmp_path / "pst",
                     split="sequential", progress=False).store
    for s in ("train", "dev", "test"):
        a, b = csv_store.split_arrays(s), pstore.split_arrays(s)
        assert np.array_equal(a.X, b.X)
        assert all(np.array_equal(a.bags[k], b.bags[k]) for k in a.bags)
        assert np.array_equal(a.missing, b.missing)
        np.testing.assert_allclose(a.values, b.values, rtol=1e-6)


def test_reuse_overwrite_fingerprint_and_open_checks(tmp_path):
    r = _prep(tmp_path)
    assert prepare(tmp_path / "s.yaml", [tmp_path / "d.csv"], tmp_path / "st", split="sequential",
                   progress=False).reused
    (tmp_path / "s.yaml").write_text(kc.SCHEMA.replace("max_length: 3", "max_length: 4"))
    with pytest.raises(StoreError, match="other inputs or settings"):
        prepare(tmp_path / "s.yaml", [tmp_path / "d.csv"], tmp_path / "st", split="sequential",
                progress=False)
    again = prepare(tmp_path / "s.yaml", [tmp_path / "d.csv"], tmp_path / "st", split="sequential",
                    progress=False, overwrite=True)
    assert again.store.fingerprint != r.store.fingerprint
    assert again.store.vocab_fingerprint != r.store.vocab_fingerprint
    assert again.store.split_arrays("dev").bags["hist"].shape == (6, 4)
    (tmp_path / "st" / "dev.bags.003.npy").unlink()
    with pytest.raises(StoreError, match=r"incomplete store \(missing dev\.bags\.003\.npy\)"):
        Store.open(tmp_path / "st")


def test_single_valued_store_arrays_are_plain(tiny_store):
    a = Store.open(tiny_store).split_arrays("train")
    assert a.plain and a.bags == {} and a.values is None
    assert Store.open(tiny_store).feature_map.pad_index is None


def _concat(store, part):
    arrays = [store.split_arrays(s) for s in ("train", "dev", "test")]
    if part == "bags":
        return {k: np.concatenate([a.bags[k] for a in arrays]) for k in arrays[0].bags}
    return np.concatenate([getattr(a, part) for a in arrays])


def test_encode_file_equals_prepare(tmp_path):
    """Raw rows encoded with a store's fields (predict's path) are the store's own rows: the
    same hashes, list lengths, vocabularies and dense statistics (sequential split: file order)."""
    from mutualctr.data.encode import encode_file

    r = _prep(tmp_path)
    enc = encode_file(r.store, tmp_path / "d.csv")
    assert np.array_equal(enc.X, _concat(r.store, "X")) and np.array_equal(enc.labels, _concat(r.store, "y"))
    bags = _concat(r.store, "bags")
    assert set(enc.bags) == {"genres", "hist"} and all(np.array_equal(enc.bags[k], bags[k]) for k in bags)
    assert np.array_equal(enc.values, _concat(r.store, "values"))
    assert np.array_equal(enc.missing, _concat(r.store, "missing"))


def test_vocab_from_reuses_every_kind(tmp_path):
    parent = _prep(tmp_path).store
    other = kc.rows(50, seed=9)
    other[0][4] = "1|2|3|4|5"  # a long history in the child
    schema, raw = kc.write(tmp_path, other, name="new.csv")
    child = prepare(schema, [raw], tmp_path / "child", split="sequential", progress=False,
                    vocab_from=tmp_path / "st").store
    fc, fp = child.feature_map, parent.feature_map
    assert [(f.offset, f.vocab_size, f.spec) for f in fc.fields] == [(f.offset, f.vocab_size, f.spec)
                                                                      for f in fp.fields]
    assert child.vocab_fingerprint == parent.vocab_fingerprint and child.fingerprint != parent.fingerprint
    assert fc.counts["lists"]["hist"]["truncated"] >= 1
    # the child's rows are what the parent's fields make of the new file (the parent's statistics)
    from mutualctr.data.encode import encode_file

    enc = encode_file(parent, raw)
    assert np.array_equal(_concat(child, "X"), enc.X)
    assert np.array_equal(_concat(child, "bags")["hist"], enc.bags["hist"])
    assert np.array_equal(_concat(child, "values"), enc.values)
    price = fp.field("price").spec
    want = (float(other[1][5]) - price["mean"]) / price["std"] if other[1][5] else 0.0
    assert _concat(child, "values")[1, 0] == pytest.approx(want, rel=1e-6)
    assert child.vocab("hist").to_pylist() == parent.vocab("item").to_pylist()


def test_split_gives_the_arrays_of_list_and_dense_stores_and_x_of_hashed_ones(tmp_path):
    store = _prep(tmp_path).store
    X, y = store.split("train")  # every array: the models read the whole batch
    arrays = store.split_arrays("train")
    assert len(X) == len(y) == 48 and np.array_equal(X.X, arrays.X) and np.array_equal(y, arrays.y)
    part = X[3:7]
    assert len(part) == 4 and np.array_equal(part.bags["hist"], arrays.bags["hist"][3:7])
    assert np.array_equal(part.missing, arrays.missing[3:7])
    assert store.positives("train") == int(arrays.y.sum())
    (tmp_path / "h.yaml").write_text("label: y\ncategorical: [item]\nhashed: {user: {buckets: 7}}\n"
                                     "drop: [genres, hist, price, clicks, score]\n")
    h = prepare(tmp_path / "h.yaml", [tmp_path / "d.csv"], tmp_path / "h", progress=False).store
    X, y = h.split("train")  # hashed ids are one-id fields: today's (X, y), every field a column
    assert h.feature_map.num_fields == 2 and X.shape == (len(y), 2)
    assert h.feature_map.pad_index is None and h.feature_map.fields[0].offset == 0
    assert X[:, 0].max() < 2 + 7 and X[:, 1].min() >= 9
