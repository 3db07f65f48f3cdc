"""Typed run configuration: the YAML files under configs/ and a run's config.yaml."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mutualctr.config import ConfigError, check_fields, check_range, from_dict, load_yaml, to_dict
from mutualctr.training.optim import OptimConfig


PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Loop settings (YAML section ``train``)."""

    batch_size: int = 4000
    epochs: int = 8
    seed: int = 2024
    evals_per_epoch: int = 1  # dev evaluations per epoch (finetuning uses several)
    eval_every: int = 0  # evaluate every k steps instead, when > 0
    patience: int = 2  # stop after this many evaluations without a better dev AUC
    eval_batch_size: int = 0  # rows per evaluation forward; 0 = auto (see trainer.eval_batch)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    prefetch: int = 2  # batches prepared ahead in a background thread
    # bf16: forward (and so backward) under bf16 autocast; parameters, optimizer states, losses
    # and metrics stay float32. ~2x faster matrix products on CPUs with AMX/AVX512-BF16 or on GPUs.
    precision: Literal["fp32", "bf16"] = "fp32"
    # compile: each member's forward through torch.compile (inductor): fuses the elementwise work
    # around the matrix products. Pays a compile of a few seconds to a minute at the first train
    # and eval steps; then 1.0-1.4x faster steps in fp32, 1.3-1.7x in bf16 (docs/performance.md).
    compile: bool = False

    def __post_init__(self):
        check_fields(self, "train")  # also values set by dataclasses.replace (CLI flags)
        for name in ("batch_size", "epochs", "evals_per_epoch"):
            check_range(f"train.{name}", getattr(self, name), ge=1)
        for name in ("patience", "eval_every", "eval_batch_size", "threads", "prefetch"):
            check_range(f"train.{name}", getattr(self, name), ge=0)


@dataclass
class MutualConfig:
    """The peer term of SPEC.md equation (3) (YAML section ``mutual``)."""

    alpha: float = 1.0
    loss: Literal["mse_prob", "mse_logit", "kl"] = "mse_prob"

    def __post_init__(self):
        check_fields(self, "mutual")
        check_range("mutual.alpha", self.alpha, ge=0)


@dataclass
class RunConfig:
    """Everything a single run needs besides the store: model, optimizer, loop."""

    model: dict[str, Any] = field(default_factory=lambda: {"name": "deepfm"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def model_name(self) -> str:
        return self.model["name"]

    def model_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}

    def validate(self) -> "RunConfig":
        from mutualctr.models import model_config_from_dict

        if "name" not in self.model:
            raise ConfigError("missing required key model.name")
        model_config_from_dict(self.model["name"], self.model_params())
        return self


def run_config_from_dict(data: dict[str, Any], where: str = "") -> RunConfig:
    """A checked RunConfig; ``where`` (a file) prefixes any error, whose keys read ``train.epochs``."""
    try:
        return from_dict(RunConfig, data).validate()
    except ConfigError as e:
        if not where or str(e).startswith(f"{where}:"):
            raise
        raise ConfigError(f"{where}: {e}") from e


def load_run_config(path: str | Path) -> RunConfig:
    return run_config_from_dict(load_yaml(path), str(path))


def with_overrides(cfg: RunConfig, *, model: str | None = None, seed: int | None = None,
                   epochs: int | None = None, lr: float | None = None, batch_size: int | None = None,
                   device: str | None = None, precision: str | None = None,
                   compile: bool | None = None) -> RunConfig:
    """A copy of ``cfg`` with single values replaced (CLI flags)."""
    cfg = copy.deepcopy(cfg)
    if model is not None and model != cfg.model.get("name"):
        # A different architecture keeps only the shared keys it understands.
        from mutualctr.models import MODELS
        if model not in MODELS:
            raise ConfigError(f"unknown model {model!r} (known: {', '.join(sorted(MODELS))})")
        allowed = set(MODELS[model][1].__dataclass_fields__)
        cfg.model = {"name": model, **{k: v for k, v in cfg.model.items() if k in allowed}}
    train = cfg.train
    if seed is not None:
        train = replace(train, seed=seed)
    if epochs is not None:
        train = replace(train, epochs=epochs)
    if batch_size is not None:
        train = replace(train, batch_size=batch_size)
    if device is not None:
        train = replace(train, device=device)
    if compile is not None:
        train = replace(train, compile=compile)
    cfg.train = with_precision(train, precision)
    if lr is not None:
        cfg.optim = replace(cfg.optim, lr=lr)
    return cfg.validate()


def with_precision(train: TrainConfig, precision: str | None) -> TrainConfig:
    """``train`` with ``precision`` (a CLI flag or API argument) when it is given."""
    if precision is None:
        return train
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    return replace(train, precision=precision)


def run_config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return to_dict(cfg)
