"""Typed model configs, loaded strictly with :func:`mutualctr.config.from_dict`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mutualctr.config import ConfigError


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass
class MLPConfig:
    """Hidden layers of the deep part: Linear + [BatchNorm] + ReLU + [Dropout] each."""

    hidden: list[int] = field(default_factory=lambda: [400, 200, 100])
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        _check(all(h > 0 for h in self.hidden), f"mlp.hidden: sizes must be > 0, got {self.hidden}")
        _check(0.0 <= self.dropout < 1.0, f"mlp.dropout: must be in [0, 1), got {self.dropout}")


@dataclass
class ModelConfig:
    """Fields every model shares (LR, FM and DeepFM use exactly these).

    ``embedding_l2``: batch-local L2 on the embedding and first-order rows a batch uses;
    ``net_l2``: L2 on the dense weight matrices (MLP, cross, product kernels, bilinear, SENET).
    """

    embed_dim: int = 16
    init_std: float = 1e-4
    embedding_l2: float = 0.0
    net_l2: float = 0.0
    mlp: MLPConfig = field(default_factory=MLPConfig)

    def __post_init__(self) -> None:
        _check(self.embed_dim > 0, f"embed_dim: must be > 0, got {self.embed_dim}")
        _check(self.init_std >= 0, f"init_std: must be >= 0, got {self.init_std}")
        _check(self.embedding_l2 >= 0, f"embedding_l2: must be >= 0, got {self.embedding_l2}")
        _check(self.net_l2 >= 0, f"net_l2: must be >= 0, got {self.net_l2}")


@dataclass
class DCNConfig(ModelConfig):
    cross_layers: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.cross_layers >= 0, f"cross_layers: must be >= 0, got {self.cross_layers}")


@dataclass
class DCNV2Config(DCNConfig):
    """``low_rank``: None for full-rank ``(d, d)`` cross matrices, else the rank r."""

    low_rank: int | None = None
    structure: Literal["parallel", "stacked"] = "parallel"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.low_rank is None or self.low_rank > 0, f"low_rank: must be > 0, got {self.low_rank}")


@dataclass
class PNNConfig(ModelConfig):
    product: Literal["inner", "outer"] = "inner"


@dataclass
class FiBiNETConfig(ModelConfig):
    bilinear_type: Literal["field_all", "field_each", "field_interaction"] = "field_interaction"
    reduction_ratio: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.reduction_ratio >= 1, f"reduction_ratio: must be >= 1, got {self.reduction_ratio}")
