"""Product-based neural network (Qu et al. 2016): IPNN (default) or OPNN.

ids ``(B, F)`` -> embeddings ``(B, F, D)``; the product layer gives one value per field
pair ``(B, P)``, ``P = F(F-1)/2`` (inner product, or ``v_i^T K_ij v_j`` with a learned
kernel for 'outer'); it is concatenated with the flattened embeddings ``(B, F*D)`` (the
linear signal ``l_z``) and fed to the MLP -> ``(B,)``.
"""

from __future__ import annotations

import torch

from mutualctr.models.base import CTRModel
from mutualctr.models.config import PNNConfig
from mutualctr.models.layers import InnerProduct, OuterProduct, autocast_input


class PNN(CTRModel):
    def __init__(self, num_features, num_fields, config: PNNConfig, sparse_grad=False):
        super().__init__(num_features, num_fields, config, sparse_grad)
        d = config.embed_dim
        self.embedding = self.make_embedding()
        if config.product == "inner":
            self.product = InnerProduct(num_fields)
        else:
            self.product = OuterProduct(num_fields, d)
        num_pairs = num_fields * (num_fields - 1) // 2
        self.mlp = self.make_mlp(num_fields * d + num_pairs)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        emb = autocast_input(self.embedding(ids))  # (B, F, D); bf16 once under autocast, not per part
        return self.mlp(torch.cat([emb.flatten(1), self.product(emb)], dim=1))
