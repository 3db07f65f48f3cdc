"""prepare() on the real samples in ../shared/data (skipped when absent; never copied here)."""

from __future__ import annotations

import numpy as np
import pytest

from mutualctr.data.encode import encode_file
from mutualctr.data.prepare import prepare
from mutualctr.resources import schema_path

from .helpers import AVAZU_DIR, CRITEO_REAL, SHARED_DATA

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")]


def test_criteo_137k(tmp_path):
    r = prepare("criteo", [CRITEO_REAL], tmp_path / "c", progress=False)
    s = r.summary
    assert sum(s.rows.values()) == 137_139 and s.rejected == 0
    assert s.rows["train"] == 109_711
    for split in ("train", "dev", "test"):
        assert 0.24 < s.click_rate[split] < 0.27
    fm = r.store.feature_map
    assert all(f.min_count == 10 for f in fm.fields)
    assert 10_000 < fm.num_features < 30_000
    assert s.vocab_size["C20"] == 5  # 3 values + OOV + missing
    pos = sum(r.store.split(n)[1].sum() for n in ("train", "dev", "test"))
    assert pos == 35_213  # the README's positives
    again = prepare("criteo", [CRITEO_REAL], tmp_path / "c", progress=False)
    assert again.reused


def test_criteo_sequential_matches_file_order(tmp_path):
    store = prepare("criteo", [CRITEO_REAL], tmp_path / "c", split="sequential",
                    progress=False).store
    enc = encode_file(store, CRITEO_REAL)
    n_train = store.rows("train")
    assert np.array_equal(store.split("train")[0], enc.X[:n_train])
    assert np.array_equal(store.split("test")[0], enc.X[-store.rows("test"):])


@pytest.mark.parametrize("name,rows", [("avazu_train_head10k.csv", 9_999),
                                       ("avazu_multiday6k.csv", 6_000),
                                       ("avazu_sample_deepctr.txt", 100)])
def test_avazu_samples(tmp_path, name, rows):
    r = prepare("avazu", [AVAZU_DIR / name], tmp_path / "a", progress=False)
    assert sum(r.summary.rows.values()) == rows and r.summary.rejected == 0
    names = [f.name for f in r.store.feature_map.fields]
    assert names[:3] == ["hour.hour_of_day", "hour.weekday", "hour.weekend"] and len(names) == 24


def test_avazu_noheader_schema_equals_builtin(tmp_path):
    f = AVAZU_DIR / "avazu_multiday6k.csv"
    a = prepare("avazu", [f], tmp_path / "a", progress=False).store
    b = prepare(schema_path("avazu_noheader"), [f], tmp_path / "b", progress=False).store
    for s in ("train", "dev", "test"):
        assert np.array_equal(a.split(s)[0], b.split(s)[0])
    X = np.concatenate([a.split(s)[0] for s in ("train", "dev", "test")])
    hours = a.vocab("hour.hour_of_day").to_pylist()
    assert set(hours) <= {0, 6, 16, 21}  # 14102100, 14102706, 14102816, 14102221
    wd = a.vocab("hour.weekday").to_pylist()
    assert set(wd) <= {0, 1, 2}  # Oct 21 Tue, 22 Wed, 27 Mon, 28 Tue
    assert X.shape == (6000, 24)


def test_criteo_csv_with_header_user_schema(tmp_path):
    r = prepare(schema_path("criteo_csv"), [SHARED_DATA / "criteo" / "criteo_sample_deepctr.txt"],
                tmp_path / "c", progress=False)
    assert sum(r.summary.rows.values()) == 200
    assert r.store.feature_map.dataset == "criteo_csv"
