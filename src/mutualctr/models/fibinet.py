"""FiBiNET (Huang et al. 2019): SENET field importance + bilinear feature interactions.

ids ``(B, F)`` -> ``E (B, F, D)``; SENET re-weights fields -> ``V (B, F, D)``; the bilinear
layer (field_all / field_each / field_interaction, one set of weights per input as in the
paper) turns each of ``E`` and ``V`` into ``(B, P, D)``; both are flattened, concatenated
``(B, 2*P*D)`` and fed to the MLP; the first-order term is added -> ``(B,)``. Under bf16
autocast the embeddings are cast once, so the pair tensors are built in bf16 (the MLP reads
them in bf16 either way).
"""

from __future__ import annotations

import torch

from mutualctr.models.base import CTRModel
from mutualctr.models.config import FiBiNETConfig
from mutualctr.models.layers import SENET, Bilinear, autocast_input


class FiBiNET(CTRModel):
    def __init__(self, num_features, num_fields, config: FiBiNETConfig, sparse_grad=False):
        super().__init__(num_features, num_fields, config, sparse_grad)
        d, kind = config.embed_dim, config.bilinear_type
        self.linear = self.make_linear()
        self.embedding = self.make_embedding()
        self.senet = SENET(num_fields, config.reduction_ratio)
        self.bilinear = Bilinear(num_fields, d, kind)
        self.bilinear_senet = Bilinear(num_fields, d, kind)
        num_pairs = num_fields * (num_fields - 1) // 2
        self.mlp = self.make_mlp(2 * num_pairs * d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        emb = autocast_input(self.embedding(ids))  # (B, F, D); bf16 under bf16 autocast (why: layers.py)
        pairs = self.bilinear.by_field(emb) + self.bilinear_senet.by_field(self.senet(emb))
        pq = torch.cat(pairs, dim=1)  # (B, 2P, D): one copy into the MLP's input
        return self.linear(ids) + self.mlp(pq.flatten(1))
