"""Batches of a store split as torch tensors, deterministic given (seed, epoch).

- ``shuffle=False``: contiguous slices of the (memory-mapped) matrix, in order; no index
  array, each batch is one int32 -> int64 conversion of a slice.
- ``shuffle=True``: the epoch's permutation is ``numpy.random.default_rng([seed, epoch])
  .permutation(rows)``, so it is a pure function of (seed, epoch): reshuffled every epoch, and
  ``epoch(e, start_batch=k)`` yields exactly batches k.. of the uninterrupted epoch (resume).
  Each batch is one fancy-indexing gather; within a batch the rows are in ascending row order
  (better locality on a memory map; the batch's *set* of rows is the permutation's slice).
- ``prefetch=N``: a background thread prepares up to N batches ahead.

No per-row Python anywhere. ``X``/``y`` are numpy arrays (the store's memory maps);
:func:`read_rows` is the one gather, also used by the data-parallel shards
(:mod:`mutualctr.distributed.shard`).

A store with multi-valued, sequence or dense fields (``BatchLoader.for_split``, or the ``bags``,
``values`` and ``missing`` arguments) yields one typed :class:`Batch` per step instead, gathered
by :func:`read_batch` from the same rows; a store of one-id fields only keeps the
``(ids, labels)`` tuples above, on the very same code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from mutualctr.data._threads import background
from mutualctr.data.store import PAD, SplitArrays


@dataclass(frozen=True)
class Batch:
    """One batch of a store with list or dense fields (rows in the loader's order)."""

    ids: torch.Tensor  # int64 (B, len(id_fields)) global ids of the one-id fields
    bags: dict[str, torch.Tensor]  # list field name -> int64 (B, max_length), left-aligned, PAD after
    lengths: dict[str, torch.Tensor]  # list field name -> int64 (B,) items (>= 1: empty = [missing])
    values: torch.Tensor | None  # float32 (B, n_dense) dense values (0 where missing); None: none
    missing: torch.Tensor | None  # bool (B, n_dense) the value is missing; None: no dense fields
    labels: torch.Tensor  # float32 (B,) 0/1
    #: scratch space of the models for this batch (the ids every table looks up, built once and
    #: shared by every table and group member: mutualctr.models.lookup_ids)
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def mask(self, name: str) -> torch.Tensor:
        """bool (B, max_length): the real items of list field ``name`` (False on the pad)."""
        return self.bags[name] != PAD

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """The batch on ``device`` (itself when it is there already)."""
        if self.labels.device == torch.device(device):
            return self

        def move(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(move(self.ids), {k: move(v) for k, v in self.bags.items()},
                     {k: move(v) for k, v in self.lengths.items()}, move(self.values),
                     move(self.missing), move(self.labels))

    def __len__(self) -> int:
        return len(self.labels)


def read_batch(arrays: SplitArrays, sel) -> Batch:
    """Rows ``sel`` (a slice, or ascending row indices) of every array of a split as a Batch."""
    ids, labels = read_rows(arrays.X, arrays.y, sel)
    bags, lengths = {}, {}
    for name, b in arrays.bags.items():
        rows = np.asarray(b[sel], dtype=np.int64)
        bags[name] = torch.from_numpy(rows)
        lengths[name] = torch.from_numpy(np.count_nonzero(rows != PAD, axis=1).astype(np.int64))
    values = missing = None
    if arrays.values is not None:
        values = torch.from_numpy(np.array(arrays.values[sel], dtype=np.float32, copy=True))
        missing = torch.from_numpy(np.array(arrays.missing[sel], dtype=np.bool_, copy=True))
    return Batch(ids, bags, lengths, values, missing, labels)


def inputs_and_labels(batch) -> tuple[Any, torch.Tensor]:
    """``(model input, labels)`` of what a loader yields: an ``(ids, labels)`` tuple as it is,
    a :class:`Batch` as ``(batch, batch.labels)`` (the models read the whole batch)."""
    return batch if isinstance(batch, tuple) else (batch, batch.labels)


def read_inputs(X, sel):
    """Rows ``sel`` of a split's model input, as a model reads them: int64 ids ``(B, F)`` of an
    id matrix, or a :class:`Batch` of a :class:`SplitArrays` (``Store.split`` of a store with
    list or dense fields)."""
    if isinstance(X, SplitArrays):
        return read_batch(X, sel)
    return torch.from_numpy(np.asarray(X[sel], dtype=np.int64))


def read_rows(X, y, sel) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``sel`` (a slice, or ascending row indices) of a split: int64 ids (B, F), float32 labels (B,)."""
    return (torch.from_numpy(np.asarray(X[sel], dtype=np.int64)),
            torch.from_numpy(np.array(y[sel], dtype=np.float32, copy=True)))


class BatchLoader:
    """Batches of one split: ``(ids, labels)`` tuples, or :class:`Batch` es when ``bags`` or
    ``values`` (with ``missing``) are given (:meth:`for_split` passes a store's)."""

    def __init__(self, X, y, batch_size: int = 4000, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, prefetch: int = 0, *, bags: dict[str, Any] | None = None,
                 values=None, missing=None) -> None:
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if (values is None) != (missing is None):
            raise ValueError("values and missing go together")
        for name, a in [*(bags or {}).items(), ("values", values), ("missing", missing)]:
            if a is not None and len(a) != len(y):
                raise ValueError(f"{name} has {len(a)} rows but y has {len(y)}")
        if isinstance(X, SplitArrays):  # Store.split of a store with list or dense fields
            X, bags, values, missing = X.X, X.bags, X.values, X.missing
        self.X, self.y = X, y
        #: the split's arrays when it has list or dense fields, else None (the tuple path)
        self.arrays = (SplitArrays(X, y, dict(bags), values, missing)
                       if bags or values is not None else None)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prefetch = prefetch

    @classmethod
    def for_split(cls, arrays: SplitArrays, batch_size: int = 4000, **kw) -> "BatchLoader":
        """The loader of a store's split (``Store.split_arrays(name)``): Batches when it has list
        or dense fields, ``(ids, labels)`` tuples otherwise."""
        return cls(arrays.X, arrays.y, batch_size, bags=arrays.bags, values=arrays.values,
                   missing=arrays.missing, **kw)

    @property
    def rows(self) -> int:
        return len(self.y)

    def __len__(self) -> int:
        n, b = self.rows, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def permutation(self, epoch: int) -> np.ndarray:
        """The row order of ``epoch`` (identity without shuffle)."""
        if not self.shuffle:
            return np.arange(self.rows)
        return np.random.default_rng([self.seed, epoch]).permutation(self.rows)

    def batch_rows(self, k: int, perm: np.ndarray | None):
        """The rows of batch ``k`` of an epoch whose ``permutation`` is ``perm`` (None: in order):
        a slice, or the batch's share of the permutation in ascending row order."""
        a, b = k * self.batch_size, min(self.rows, (k + 1) * self.batch_size)
        return slice(a, b) if perm is None else np.sort(perm[a:b])

    def _batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = self.permutation(epoch) if self.shuffle else None
        if self.arrays is not None:
            for k in range(start_batch, len(self)):
                yield read_batch(self.arrays, self.batch_rows(k, perm))
            return
        for k in range(start_batch, len(self)):
            yield read_rows(self.X, self.y, self.batch_rows(k, perm))

    def epoch(self, e: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start_batch..`` of epoch ``e``: (ids int64 (B, F), labels float32 (B,)), or
        :class:`Batch` es for a split with list or dense fields."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        if self.prefetch <= 0:
            return self._batches(e, start_batch)
        return background(self._batches(e, start_batch), self.prefetch, "mutualctr-prefetch")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
