"""Logistic regression: ``sum_f w[ids[b, f]] + bias``; ids ``(B, F)`` -> ``(B,)``."""

from __future__ import annotations

import torch

from mutualctr.models.base import CTRModel


class LR(CTRModel):
    """First-order baseline: one weight per feature (``model.linear``), no embedding."""

    def __init__(self, num_features, num_fields, config, sparse_grad=False):
        super().__init__(num_features, num_fields, config, sparse_grad)
        self.linear = self.make_linear()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.linear(ids)
