"""User models living outside src/ (tests): a plain nn.Module, a factory, and broken ones."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PlainConfig:
    dim: int = 4


class Plain(nn.Module):
    """No mutualctr layer at all: an nn.Embedding with dense gradients and a linear layer."""

    config_class = PlainConfig

    def __init__(self, features, config: PlainConfig):
        super().__init__()
        self.emb = nn.Embedding(features.num_features, config.dim)
        nn.init.normal_(self.emb.weight, 0.0, 1e-2)
        self.out = nn.Linear(features.num_fields * config.dim, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(ids).flatten(1)).squeeze(-1)


def make_plain(features, config):
    """A factory: called as a class is."""
    return Plain(features, config)


make_plain.config_class = PlainConfig


class WrongShape(Plain):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).unsqueeze(-1)  # (B, 1), not (B,)


class NotAModule:
    def __init__(self, features, config):
        pass


def returns_a_dict(features, config):
    return {"not": "a module"}


class DataDependent(Plain):
    """Python control flow on a value of the batch: eager mode runs it, a tracer cannot."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        z = super().forward(ids)
        if int(ids.max()) > 10 ** 12:  # never true, but a graph cannot hold the Python branch
            return -z
        return z
