"""Deep & Cross Network (Wang et al. 2017).

ids ``(B, F)`` -> ``x_0 = flatten(embedding) (B, d = F*D)``; a cross network
``x_{l+1} = x_0 (x_l . w_l) + b_l + x_l`` (explicit bounded-degree crosses) runs in parallel
with an MLP (implicit crosses); their outputs ``(B, d)`` and ``(B, hidden[-1])`` are
concatenated and a final Linear gives ``(B,)`` logits (applied to each part, which is the
same function: the cross output need not be formed). No first-order term (as the paper);
``mlp.hidden: []`` leaves the cross network alone.
"""

from __future__ import annotations

import torch
from torch import nn

from mutualctr.models.base import CTRModel
from mutualctr.models.config import DCNConfig
from mutualctr.models.layers import CrossNet


class DCN(CTRModel):
    def __init__(self, num_features, num_fields, config: DCNConfig, sparse_grad=False):
        super().__init__(num_features, num_fields, config, sparse_grad)
        dim = num_fields * config.embed_dim
        self.embedding = self.make_embedding()
        self.cross = CrossNet(dim, config.cross_layers)
        self.mlp = self.make_mlp(dim, output_dim=None) if config.mlp.hidden else None
        deep = self.mlp.out_dim if self.mlp is not None else 0
        self.out = nn.Linear(dim + deep, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x0 = self.embedding(ids).flatten(1)  # (B, d)
        # self.out is the Linear over [cross(x0), mlp(x0)] (B, d + h), applied part by part:
        # the cross network's (B, d) output is never formed (CrossNet.project).
        w, d = self.out.weight[0], x0.shape[1]  # (d + h,)
        logit = self.cross.project(x0, w[:d]) + self.out.bias
        if self.mlp is not None:
            logit = logit + self.mlp(x0) @ w[d:]
        return logit
