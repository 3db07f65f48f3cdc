"""prepare(): schemas, splits, vocabularies (min count, OOV, missing), buckets, hour features."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mutualctr.data import reader as reader_mod
from mutualctr.data.encode import encode_file
from mutualctr.data.prepare import assign_splits, prepare
from mutualctr.data.schema import CRITEO_CAT, CRITEO_INT
from mutualctr.data.store import Store
from mutualctr.data.transform import bucket

from .helpers import avazu_rows, criteo_rows, write_tsv


def decode(store: Store, X: np.ndarray, field: str) -> list:
    """Raw token of each row's value in ``field`` ('<OOV>' / None for OOV / missing)."""
    fm = store.feature_map
    i = [f.name for f in fm.fields].index(field)
    info = fm.fields[i]
    vocab = store.vocab(i).to_pylist()
    out = []
    for g in np.asarray(X)[:, i].tolist():
        local = g - info.offset
        assert 0 <= local < info.vocab_size
        out.append("<OOV>" if local == 0 else None if local == 1 else vocab[local - 2])
    return out


def test_criteo_store_layout(tmp_path):
    raw = write_tsv(tmp_path / "c.txt", criteo_rows(500))
    r = prepare("criteo", [raw], tmp_path / "store", min_count=1, progress=False)
    assert not r.reused
    store = r.store
    fm = store.feature_map
    assert [f.name for f in fm.fields] == CRITEO_INT + CRITEO_CAT
    assert {f.kind for f in fm.fields[:13]} == {"numeric-bucketed"}
    assert {f.kind for f in fm.fields[13:]} == {"categorical"}
    assert fm.num_fields == 39 and store.fingerprint == fm.fingerprint
    assert fm.num_features == sum(f.vocab_size for f in fm.fields)
    assert [store.rows(s) for s in ("train", "dev", "test")] == [400, 50, 50]
    for s in ("train", "dev", "test"):
        X, y = store.split(s)
        assert isinstance(X, np.memmap) and X.dtype == np.int32 and X.shape == (store.rows(s), 39)
        assert y.dtype == np.float32 and set(np.unique(y)) <= {0.0, 1.0}
        for j, f in enumerate(fm.fields):
            assert f.oov_index == f.offset and f.missing_index == f.offset + 1
            assert (X[:, j] >= f.offset).all() and (X[:, j] < f.offset + f.vocab_size).all()
        assert X.max() < fm.num_features
    s = r.summary
    assert s.rows == {"train": 400, "dev": 50, "test": 50} and s.rejected == 0
    assert set(s.vocab_size) == set(CRITEO_INT + CRITEO_CAT)
    assert abs(s.click_rate["train"] - store.split("train")[1].mean()) < 1e-9
    # every row lands in exactly one split: the splits together are the file's rows
    allX = encode_file(store, raw).X
    got = np.concatenate([store.split(n)[0] for n in ("train", "dev", "test")])
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, allX.tolist()))
    d = json.loads((store.path / "feature_map.json").read_text())
    assert d["format"] == "mutualctr-store" and d["num_features"] == fm.num_features


def test_log_squared_buckets():
    # floor(ln(v)^2) for v > 2, else v: hand-computed
    v = pa.array([3, 10, 100, 1000, 2, 1, 0, -1, -3, None, 20], pa.int64())
    assert bucket(v).to_pylist() == [1, 5, 21, 47, 2, 1, 0, -1, -3, None, 8]
    assert math.floor(math.log(1000) ** 2) == 47


def test_bucket_tokens_and_missing_in_store(tmp_path):
    values = ["3", "10", "100", "1000", "2", "1", "0", "-1", ""]
    rows = criteo_rows(len(values) * 30, seed=3)
    for i, r in enumerate(rows):
        r[1] = values[i % len(values)]
        r[14] = "" if i % 7 == 0 else r[14]  # C1 missing now and then
    raw = write_tsv(tmp_path / "b.txt", rows)
    store = prepare("criteo", [raw], tmp_path / "s", min_count=1, progress=False).store
    assert sorted(store.vocab("I1").to_pylist()) == [-1, 0, 1, 2, 5, 21, 47]
    X = encode_file(store, raw).X
    expect = {"3": 1, "10": 5, "100": 21, "1000": 47, "2": 2, "1": 1, "0": 0, "-1": -1, "": None}
    assert decode(store, X, "I1") == [expect[values[i % len(values)]] for i in range(len(rows))]
    c1 = decode(store, X, "C1")
    assert all(c1[i] is None for i in range(0, len(rows), 7))
    assert store.feature_map.field("C1").missing_index in X[::7, 13]


def test_min_count_oov_and_unseen(tmp_path):
    # user schema, sequential split: rows 0..79 train, 80..89 dev, 90..99 test
    vals = ["a"] * 50 + ["b"] + ["c"] * 20 + [""] * 9 + ["z"] * 5 + ["a"] * 5 + ["b"] * 10
    raw = tmp_path / "t.csv"
    raw.write_text("label,c1,c2\n" + "".join(f"{i % 2},{v},k{i % 3}\n" for i, v in enumerate(vals)))
    schema = tmp_path / "s.yaml"
    schema.write_text("name: tiny\nformat: csv\nlabel: label\ncategorical: [c1, c2]\nmin_count: 2\n"
                      "min_count_per_column: {c2: 100}\n")
    r = prepare(schema, [raw], tmp_path / "st", split="sequential", progress=False)
    store = r.store
    assert [store.rows(s) for s in ("train", "dev", "test")] == [80, 10, 10]
    assert store.vocab("c1").to_pylist() == ["a", "c"]  # b seen once in train -> OOV
    assert store.vocab("c2").to_pylist() == []  # per-column min count 100
    f = store.feature_map.field("c1")
    assert f.vocab_size == 4 and f.min_count == 2
    X = np.concatenate([store.split(s)[0] for s in ("train", "dev", "test")])
    assert decode(store, X, "c1") == [
        {"b": "<OOV>", "z": "<OOV>", "": None}.get(v, v) for v in vals]
    assert (X[:, 1] == store.feature_map.field("c2").oov_index).all()
    # --min-count overrides the schema's default but not per-column values
    r2 = prepare(schema, [raw], tmp_path / "st2", split="sequential", min_count=1, progress=False)
    assert r2.store.vocab("c1").to_pylist() == ["a", "b", "c"]
    assert r2.store.fingerprint != store.fingerprint


def test_random_split_deterministic_and_chunk_independent(tmp_path, monkeypatch):
    idx = np.arange(1003)
    full = assign_splits(idx, "random", 7)
    parts = np.concatenate([assign_splits(idx[a:a + 37], "random", 7) for a in range(0, 1003, 37)])
    assert np.array_equal(full, parts)
    assert np.bincount(full[:1000], minlength=3).tolist() == [800, 100, 100]
    assert (np.bincount(full[:1000].reshape(-1, 10)[:, :].ravel()) > 0).all()
    assert not np.array_equal(full, assign_splits(idx, "random", 8))
    seq = assign_splits(idx[:100], "sequential", 0, total=100)
    assert seq.tolist() == [0] * 80 + [1] * 10 + [2] * 10

    raw = write_tsv(tmp_path / "c.txt", criteo_rows(1000, seed=1))
    a = prepare("criteo", [raw], tmp_path / "a", seed=5, min_count=2, progress=False).store
    monkeypatch.setattr(reader_mod, "BLOCK_SIZE", 4096)  # many small pieces: same store
    b = prepare("criteo", [raw], tmp_path / "b", seed=5, min_count=2, progress=False).store
    c = prepare("criteo", [raw], tmp_path / "c", seed=6, min_count=2, progress=False).store
    for s in ("train", "dev", "test"):
        assert np.array_equal(a.split(s)[0], b.split(s)[0])
        assert np.array_equal(a.split(s)[1], b.split(s)[1])
    assert a.rows("train") == 800
    assert not np.array_equal(a.split("test")[0], c.split("test")[0])


def test_sequential_split_keeps_file_order(tmp_path):
    raw = write_tsv(tmp_path / "c.txt", criteo_rows(250, seed=2))
    store = prepare("criteo", [raw], tmp_path / "s", split="sequential", min_count=1,
                    progress=False).store
    allX = encode_file(store, raw).X
    assert [store.rows(s) for s in ("train", "dev", "test")] == [200, 25, 25]
    assert np.array_equal(store.split("train")[0], allX[:200])
    assert np.array_equal(store.split("dev")[0], allX[200:225])
    assert np.array_equal(store.split("test")[0], allX[225:])


def test_gzip_and_multiple_inputs(tmp_path):
    rows = criteo_rows(300, seed=4)
    plain = write_tsv(tmp_path / "all.txt", rows)
    p1 = write_tsv(tmp_path / "p1.txt.gz", rows[:120], gz=True)
    p2 = write_tsv(tmp_path / "p2.txt", rows[120:])
    a = prepare("criteo", [plain], tmp_path / "a", min_count=1, progress=False).store
    b = prepare("criteo", [p1, p2], tmp_path / "b", min_count=1, progress=False).store
    for s in ("train", "dev", "test"):
        assert np.array_equal(a.split(s)[0], b.split(s)[0])


def test_avazu_hour_features_and_header_detection(tmp_path):
    from mutualctr.data.schema import AVAZU_COLUMNS

    rows = avazu_rows(400)
    with_header = write_tsv(tmp_path / "h.csv", rows, sep=",", header=AVAZU_COLUMNS)
    no_header = write_tsv(tmp_path / "n.csv", rows, sep=",")
    a = prepare("avazu", [with_header], tmp_path / "a", min_count=1, progress=False).store
    b = prepare("avazu", [no_header], tmp_path / "b", min_count=1, progress=False).store
    names = [f.name for f in a.feature_map.fields]
    assert names[:3] == ["hour.hour_of_day", "hour.weekday", "hour.weekend"]
    assert "id" not in names and "click" not in names and len(names) == 24
    assert a.feature_map.field("hour.weekday").kind == "weekday"
    for s in ("train", "dev", "test"):
        assert np.array_equal(a.split(s)[0], b.split(s)[0])
    X = encode_file(a, with_header).X
    # 14102100: Tue 00h; 14102523: Sat 23h; 14102609: Sun 09h; 14103012: Thu 12h
    expect = [(0, 1, 0), (23, 5, 1), (9, 6, 1), (12, 3, 0)]
    got = list(zip(decode(a, X, "hour.hour_of_day"), decode(a, X, "hour.weekday"),
                   decode(a, X, "hour.weekend")))
    assert got == [expect[i % 4] for i in range(400)]
    assert a.feature_map.settings["min_count"] == 1
    assert prepare("avazu", [with_header], tmp_path / "c", progress=False).store \
        .feature_map.fields[5].min_count == 2  # Avazu default


USER_SCHEMA = """\
name: shop
format: {fmt}
separator: ";"
header: true
label: clicked
label_map: {{-1: 0, 1: 1}}
categorical: [user, item]
numeric: [price]
numeric_values: number
hour: [ts]
drop: [row_id]
"""


def _shop_rows(n: int) -> dict[str, list]:
    rng = np.random.default_rng(0)
    return {
        "row_id": [f"r{i}" for i in range(n)],
        "clicked": [str(int(x)) for x in rng.choice([-1, 1], n)],
        "user": [f"u{int(x)}" for x in rng.integers(0, 20, n)],
        "item": [None if i % 11 == 0 else f"i{int(x)}" for i, x in enumerate(rng.integers(0, 9, n))],
        "price": [None if i % 13 == 0 else float(round(x, 2)) for i, x in enumerate(rng.gamma(2, 30, n))],
        "ts": ["14102100", "14102523"] * (n // 2),
    }


def test_user_schema_csv_and_parquet(tmp_path):
    cols = _shop_rows(200)
    order = ["row_id", "clicked", "user", "item", "price", "ts"]
    text = ";".join(order) + "\n" + "".join(
        ";".join("" if cols[c][i] is None else str(cols[c][i]) for c in order) + "\n"
        for i in range(200))
    (tmp_path / "shop.csv").write_text(text)
    (tmp_path / "csv.yaml").write_text(USER_SCHEMA.format(fmt="csv"))
    (tmp_path / "pq.yaml").write_text(USER_SCHEMA.format(fmt="parquet"))
    t = pa.table({"row_id": cols["row_id"], "clicked": pa.array([int(x) for x in cols["clicked"]]),
                  "user": cols["user"], "item": cols["item"], "price": cols["price"],
                  "ts": pa.array([int(x) for x in cols["ts"]])})
    pq.write_table(t, tmp_path / "shop.parquet")
    a = prepare(tmp_path / "csv.yaml", [tmp_path / "shop.csv"], tmp_path / "a", min_count=1,
                progress=False)
    b = prepare(str(tmp_path / "pq.yaml"), [tmp_path / "shop.parquet"], tmp_path / "b",
                min_count=1, progress=False)
    fa = a.store.feature_map
    assert fa.dataset == "shop"
    assert [f.name for f in fa.fields] == ["user", "item", "price", "ts.hour_of_day", "ts.weekday",
                                           "ts.weekend"]
    assert fa.field("price").kind == "numeric-bucketed"
    for s in ("train", "dev", "test"):
        assert np.array_equal(a.store.split(s)[0], b.store.split(s)[0])
        assert np.array_equal(a.store.split(s)[1], b.store.split(s)[1])
    y = np.concatenate([a.store.split(s)[1] for s in ("train", "dev", "test")])
    assert y.sum() == sum(c == "1" for c in cols["clicked"])  # -1 -> 0, 1 -> 1
    X = encode_file(a.store, tmp_path / "shop.csv").X
    prices = decode(a.store, X, "price")
    vocab = set(a.store.vocab("price").to_pylist())
    for p, raw in zip(prices, cols["price"]):
        exp = None if raw is None else (math.floor(math.log(raw) ** 2) if raw > 2 else math.floor(raw))
        assert p == (exp if exp is None or exp in vocab else "<OOV>")  # OOV: only in dev/test


def test_trailing_blank_lines_are_not_rows(tmp_path):
    from mutualctr.data.prepare import count_lines

    rows = criteo_rows(30)
    raw = tmp_path / "c.txt"
    raw.write_text("\n".join("\t".join(r) for r in rows) + "\n\n\n")
    assert count_lines(raw) == 30 and count_lines(raw, block=7) == 30
    r = prepare("criteo", [raw], tmp_path / "s", split="sequential", progress=False)
    assert r.summary.rows == {"train": 24, "dev": 3, "test": 3}
