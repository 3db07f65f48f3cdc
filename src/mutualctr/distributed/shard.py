"""Each worker's part of every global batch, read directly from the memory-mapped store."""

from __future__ import annotations

from typing import Iterator

import torch

from mutualctr.data._threads import background
from mutualctr.data.loader import read_batch, read_rows
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

    def _batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        ld = self.loader
        perm = ld.permutation(epoch) if ld.shuffle else None
        for k in range(start_batch, len(ld)):
            rows = ld.batch_rows(k, perm)
            n = (rows.stop - rows.start) if isinstance(rows, slice) else len(rows)
            lo, hi = shard_bounds(n, self.part, self.parts)
            sel = slice(rows.start + lo, rows.start + hi) if isinstance(rows, slice) else rows[lo:hi]
            if ld.arrays is not None:  # a store with list or dense fields: its Batch
                b = read_batch(ld.arrays, sel)
                yield b, b.labels, n
            else:
                ids, labels = read_rows(ld.X, ld.y, sel)
                yield ids, labels, n

    def epoch(self, e: int, start_batch: int = 0):
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        gen = self._batches(e, start_batch)
        return background(gen, self.loader.prefetch, "mutualctr-shard") if self.loader.prefetch > 0 else gen
