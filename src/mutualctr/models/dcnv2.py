"""DCN-V2 (Wang et al. 2021): matrix cross layers ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``.

ids ``(B, F)`` -> ``x_0 (B, d = F*D)``. ``structure='parallel'`` (default): cross network
and MLP side by side, concatenated, then Linear; ``'stacked'``: MLP on the cross output,
then Linear (``mlp.hidden: []``: cross network only). ``low_rank=r`` replaces each
``W_l (d, d)`` by ``U_l V_l^T`` (d x r each).
"""

from __future__ import annotations

import torch
from torch import nn

from mutualctr.models.base import CTRModel
from mutualctr.models.config import DCNV2Config
from mutualctr.models.layers import CrossNetV2


class DCNV2(CTRModel):
    def __init__(self, num_features, num_fields, config: DCNV2Config, sparse_grad=False):
        super().__init__(num_features, num_fields, config, sparse_grad)
        dim = num_fields * config.embed_dim
        self.embedding = self.make_embedding()
        self.cross = CrossNetV2(dim, config.cross_layers, config.low_rank)
        self.mlp = self.make_mlp(dim, output_dim=None) if config.mlp.hidden else None
        deep = self.mlp.out_dim if self.mlp is not None else 0
        self.parallel = config.structure == "parallel"
        self.out = nn.Linear(deep + (dim if self.parallel or self.mlp is None else 0), 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x0 = self.embedding(ids).flatten(1)  # (B, d)
        cross = self.cross(x0)
        if self.mlp is None:
            h = cross
        else:
            h = torch.cat([cross, self.mlp(x0)], dim=1) if self.parallel else self.mlp(cross)
        return self.out(h).squeeze(-1)
