"""DeepFM (Guo et al. 2017): first order + FM + MLP over one shared embedding.

ids ``(B, F)`` -> embeddings ``(B, F, D)``; the FM term and the MLP (on the flattened
``(B, F*D)``) read the same embeddings, so the wide and deep parts share their features.
"""

from __future__ import annotations

import torch

from mutualctr.models.base import CTRModel
from mutualctr.models.layers import FactorizationMachine


class DeepFM(CTRModel):
    def __init__(self, num_features, num_fields, config, sparse_grad=False):
        super().__init__(num_features, num_fields, config, sparse_grad)
        self.linear = self.make_linear()
        self.embedding = self.make_embedding()
        self.fm = FactorizationMachine()
        self.mlp = self.make_mlp(num_fields * config.embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(ids)  # (B, F, D)
        return self.linear(ids) + self.fm(emb) + self.mlp(emb.flatten(1))
