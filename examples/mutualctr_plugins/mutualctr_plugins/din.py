"""DIN (Zhou et al. 2018): target attention of the candidate item over the user's behaviour sequence.

Shapes: B batch, F fields, L the sequence's max length, D embedding dim. The local activation
unit scores each past item k against the candidate q with an MLP over ``[q, k, q - k, q * k]``
(4D) -> one weight per position, masked on the pad (no softmax, as DIN: the weights keep the
intensity of the interest; ``softmax: true`` normalises them). The weighted sum of the sequence
replaces its mean-pooled field; with the other fields' embeddings it goes through an MLP to the
logit. Built from mutualctr's public layers (fast embedding backward, row-wise optimizer).
Needs a store with the sequence field (e.g. ``mutualctr prepare --dataset ml100k``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mutualctr.models.layers import MLP, FeatureEmbedding
from mutualctr.models.plugins import Features


@dataclass
class DINConfig:
    """The settings under ``model:`` in a run config (unknown keys are refused)."""

    target: str = "item_id"  # the candidate's field (its embedding is the query)
    sequence: str = "history"  # the behaviour sequence (a list field sharing the target's rows)
    embed_dim: int = 16
    attention_hidden: list[int] = field(default_factory=lambda: [64])
    softmax: bool = False
    hidden: list[int] = field(default_factory=lambda: [200, 80])
    dropout: float = 0.0
    init_std: float = 1e-4
    embedding_l2: float = 0.0  # the sequence's rows are looked up twice: their L2 gradient counts twice
    net_l2: float = 0.0

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")


class TargetAttention(nn.Module):
    """DIN's local activation unit: query ``(B, D)``, keys ``(B, L, D)``, mask ``(B, L)`` ->
    the attended keys ``(B, D)`` (weights ``(B, L)``, zero on the pad)."""

    def __init__(self, dim: int, hidden: list[int], softmax: bool = False):
        super().__init__()
        self.score = MLP(4 * dim, hidden, output_dim=1)  # (B, L, 4D) -> (B, L)
        self.softmax = softmax

    def weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = query.unsqueeze(1).expand_as(keys)
        scores = self.score(torch.cat([q, keys, q - keys, q * keys], dim=-1))
        if self.softmax:
            scores = torch.where(mask, scores, torch.finfo(scores.dtype).min).softmax(dim=1)
        return scores * mask.to(scores.dtype)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.weights(query, keys, mask).unsqueeze(-1) * keys).sum(dim=1)


class DIN(nn.Module):
    """``forward(batch) -> (B,)`` logits: the fields ``(B, F, D)``, the target ``(B, D)``, the
    sequence ``(B, L, D)`` attended to ``(B, D)`` in place of its pooled field, MLP on ``(B, F*D)``."""

    config_class = DINConfig

    def __init__(self, features: Features, config: DINConfig):
        super().__init__()
        names = [f.name for f in features.fields]
        for role, name in (("target", config.target), ("sequence", config.sequence)):
            if name not in names:
                raise ValueError(f"model.{role}: the store has no field {name!r} (fields: {', '.join(names)})")
        if features.fields[names.index(config.sequence)].kind not in ("sequence", "multi-valued"):
            raise ValueError(f"model.sequence: field {config.sequence!r} is not a list field")
        self.target, self.sequence = names.index(config.target), config.sequence
        others = [i for i, n in enumerate(names) if n != config.sequence]
        self.register_buffer("others", torch.tensor(others, dtype=torch.long), persistent=False)
        d = config.embed_dim
        self.embedding = FeatureEmbedding(features.num_features, d, config.init_std, config.embedding_l2,
                                          features.sparse_grad)
        self.attention = TargetAttention(d, config.attention_hidden, config.softmax)
        self.mlp = MLP(len(names) * d, config.hidden, config.dropout, output_dim=1)
        self.net_l2 = config.net_l2  # read by mutualctr's L2 on the dense weights

    def forward(self, batch) -> torch.Tensor:
        emb = self.embedding(batch)  # (B, F, D)
        keys, mask = self.embedding.sequence(batch, self.sequence)  # (B, L, D), (B, L)
        attended = self.attention(emb[:, self.target], keys, mask)  # (B, D)
        return self.mlp(torch.cat([emb.index_select(1, self.others).flatten(1), attended], dim=1))
