"""CTR models over one fused embedding table, a registry and the L2 penalty.

``build_model(name, num_features, num_fields, config)`` -> ``nn.Module`` whose
``forward(ids (B, F) LongTensor of global ids) -> (B,)`` logits; built with a store's
:class:`FieldLayout` (``layout=``) it also reads that store's batches of list and dense fields
(``forward(batch) -> (B,)``). A name that is not a built-in is a user model (an entry point or
``package.module:ClassName``, :mod:`.plugins`). See docs/models.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from mutualctr.config import ConfigError, from_dict
from mutualctr.models import plugins
from mutualctr.models.config import (
    DCNConfig,
    DCNV2Config,
    FiBiNETConfig,
    MLPConfig,
    ModelConfig,
    PNNConfig,
)
from mutualctr.models.dcn import DCN
from mutualctr.models.dcnv2 import DCNV2
from mutualctr.models.deepfm import DeepFM
from mutualctr.models.embedding import FeatureEmbedding, FeatureLinear, RowCache
from mutualctr.models.fibinet import FiBiNET
from mutualctr.models.fields import FieldLayout, lookup_ids
from mutualctr.models.fm import FM
from mutualctr.models.lr import LR
from mutualctr.models.plugins import Features, ModelSpec
from mutualctr.models.pnn import PNN

__all__ = [
    "MODELS", "build_model", "model_config_from_dict", "model_config_class", "canonical_model_name",
    "is_builtin", "resolve", "Features", "ModelSpec", "l2_penalty", "embedding_tables",
    "use_row_cache", "set_plain", "set_layout", "FieldLayout", "lookup_ids", "FeatureEmbedding", "FeatureLinear",
    "RowCache", "ModelConfig",
    "MLPConfig", "DCNConfig", "DCNV2Config", "PNNConfig", "FiBiNETConfig",
    "LR", "FM", "DeepFM", "DCN", "DCNV2", "PNN", "FiBiNET",
]

MODELS: dict[str, tuple[type[nn.Module], type[ModelConfig]]] = {
    "lr": (LR, ModelConfig),
    "fm": (FM, ModelConfig),
    "deepfm": (DeepFM, ModelConfig),
    "dcn": (DCN, DCNConfig),
    "dcnv2": (DCNV2, DCNV2Config),
    "pnn": (PNN, PNNConfig),
    "fibinet": (FiBiNET, FiBiNETConfig),
}


def _entry(name: str) -> tuple[type[nn.Module], type[ModelConfig]]:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(MODELS)})") from None


def resolve(name: str) -> ModelSpec:
    """The user model ``name``: an installed entry point or an import string (:mod:`.plugins`)."""
    return plugins.resolve(name, known=list(MODELS))


def is_builtin(name: Any) -> bool:
    return isinstance(name, str) and name in MODELS


def canonical_model_name(name: str) -> str:
    """The name a run records: a built-in's name, else the import string of the user model (an
    entry point's target)."""
    return name if is_builtin(name) or not isinstance(name, str) else resolve(name).name


def model_config_class(name: str) -> type:
    """The config dataclass of model ``name`` (a built-in or a user model)."""
    return _entry(name)[1] if is_builtin(name) or not isinstance(name, str) else resolve(name).config_class


def model_config_from_dict(name: str, data: dict[str, Any] | None) -> Any:
    """The config dataclass of model ``name`` from plain (YAML) data; strict, keys ``model.*``."""
    return from_dict(model_config_class(name), data, "model")


def build_model(
    name: str, num_features: int, num_fields: int, config: dict | ModelConfig | None = None,
    *, sparse_grad: bool = False, features: Features | None = None, layout: FieldLayout | None = None,
) -> nn.Module:
    """Model ``name`` for ``num_features`` global ids over ``num_fields`` fields.

    ``sparse_grad``: its tables give coalesced row-sparse gradients, which the row-wise
    embedding optimizer reads (``optim.embedding_optimizer: rowwise``); dense otherwise.
    ``features``: the store's fields, which a user model is built from (default: the counts only).
    ``layout``: the store's :class:`FieldLayout` when it has list or dense fields (the model
    then reads its batches; ``FieldLayout.from_fields(feature_map.fields)``), None otherwise.
    """
    if isinstance(name, str) and not is_builtin(name):
        spec = resolve(name)
        if features is None:
            features = Features.anonymous(num_features, num_fields)
        model = spec.build(replace(features, sparse_grad=sparse_grad), spec.config(config))
        if layout is not None:  # its FeatureEmbedding tables (if any) read the store's batches
            set_layout(model, layout)
        return model
    cls, config_cls = _entry(name)
    if config is None or isinstance(config, dict):
        config = model_config_from_dict(name, config)
    elif type(config) is not config_cls:
        raise ConfigError(
            f"model {name!r} takes a {config_cls.__name__}, got {type(config).__name__}"
        )
    if num_features < 1 or num_fields < 1:
        raise ConfigError(f"num_features and num_fields must be >= 1, got {num_features}, {num_fields}")
    if layout is not None and len(layout.roles) != num_fields:
        raise ConfigError(f"the layout has {len(layout.roles)} fields, the model {num_fields}")
    model = cls(num_features, num_fields, config, sparse_grad)
    set_layout(model, layout)
    return model


def set_layout(model: nn.Module, layout: FieldLayout | None) -> None:
    """Let every table of ``model`` read batches of ``layout`` (see :class:`FieldLayout`)."""
    model.layout = layout
    for table in embedding_tables(model):
        table.set_layout(layout)


def embedding_tables(model: nn.Module) -> list[FeatureEmbedding]:
    """Every :class:`FeatureEmbedding` (the embedding and the first-order table) of ``model``."""
    return [m for m in model.modules() if isinstance(m, FeatureEmbedding)]


def use_row_cache(model: nn.Module, cache: RowCache) -> None:
    """Let every table of ``model`` share ``cache`` for the distinct rows of a batch, so that
    tables (and models) looked up with the same ids tensor compute them once."""
    for table in embedding_tables(model):
        table.row_cache = cache


def set_plain(model: nn.Module, plain: bool) -> None:
    """Switch every table of ``model`` between the fast lookup and plain ``F.embedding``."""
    for table in embedding_tables(model):
        table.plain = plain


def _net_weights(model: nn.Module) -> list[torch.Tensor]:
    """Dense weights under ``net_l2``: every parameter except embeddings, BatchNorm and biases."""
    skip = {
        id(p) for m in model.modules()
        if isinstance(m, (FeatureEmbedding, nn.modules.batchnorm._BatchNorm)) for p in m.parameters()
    }
    return [
        p for name, p in model.named_parameters()
        if id(p) not in skip and not any(part.startswith("bias") for part in name.split("."))
    ]


def l2_penalty(model: nn.Module, ids) -> torch.Tensor:
    """All L2 terms of ``model`` for the batch ``ids (B, F)`` (or a batch with list or dense
    fields: every id it looks up): add it to the loss.

    Embedding part: ``l2 * sum_{b,f} ||w[ids[b,f]]||^2 / B`` per table (batch-local; its
    gradient is already applied by the fast lookup's backward, so there it is a value only;
    on the plain path it is differentiable). Net part: ``net_l2 * sum ||W||^2`` over the
    dense weight matrices (differentiable; biases, BatchNorm and embeddings excluded).
    """
    zero = (ids if isinstance(ids, torch.Tensor) else ids.labels).new_zeros((), dtype=torch.float32)
    total = sum((t.penalty(ids) for t in embedding_tables(model)), zero)
    net_l2 = getattr(model, "net_l2", 0.0)
    if net_l2:
        total = total + net_l2 * sum(p.pow(2).sum() for p in _net_weights(model))
    return total
