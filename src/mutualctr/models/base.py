"""Common base of the models: holds the config and builds the shared parts from it."""

from __future__ import annotations

from torch import nn

from mutualctr.models.config import ModelConfig
from mutualctr.models.layers import MLP, FeatureEmbedding, FeatureLinear


class CTRModel(nn.Module):
    """``forward(ids (B, F) global ids) -> (B,)`` logits; no sigmoid, loss, device or I/O.

    ``net_l2`` lives here (read by :func:`mutualctr.models.l2_penalty`); the embedding L2
    lives on each :class:`FeatureEmbedding` as ``l2``. ``sparse_grad``: the tables give
    row-sparse gradients (for the row-wise optimizer), fixed at construction.
    """

    def __init__(self, num_features: int, num_fields: int, config: ModelConfig, sparse_grad: bool = False):
        super().__init__()
        self.num_features, self.num_fields, self.config = num_features, num_fields, config
        self.net_l2 = config.net_l2
        self.sparse_grad = sparse_grad

    def make_embedding(self) -> FeatureEmbedding:
        c = self.config
        return FeatureEmbedding(self.num_features, c.embed_dim, c.init_std, c.embedding_l2, self.sparse_grad)

    def make_linear(self) -> FeatureLinear:
        c = self.config
        return FeatureLinear(self.num_features, c.init_std, c.embedding_l2, self.sparse_grad)

    def make_mlp(self, in_dim: int, output_dim: int | None = 1) -> MLP:
        m = self.config.mlp
        return MLP(in_dim, m.hidden, m.dropout, m.batch_norm, output_dim)
