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
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from mutualctr.data._threads import background


def read_rows(X, y, sel) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``sel`` (a slice, or ascending row indices) of a split: int64 ids (B, F), float32 labels (B,)."""
    return (torch.from_numpy(np.asarray(X[sel], dtype=np.int64)),
            torch.from_numpy(np.array(y[sel], dtype=np.float32, copy=True)))


class BatchLoader:
    def __init__(self, X, y, batch_size: int = 4000, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, prefetch: int = 0) -> None:
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.X, self.y = X, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prefetch = prefetch

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
        for k in range(start_batch, len(self)):
            yield read_rows(self.X, self.y, self.batch_rows(k, perm))

    def epoch(self, e: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start_batch..`` of epoch ``e``: (ids int64 (B, F), labels float32 (B,))."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        if self.prefetch <= 0:
            return self._batches(e, start_batch)
        return background(self._batches(e, start_batch), self.prefetch, "mutualctr-prefetch")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
