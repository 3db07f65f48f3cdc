"""What the training loop carries from step to step, and the random-number state it resumes.

:class:`LoopState` is advanced by :class:`~mutualctr.training.trainer.Trainer` and saved in
every group checkpoint, so a resumed run continues with exactly the step, the batch of the
epoch, the patience count and the random streams of the uninterrupted one.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch


@dataclass
class LoopState:
    """Where the loop is: the global step, the epoch and the batch within it, the evaluations
    since the last improvement of any member (early stopping), the training seconds so far,
    and whether the run is finished (epochs done or patience exhausted)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    bad_evals: int = 0
    elapsed: float = 0.0
    done: bool = False
    # the evaluation window so far (loss sums, steps, rows, seconds) when checkpointed mid-epoch
    window: dict[str, Any] | None = None
    # each member's loss at the first step (the divergence check's reference)
    loss_base: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoopState":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def rng_state() -> dict[str, Any]:
    """torch, CUDA, numpy and Python random states as tensors and plain data (nothing that
    needs a pickle to load: see :mod:`mutualctr.training.rundir`)."""
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
