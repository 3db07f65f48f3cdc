"""BatchLoader: shapes, dtypes, coverage, determinism, per-epoch reshuffle, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mutualctr.data.loader import BatchLoader
from mutualctr.data.prepare import prepare

from .helpers import criteo_rows, write_tsv


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loader")
    raw = write_tsv(tmp / "c.txt", criteo_rows(1230))
    store = prepare("criteo", [raw], tmp / "store", min_count=1, progress=False).store
    return store.split("train")


def _rows(batches):
    return np.concatenate([ids.numpy() for ids, _ in batches])


@pytest.mark.parametrize("prefetch", [0, 2])
def test_shapes_dtypes_and_coverage(split, prefetch):
    X, y = split
    n = len(y)  # 984
    for shuffle in (False, True):
        loader = BatchLoader(X, y, batch_size=100, shuffle=shuffle, seed=3, prefetch=prefetch)
        assert len(loader) == 10
        batches = list(loader.epoch(0))
        assert len(batches) == 10
        for ids, labels in batches[:-1]:
            assert ids.dtype == torch.int64 and ids.shape == (100, 39)
            assert labels.dtype == torch.float32 and labels.shape == (100,)
        assert batches[-1][0].shape == (84, 39)
        got = _rows(batches)
        labels = np.concatenate([lab.numpy() for _, lab in batches])
        # every row exactly once, with its own label
        order = np.lexsort(got.T[::-1])
        ref = np.lexsort(np.asarray(X).T[::-1])
        assert np.array_equal(got[order], np.asarray(X)[ref])
        assert sorted(labels.tolist()) == sorted(np.asarray(y).tolist())
        if not shuffle:
            assert np.array_equal(got, np.asarray(X))
            assert np.array_equal(labels, np.asarray(y))
    assert n == 984


def test_drop_last(split):
    X, y = split
    loader = BatchLoader(X, y, batch_size=100, drop_last=True, shuffle=True)
    assert len(loader) == 9 and len(list(loader.epoch(0))) == 9


def test_determinism_reshuffle_and_resume(split):
    X, y = split
    a = BatchLoader(X, y, batch_size=64, shuffle=True, seed=11)
    b = BatchLoader(X, y, batch_size=64, shuffle=True, seed=11, prefetch=3)
    e0 = _rows(a.epoch(0))
    assert np.array_equal(e0, _rows(b.epoch(0)))  # same seed, same epoch -> same batches
    e1 = _rows(a.epoch(1))
    assert not np.array_equal(e0, e1)  # reshuffled each epoch
    other = BatchLoader(X, y, batch_size=64, shuffle=True, seed=12)
    assert not np.array_equal(e0, _rows(other.epoch(0)))
    # resume: epoch(e, start_batch=k) == batches k.. of the full epoch
    full = list(a.epoch(1))
    tail = list(b.epoch(1, start_batch=5))
    assert len(tail) == len(full) - 5
    for (fi, fl), (ti, tl) in zip(full[5:], tail):
        assert torch.equal(fi, ti) and torch.equal(fl, tl)
    assert list(a.epoch(1, start_batch=len(a))) == []
    # batch contents = the permutation's slices
    perm = a.permutation(1)
    assert np.array_equal(full[2][0].numpy(), np.asarray(X)[np.sort(perm[128:192])])


def test_prefetch_stops_early_and_propagates_errors(split):
    X, y = split
    loader = BatchLoader(X, y, batch_size=10, shuffle=True, prefetch=2)
    it = loader.epoch(0)
    next(it)
    it.close()  # abandons the epoch; the background thread ends

    class Broken:
        def __len__(self):
            return 20

        def __getitem__(self, k):
            raise OSError("disk gone")

    bad = BatchLoader(Broken(), np.zeros(20, np.float32), batch_size=5, prefetch=2)
    with pytest.raises(OSError, match="disk gone"):
        list(bad.epoch(0))
    with pytest.raises(ValueError):
        BatchLoader(X, y[:-1])
