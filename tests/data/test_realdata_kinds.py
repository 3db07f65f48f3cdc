"""The shipped ml100k schema on ../shared/data/movielens/ml100k_ctr.csv.gz (issue 25): genres
multi-valued, history a 20-item sequence of item ids, release_year dense; a time split. Skipped
when the shared data is absent; the data is only read, never copied."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest

from mutualctr.data.loader import Batch, BatchLoader
from mutualctr.data.prepare import prepare

from .helpers import SHARED_DATA

ML100K = SHARED_DATA / "movielens" / "ml100k_ctr.csv.gz"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not ML100K.is_file(), reason=f"{ML100K} is absent")]


@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml100k") / "st"
    r = prepare("ml100k", [ML100K], out, split="sequential", progress=False)
    with gzip.open(ML100K, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    return r, rows


def test_shapes_and_summary(ml):
    r, rows = ml
    s, fm = r.summary, r.store.feature_map
    assert len(rows) == 100_000 and s.rows == {"train": 80_000, "dev": 10_000, "test": 10_000}
    assert [f.name for f in fm.fields] == ["user_id", "item_id", "gender", "occupation", "zip", "age",
                                           "release_year", "genres", "history"]
    assert fm.id_fields == [0, 1, 2, 3, 4, 5] and fm.pad_index == 0
    a = r.store.split_arrays("train")
    assert a.X.shape == (80_000, 6) and a.values.shape == (80_000, 1)
    assert a.bags["genres"].shape == (80_000, 6) and a.bags["history"].shape == (80_000, 20)
    assert r.store.split_arrays("test").bags["history"].shape == (10_000, 20)
    assert s.vocab_size["genres"] == 2 + 19  # u.genre's 19 genres occur in train ("unknown" too)
    assert s.lists == {"genres": {"truncated": 0, "empty": 0},
                       "history": {"truncated": 0, "empty": 943}}  # each user's first rating
    hist, item = fm.field("history"), fm.field("item_id")
    assert (hist.offset, hist.vocab_size) == (item.offset, item.vocab_size)


def _decode(store, field, ids):
    """Global ids of a list field -> its raw values ('<OOV>'/'<missing>'), the pad dropped."""
    info = store.feature_map.field(field)
    vocab = store.vocab(field).to_pylist()
    names = {info.oov_index: "<OOV>", info.missing_index: "<missing>"}
    return [names.get(i) or vocab[i - info.offset - 2] for i in ids if i != 0]


def test_hand_checked_rows(ml):
    r, rows = ml
    store = r.store
    a = store.split_arrays("train")
    # the file's first four rows: user 259 rates 255, 286, 298, 185
    assert _decode(store, "genres", a.bags["genres"][0]) == ["Comedy", "Romance"]
    assert _decode(store, "history", a.bags["history"][0]) == ["<missing>"]
    assert _decode(store, "history", a.bags["history"][2]) == ["255", "286"]
    assert _decode(store, "history", a.bags["history"][3]) == ["255", "286", "298"]
    assert _decode(store, "genres", a.bags["genres"][3]) == ["Horror", "Romance", "Thriller"]
    assert a.bags["history"][3].tolist()[3:] == [0] * 17
    item = store.feature_map.field("item_id")
    assert a.X[3, 1] == item.offset + 2 + store.vocab("item_id").to_pylist().index("185")
    # every 500th row of every split: the history (most recent last) and genres as in the file
    vocab = set(store.vocab("item_id").to_pylist())
    at = 0
    for split in ("train", "dev", "test"):
        b = store.split_arrays(split).bags
        for k in range(0, store.rows(split), 500):
            row = rows[at + k]
            want = [v if v in vocab else "<OOV>" for v in row["history"].split("|")] if row["history"] \
                else ["<missing>"]
            assert _decode(store, "history", b["history"][k]) == want
            assert _decode(store, "genres", b["genres"][k]) == row["genres"].split("|")
        at += store.rows(split)


def test_release_year_standardized_on_train_and_loader_batches(ml):
    r, rows = ml
    years = np.array([float(x["release_year"]) if x["release_year"] else np.nan for x in rows])
    v = np.concatenate([r.store.split_arrays(s).values[:, 0] for s in ("train", "dev", "test")])
    m = np.concatenate([r.store.split_arrays(s).missing[:, 0] for s in ("train", "dev", "test")])
    assert np.array_equal(m, np.isnan(years)) and m.sum() >= 1
    mean, std = np.nanmean(years[:80_000]), np.nanstd(years[:80_000])
    np.testing.assert_allclose(v[~m], (years[~m] - mean) / std, rtol=1e-5, atol=1e-5)
    b = next(iter(BatchLoader.for_split(r.store.split_arrays("train"), batch_size=256, shuffle=True)))
    assert isinstance(b, Batch) and b.bags["history"].shape == (256, 20) and b.ids.shape == (256, 6)
