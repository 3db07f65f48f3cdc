"""prepare's value counting (_Counts): exact vocabularies whatever the merge schedule, and
held pairs bounded by the distinct values, not by the rows."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from mutualctr.data import reader as reader_mod
from mutualctr.data.prepare import _Counts, prepare

from .helpers import criteo_rows, write_tsv


def _chunks(rng: np.random.Generator, n_chunks: int, kind: str):
    """Chunk dictionaries like pass 1's: distinct values of a chunk (Zipf-ish, long tail, the
    same value in many chunks) with their train counts, some of them 0."""
    for _ in range(n_chunks):
        ranks = np.unique(np.minimum(rng.zipf(1.3, rng.integers(1, 400)), 5000))
        rng.shuffle(ranks)  # chunk dictionaries are in order of appearance, not sorted
        counts = rng.integers(0, 5, len(ranks))  # 0: the value occurs only in dev/test rows
        if kind == "string":
            values = pa.array([f"{r * 2654435761 % 2**32:08x}" for r in ranks.tolist()], pa.string())
        else:
            values = pa.array(ranks - 3, pa.int64())
        yield values, counts


@pytest.mark.parametrize("kind", ["string", "int"])
@pytest.mark.parametrize("merge_min", [1, 7, 1 << 16])
def test_counts_match_brute_force(kind, merge_min, monkeypatch):
    monkeypatch.setattr(_Counts, "MERGE_MIN", merge_min)
    rng = np.random.default_rng(3)
    c = _Counts(pa.string() if kind == "string" else pa.int64())
    brute: Counter = Counter()
    for values, counts in _chunks(rng, 300, kind):
        c.add_counts(values, counts)
        for v, n in zip(values.to_pylist(), counts.tolist()):
            brute[v] += n
        # pending pairs never exceed max(MERGE_MIN, merged rows) after an add
        assert c.pending_len < max(merge_min, c.merged.num_rows)
    # geometric merges: many with a floor of 1 pair, none before the end with the default
    if merge_min == 1:
        assert c.merges >= 10
    if merge_min == 1 << 16:
        assert c.merges == 0
    for min_count in (1, 2, 10):
        values, counts = c.vocabulary(min_count)
        want = sorted((v, n) for v, n in brute.items() if n >= min_count)
        assert values.to_pylist() == [v for v, _ in want]
        assert counts.to_pylist() == [n for _, n in want]
        assert values.type == (pa.string() if kind == "string" else pa.int64())


def test_counts_memory_is_bounded_by_distinct_values(monkeypatch):
    """Many chunks repeating the same few values: the held pairs stay ~distinct values, not
    ~chunks x values (the old fixed 1M-pair floor held every chunk's pairs)."""
    monkeypatch.setattr(_Counts, "MERGE_MIN", 64)
    c = _Counts(pa.int64())
    values = pa.array(np.arange(50), pa.int64())
    for _ in range(2000):
        c.add_counts(values, np.ones(50, np.int64))
        assert c.merged.num_rows + c.pending_len <= 2 * 64 + 50
    v, n = c.vocabulary(1)
    assert v.to_pylist() == list(range(50)) and set(n.to_pylist()) == {2000}


def test_store_independent_of_merge_schedule(tmp_path, monkeypatch):
    raw = write_tsv(tmp_path / "c.txt", criteo_rows(1500, seed=4))
    monkeypatch.setattr(reader_mod, "BLOCK_SIZE", 8192)  # many chunks
    a = prepare("criteo", [raw], tmp_path / "a", seed=1, min_count=2, progress=False).store
    monkeypatch.setattr(_Counts, "MERGE_MIN", 1)  # merge after every chunk
    b = prepare("criteo", [raw], tmp_path / "b", seed=1, min_count=2, progress=False).store
    assert a.feature_map.fingerprint == b.feature_map.fingerprint
    assert a.feature_map.to_json() == b.feature_map.to_json()
    for i in range(a.feature_map.num_fields):
        assert a.vocab(i).equals(b.vocab(i))
    for s in ("train", "dev", "test"):
        assert np.array_equal(a.split(s)[0], b.split(s)[0])
        assert np.array_equal(a.split(s)[1], b.split(s)[1])
