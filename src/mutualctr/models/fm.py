"""Factorization machine: first order + ``sum_{i<j} <v_i, v_j>``; ids ``(B, F)`` -> ``(B,)``."""

from __future__ import annotations

import torch

from mutualctr.models.base import CTRModel
from mutualctr.models.layers import FactorizationMachine


class FM(CTRModel):
    """``linear(ids) + FM(embedding(ids))``; the FM term reads ``(B, F, D)`` -> ``(B,)``."""

    def __init__(self, num_features, num_fields, config, sparse_grad=False):
        super().__init__(num_features, num_fields, config, sparse_grad)
        self.linear = self.make_linear()
        self.embedding = self.make_embedding()
        self.fm = FactorizationMachine()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.linear(ids) + self.fm(self.embedding(ids))
