"""prepare --vocab-from: new rows encoded with an existing store's fields and vocabularies."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from mutualctr.config import ConfigError
from mutualctr.data.encode import encode_file
from mutualctr.data.prepare import prepare
from mutualctr.data.store import SPLITS, Store, vocab_fingerprint
from mutualctr.errors import StoreError

from .helpers import criteo_rows, write_tsv

SCHEMA = """name: tiny
format: csv
header: true
label: label
categorical: [a]
numeric: [n]
min_count: 2
"""

# sequential split of 10 rows: rows 0-7 train, 8 dev, 9 test
PARENT = """label,a,n
1,x,1
0,y,5
1,x,
0,z,100
1,y,5
0,x,3
1,,1
0,w,10
1,q,7
0,x,1
"""
# Train counts, by hand. a: x 3, y 2, z 1, w 1 (q only in dev); min count 2 keeps [x, y]:
# x -> 2, y -> 3 (OOV 0, missing 1), vocab_size 4, offset 0.
# n, bucketed (v > 2: floor(ln(v)^2), else v): 1->1, 5->2, 100->21, 3->1, 10->5; counts
# bucket 1: 3 (1, 3, 1), bucket 2: 2, bucket 21: 1, bucket 5: 1: keeps [1, 2]: 1 -> 2, 2 -> 3,
# vocab_size 4, offset 4 (global: OOV 4, missing 5, bucket 1 -> 6, bucket 2 -> 7).

CHILD = """label,a,n
1,y,5
0,z,100
1,new,4
0,,
1,x,1
0,x,2
1,w,1000
0,y,-1
1,x,10
0,y,3
"""
CHILD_IDS = [
    [3, 7],  # y; 5 -> bucket 2
    [0, 4],  # z was rare in the parent -> OOV; 100 -> bucket 21, rare -> OOV
    [0, 6],  # unseen value -> OOV; 4 -> floor(ln(4)^2) = 1, a kept bucket
    [1, 5],  # missing, missing
    [2, 6],  # x; 1
    [2, 7],  # x; 2 -> bucket 2
    [0, 4],  # w rare -> OOV; 1000 -> bucket 47, never seen -> OOV
    [3, 4],  # y; -1 -> bucket -1, never seen -> OOV
    [2, 4],  # (dev) x; 10 -> bucket 5, rare -> OOV
    [3, 6],  # (test) y; 3 -> bucket 1
]
CHILD_LABELS = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]


@pytest.fixture
def tiny(tmp_path):
    schema = tmp_path / "tiny.yaml"
    schema.write_text(SCHEMA)
    (tmp_path / "parent.csv").write_text(PARENT)
    (tmp_path / "child.csv").write_text(CHILD)
    parent = prepare(schema, [tmp_path / "parent.csv"], tmp_path / "P", split="sequential", progress=False)
    return tmp_path, schema, parent.store


def _all_rows(store: Store) -> tuple[np.ndarray, np.ndarray]:
    parts = [store.split(s) for s in SPLITS]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_seen_values_keep_the_parents_ids_unseen_ones_get_oov(tiny):
    root, schema, parent = tiny
    assert parent.vocab("a").to_pylist() == ["x", "y"] and parent.vocab("n").to_pylist() == [1, 2]
    assert [(f.offset, f.vocab_size) for f in parent.feature_map.fields] == [(0, 4), (4, 4)]
    r = prepare(schema, [root / "child.csv"], root / "C", split="sequential", vocab_from=root / "P",
                progress=False)
    child = r.store
    X, y = _all_rows(child)
    assert X.tolist() == CHILD_IDS
    assert y.tolist() == CHILD_LABELS
    assert [child.rows(s) for s in SPLITS] == [8, 1, 1]
    # the same field layout and vocabularies (values and the parent's train counts)
    fm, pfm = child.feature_map, parent.feature_map
    assert fm.fields == pfm.fields and fm.num_features == pfm.num_features == 8
    for i in range(fm.num_fields):
        assert child.vocab_table(i).equals(parent.vocab_table(i))
    # predict's encoder reads the new file the same way
    assert encode_file(parent, root / "child.csv").X.tolist() == CHILD_IDS


def test_fingerprints_record_the_parent(tiny):
    root, schema, parent = tiny
    child = prepare(schema, [root / "child.csv"], root / "C", split="sequential", vocab_from=root / "P",
                    progress=False)
    own = prepare(schema, [root / "child.csv"], root / "own", split="sequential", min_count=1, progress=False)
    fm = child.store.feature_map
    assert fm.fingerprint not in (parent.fingerprint, own.store.fingerprint)
    assert fm.parent == {"path": str((root / "P").resolve()), "fingerprint": parent.fingerprint}
    assert fm.settings["vocab_from"] == {"fingerprint": parent.fingerprint,
                                         "vocab_fingerprint": parent.vocab_fingerprint}
    assert child.summary.parent == fm.parent
    # the vocabulary fingerprint: equal for parent and child, recorded by every store
    assert fm.vocab_fingerprint == parent.feature_map.vocab_fingerprint == child.summary.vocab_fingerprint
    assert own.store.feature_map.vocab_fingerprint not in (None, fm.vocab_fingerprint)
    assert own.store.feature_map.parent is None
    # it hashes the id mapping, not the history: the child's rows counted on their own with the
    # parent's min count 2 happen to keep the same values (a: x, y; n: buckets 1, 2)
    same = prepare(schema, [root / "child.csv"], root / "same", split="sequential", progress=False)
    assert same.store.vocab("a").to_pylist() == ["x", "y"] and same.store.vocab("n").to_pylist() == [1, 2]
    assert same.store.fingerprint != fm.fingerprint and same.store.vocab_fingerprint == fm.vocab_fingerprint
    on_disk = json.loads((root / "C" / "feature_map.json").read_text())
    assert on_disk["vocab_fingerprint"] == fm.vocab_fingerprint and on_disk["parent"] == fm.parent
    # the same inputs from the same parent reuse the child
    again = prepare(schema, [root / "child.csv"], root / "C", split="sequential", vocab_from=root / "P",
                    progress=False)
    assert again.reused and again.store.fingerprint == fm.fingerprint


def test_a_store_without_a_recorded_vocab_fingerprint_computes_the_same(tiny):
    root, _, parent = tiny
    recorded = parent.vocab_fingerprint
    path = root / "P" / "feature_map.json"
    d = json.loads(path.read_text())
    del d["vocab_fingerprint"], d["parent"]  # as written before they were recorded
    path.write_text(json.dumps(d))
    old = Store.open(root / "P")
    assert old.feature_map.vocab_fingerprint is None
    assert old.vocab_fingerprint == recorded


def test_the_vocab_fingerprint_follows_the_vocabulary(tiny):
    _, _, parent = tiny
    fm = parent.feature_map
    vocabs = [parent.vocab(i) for i in range(fm.num_fields)]
    base = vocab_fingerprint(fm.fields, vocabs, fm.schema)
    assert base == fm.vocab_fingerprint
    # the same values however stored: large strings, a slice, another integer width
    same = [pa.array(["q", "x", "y"]).slice(1).cast(pa.large_string()), vocabs[1].cast(pa.int32())]
    assert vocab_fingerprint(fm.fields, same, fm.schema) == base
    # one value more, other values, another order, another numeric rule: another fingerprint
    assert vocab_fingerprint(fm.fields, [pa.array(["x", "z"]), vocabs[1]], fm.schema) != base
    assert vocab_fingerprint(fm.fields, [pa.array(["y", "x"]), vocabs[1]], fm.schema) != base
    assert vocab_fingerprint(fm.fields, [pa.array(["xy"]), vocabs[1]], fm.schema) != \
        vocab_fingerprint(fm.fields, [pa.array(["x", "y"]), vocabs[1]], fm.schema)
    assert vocab_fingerprint(fm.fields, vocabs, {**fm.schema, "numeric_values": "number"}) != base


def test_a_random_split_child_of_criteo_rows(tmp_path):
    parent_raw = write_tsv(tmp_path / "day1.txt", criteo_rows(600, seed=0))
    child_raw = write_tsv(tmp_path / "day2.txt", criteo_rows(300, seed=1))
    parent = prepare("criteo", [parent_raw], tmp_path / "P", min_count=2, progress=False).store
    child = prepare("criteo", [child_raw], tmp_path / "C", vocab_from=tmp_path / "P", seed=3,
                    progress=False).store
    assert [child.rows(s) for s in SPLITS] == [240, 30, 30]
    assert child.feature_map.settings["min_count"] is None
    assert [f.min_count for f in child.feature_map.fields] == [f.min_count for f in parent.feature_map.fields]
    # each row of the child is the parent's encoding of that raw row (rows matched by split order)
    from mutualctr.data.prepare import assign_splits

    want = encode_file(parent, child_raw).X
    s = assign_splits(np.arange(300), "random", 3)
    for k, name in enumerate(SPLITS):
        np.testing.assert_array_equal(child.split(name)[0], want[s == k])
    # values the parent never kept are OOV, not new ids
    raw_c1 = [r[14] for r in criteo_rows(300, seed=1)]
    kept = set(parent.vocab("C1").to_pylist())
    f = parent.feature_map.field("C1")
    ids = want[:, 13]  # fields: I1..I13, then C1
    for v, g in zip(raw_c1, ids):
        assert g == (f.missing_index if v == "" else f.offset + 2 + sorted(kept).index(v) if v in kept
                     else f.oov_index)


def test_another_schema_or_a_min_count_is_refused(tiny):
    root, schema, _ = tiny
    other = root / "other.yaml"
    other.write_text(SCHEMA.replace("min_count: 2", "min_count: 2\nnumeric_values: number"))
    with pytest.raises(ConfigError, match=r"vocab_from .*P: was prepared with dataset 'tiny', whose schema "
                                          r"differs from .*other.yaml.* in numeric_values;"):
        prepare(other, [root / "child.csv"], root / "C", vocab_from=root / "P", progress=False)
    with pytest.raises(ConfigError, match="differs from 'criteo'"):
        prepare("criteo", [root / "child.csv"], root / "C", vocab_from=root / "P", progress=False)
    with pytest.raises(ConfigError, match="min_count: cannot be combined with vocab_from"):
        prepare(schema, [root / "child.csv"], root / "C", vocab_from=root / "P", min_count=1, progress=False)
    with pytest.raises(StoreError, match="is \\(or holds\\) the vocab_from store"):
        prepare(schema, [root / "child.csv"], root / "P", vocab_from=root / "P", overwrite=True, progress=False)
    with pytest.raises(StoreError, match="no such store"):
        prepare(schema, [root / "child.csv"], root / "C", vocab_from=root / "nope", progress=False)
    assert not (root / "C").exists()
    assert Store.open(root / "P").rows("train") == 8  # untouched


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mutualctr", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_vocab_from(tiny):
    root, schema, parent = tiny
    r = _cli("prepare", "--dataset", schema, "--input", root / "child.csv", "--out", root / "C",
             "--split", "sequential", "--vocab-from", root / "P", "--quiet")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())  # (rich wraps long lines)
    assert f"vocabularies of {(root / 'P').resolve()} (fingerprint {parent.fingerprint}); vocabulary " \
        f"fingerprint {parent.vocab_fingerprint}" in out
    assert _all_rows(Store.open(root / "C"))[0].tolist() == CHILD_IDS
    r = _cli("prepare", "--dataset", "avazu", "--input", root / "child.csv", "--out", root / "D",
             "--vocab-from", root / "P")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "differs from 'avazu'" in r.stderr
    assert not (root / "D").exists()
