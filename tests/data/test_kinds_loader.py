"""The loader on stores with list and dense fields: typed Batches (issue 25); a store of one-id
fields keeps its ``(ids, labels)`` tuples, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mutualctr.data.loader import Batch, BatchLoader
from mutualctr.data.prepare import prepare
from mutualctr.data.store import Store

from . import kinds_cases as kc


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kinds_loader")
    schema, raw = kc.write(tmp, kc.rows(300, seed=5))
    store = prepare(schema, [raw], tmp / "st", progress=False).store
    return store.split_arrays("train")


@pytest.mark.parametrize("shuffle,prefetch", [(False, 0), (True, 0), (True, 2)])
def test_batches_are_typed_and_equal_the_arrays(arrays, shuffle, prefetch):
    ld = BatchLoader.for_split(arrays, batch_size=50, shuffle=shuffle, seed=7, prefetch=prefetch)
    plain = BatchLoader(arrays.X, arrays.y, batch_size=50, shuffle=shuffle, seed=7)
    seen = []
    for b, (ids, labels) in zip(ld.epoch(1), plain.epoch(1), strict=True):
        assert isinstance(b, Batch) and len(b) == len(labels)
        assert torch.equal(b.ids, ids) and torch.equal(b.labels, labels)  # the same rows
        assert b.ids.dtype == torch.int64 and b.labels.dtype == torch.float32
        assert set(b.bags) == {"genres", "hist"} and b.bags["hist"].shape == (len(b), 3)
        assert b.bags["genres"].dtype == torch.int64 and b.values.shape == (len(b), 3)
        assert b.values.dtype == torch.float32 and b.missing.dtype == torch.bool
        for name in b.bags:
            m = b.mask(name)
            assert torch.equal(b.lengths[name], m.sum(1)) and bool((b.lengths[name] >= 1).all())
            assert torch.equal(m, torch.arange(m.shape[1]) < b.lengths[name][:, None])  # left-aligned
        seen.append(b)
    rows = ld.permutation(1)
    order = np.concatenate([np.sort(rows[k * 50:(k + 1) * 50]) for k in range(len(ld))])
    assert np.array_equal(torch.cat([b.bags["hist"] for b in seen]).numpy(), arrays.bags["hist"][order])
    assert np.array_equal(torch.cat([b.values for b in seen]).numpy(), arrays.values[order])
    assert np.array_equal(torch.cat([b.missing for b in seen]).numpy(), arrays.missing[order])


def test_resume_replays_the_same_batches(arrays):
    ld = BatchLoader.for_split(arrays, batch_size=40, shuffle=True, seed=3)
    full = list(ld.epoch(2))
    tail = list(ld.epoch(2, start_batch=3))
    assert len(tail) == len(full) - 3
    for a, b in zip(full[3:], tail):
        assert torch.equal(a.bags["genres"], b.bags["genres"]) and torch.equal(a.values, b.values)


def test_one_id_store_keeps_the_tuple_path(tiny_store):
    a = Store.open(tiny_store).split_arrays("train")
    ld = BatchLoader.for_split(a, batch_size=1000, shuffle=True, seed=1)
    assert ld.arrays is None
    for (i1, l1), (i2, l2) in zip(ld.epoch(0), BatchLoader(a.X, a.y, 1000, shuffle=True, seed=1).epoch(0),
                                  strict=True):
        assert torch.equal(i1, i2) and torch.equal(l1, l2)


def test_mismatched_arrays_are_refused(arrays):
    with pytest.raises(ValueError, match="hist has 3 rows but y has"):
        BatchLoader(arrays.X, arrays.y, bags={"hist": arrays.bags["hist"][:3]})
    with pytest.raises(ValueError, match="values and missing go together"):
        BatchLoader(arrays.X, arrays.y, values=arrays.values)
