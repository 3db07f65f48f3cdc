"""A minimal CTR model of one's own: first order + an MLP over the field embeddings.

Built from mutualctr's public layers, so it gets their fast embedding backward, the batch-local
embedding L2 and the row-wise optimizer without anything else to write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mutualctr.models.layers import MLP as MLPLayer
from mutualctr.models.layers import FeatureEmbedding, FeatureLinear
from mutualctr.models.plugins import Features


@dataclass
class MLPConfig:
    """The settings under ``model:`` in a run config (unknown keys are refused)."""

    embed_dim: int = 16
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float = 0.0
    init_std: float = 1e-4
    embedding_l2: float = 0.0
    net_l2: float = 0.0

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")


class MLP(nn.Module):
    config_class = MLPConfig

    def __init__(self, features: Features, config: MLPConfig):
        super().__init__()
        n, grad = features.num_features, features.sparse_grad
        self.embedding = FeatureEmbedding(n, config.embed_dim, config.init_std, config.embedding_l2, grad)
        self.linear = FeatureLinear(n, config.init_std, config.embedding_l2, grad)
        self.mlp = MLPLayer(features.num_fields * config.embed_dim, config.hidden, config.dropout, output_dim=1)
        self.net_l2 = config.net_l2  # read by mutualctr's L2 on the dense weights

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.linear(ids) + self.mlp(self.embedding(ids).flatten(1))
