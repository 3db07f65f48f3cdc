"""Each worker's part of every global batch, read directly from the memory-mapped store."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from mutualctr.data._threads import background
from mutualctr.distributed.context import shard_bounds


class ShardedBatches:
    """The batches of a :class:`~mutualctr.data.loader.BatchLoader`, cut for one data worker.

    Global batch ``k`` of epoch ``e`` is the loader's: rows ``sort(perm[k*B:(k+1)*B])`` with
    ``perm = loader.permutation(e)`` (a pure function of ``(seed, e)``), so every worker walks
    the same global order. Worker ``part`` of ``parts`` reads only its contiguous slice
    ``[rows*part//parts, rows*(part+1)//parts)`` of it. ``epoch`` yields
    ``(ids, labels, global_rows)``.
    """

    def __init__(self, loader, part: int, parts: int):
        self.loader, self.part, self.parts = loader, part, parts

    def __len__(self) -> int:
        return len(self.loader)

    def _read(self, sel) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = self.loader.X, self.loader.y
        if isinstance(X, torch.Tensor):
            if isinstance(sel, slice):
                return X[sel].long(), y[sel].float()
            t = torch.from_numpy(sel)
            return X.index_select(0, t).long(), y.index_select(0, t).float()
        return (torch.from_numpy(np.asarray(X[sel], dtype=np.int64)),
                torch.from_numpy(np.array(y[sel], dtype=np.float32, copy=True)))

    def _batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        ld = self.loader
        perm = ld.permutation(epoch) if ld.shuffle else None
        n, bs = ld.rows, ld.batch_size
        for k in range(start_batch, len(ld)):
            a, b = k * bs, min(n, (k + 1) * bs)
            lo, hi = shard_bounds(b - a, self.part, self.parts)
            sel = slice(a + lo, a + hi) if perm is None else np.sort(perm[a:b])[lo:hi]
            ids, labels = self._read(sel)
            yield ids, labels, b - a

    def epoch(self, e: int, start_batch: int = 0):
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        gen = self._batches(e, start_batch)
        return background(gen, self.loader.prefetch, "mutualctr-shard") if self.loader.prefetch > 0 else gen
