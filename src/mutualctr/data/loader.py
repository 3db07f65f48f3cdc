"""Batches of a store split as torch tensors, deterministic given (seed, epoch).

- ``shuffle=False``: contiguous slices of the (memory-mapped) matrix, in order; no index
  array, each batch is one int32 -> int64 conversion of a slice.
- ``shuffle=True``: the epoch's permutation is ``numpy.random.default_rng([seed, epoch])
  .permutation(rows)``, so it is a pure function of (seed, epoch): reshuffled every epoch, and
  ``epoch(e, start_batch=k)`` yields exactly batches k.. of the uninterrupted epoch (resume).
  Each batch is one fancy-indexing gather; within a batch the rows are in ascending row order
  (better locality on a memory map; the batch's *set* of rows is the permutation's slice).
- ``prefetch=N``: a background thread prepares up to N batches ahead.

No per-row Python anywhere. ``X``/``y`` may be numpy arrays (memory maps) or torch tensors
(see :func:`preload`, which loads a split into memory as int64/float32 tensors once, the
fastest option when the split fits in RAM).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from mutualctr.data._threads import background


def preload(X, y) -> tuple[torch.Tensor, torch.Tensor]:
    """A split in memory as (int64 (rows, F), float32 (rows,)) tensors."""
    return (torch.from_numpy(np.array(X, dtype=np.int64, copy=True)),
            torch.from_numpy(np.array(y, dtype=np.float32, copy=True)))


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
        self._torch = isinstance(X, torch.Tensor)
        if self._torch:
            self._Xn, self._yn = X.detach().cpu().numpy(), y.detach().cpu().numpy()

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

    def _batch(self, a: int, b: int, perm: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        if perm is None:
            xs, ys = self.X[a:b], self.y[a:b]
        else:
            idx = np.sort(perm[a:b])
            if self._torch:  # numpy's gather is far faster than index_select on CPU here
                return (torch.from_numpy(np.take(self._Xn, idx, axis=0)).long(),
                        torch.from_numpy(np.take(self._yn, idx)).float())
            xs, ys = self.X[idx], self.y[idx]
        if self._torch:
            return xs.long(), ys.float()
        return (torch.from_numpy(np.asarray(xs, dtype=np.int64)),
                torch.from_numpy(np.array(ys, dtype=np.float32, copy=True)))

    def _batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = self.permutation(epoch) if self.shuffle else None
        n, bs = self.rows, self.batch_size
        for k in range(start_batch, len(self)):
            yield self._batch(k * bs, min(n, (k + 1) * bs), perm)

    def epoch(self, e: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start_batch..`` of epoch ``e``: (ids int64 (B, F), labels float32 (B,))."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        if self.prefetch <= 0:
            return self._batches(e, start_batch)
        return background(self._batches(e, start_batch), self.prefetch, "mutualctr-prefetch")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
