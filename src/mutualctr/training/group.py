"""One vectorised forward for a group of same-architecture members (``torch.func.vmap``).

The loop path runs the N members one after another. This path runs their networks as one
batched call: each step the members' dense parameters are stacked into ``(N, ...)`` tensors
with ``torch.stack``, which is differentiable, so each member's gradient flows back into its
own parameters and everything else (optimizers, schedules, checkpoints, best states) stays
per member and unchanged. The embedding lookups stay per member and outside ``vmap``: they
are sparse row gathers whose fast backward produces row-wise gradients that ``vmap`` cannot
batch, and they cost no matmuls. Their outputs, ``(B, F, D)`` per member, are stacked to
``(N, B, F, D)`` and handed to the vectorised rest of the network in place of the tables.

What it saves is per-call overhead (kernel launches, small-matrix inefficiency), which is
what bounds a GPU step at CTR sizes. On a CPU whose cores each member's matmuls already fill,
it is about as fast as the loop or slower (``python -m benchmarks.bench_group``).

Limits: every member must have the same built-in model class (a user model may call its tables
in ways the stand-ins do not replay, e.g. a sequence lookup) and model config (seeds may differ), and
no BatchNorm (its running statistics are updated in place, which a stacked copy would lose);
other buffers (constant index tables) must be equal across members and enter unbatched.
Dropout draws a different mask per member (``randomness="different"``), as the loop does, but
not the same masks as the loop.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, vmap

from mutualctr.errors import TrainingError
from mutualctr.models import MODELS, FeatureEmbedding


class _Given(nn.Module):
    """Stands in for a table inside the vectorised call: returns what the lookup gave."""

    def __init__(self) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.value


class VectorisedGroup:
    """``__call__(ids (B, F)) -> [N tensors (B,)]``: the members' logits from one vmapped call."""

    def __init__(self, models: list[nn.Module]):
        first = models[0]
        if type(first) not in {cls for cls, _ in MODELS.values()}:  # a user model may use its tables otherwise
            raise TrainingError(f"--vectorize supports the built-in models only ({', '.join(MODELS)}), got "
                                f"{type(first).__module__}:{type(first).__qualname__}; train without --vectorize")
        for m in models[1:]:
            if type(m) is not type(first) or getattr(m, "config", None) != getattr(first, "config", None):
                raise TrainingError(
                    "--vectorize needs members of one architecture with one model config (seeds may differ); "
                    f"got {type(first).__name__} and {type(m).__name__} (or different model settings)")
        if any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in first.modules()):
            raise TrainingError("--vectorize does not support model.mlp.batch_norm: true "
                                "(running statistics are updated in place); use the loop path")
        self.models = models
        self.tables = [name for name, x in first.named_modules() if isinstance(x, FeatureEmbedding)]
        skeleton = copy.deepcopy(first).to("meta")
        for name in self.tables:
            parent, _, child = name.rpartition(".")
            setattr(skeleton.get_submodule(parent) if parent else skeleton, child, _Given())
        self.skeleton = skeleton
        self.given = {name: skeleton.get_submodule(name) for name in self.tables}
        self.names = [n for n, _ in skeleton.named_parameters()]
        # constant buffers (index tables of the product layers) enter unbatched, from the first
        kept = {n for n, _ in skeleton.named_buffers()}
        self.buffers = {n: b for n, b in first.named_buffers() if n in kept}
        for m in models[1:]:
            theirs = dict(m.named_buffers())
            if any(not torch.equal(b, theirs[n]) for n, b in self.buffers.items()):
                raise TrainingError("--vectorize needs members whose buffers are equal constants")

    def __call__(self, ids: torch.Tensor) -> list[torch.Tensor]:
        per_member = [dict(m.named_parameters()) for m in self.models]
        params = {n: torch.stack([p[n] for p in per_member]) for n in self.names}
        looked = {t: torch.stack([m.get_submodule(t)(ids) for m in self.models]) for t in self.tables}
        self.skeleton.train(self.models[0].training)

        def one(p: dict, given: dict) -> torch.Tensor:
            for name, value in given.items():
                self.given[name].value = value
            try:
                return functional_call(self.skeleton, (p, self.buffers), (ids,))
            finally:
                for g in self.given.values():
                    g.value = None

        return list(vmap(one, randomness="different")(params, looked).unbind(0))
