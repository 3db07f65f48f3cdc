"""Typed run configuration: the YAML files under configs/ and a run's config.yaml."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mutualctr.config import ConfigError, check_fields, check_range, check_seed, from_dict, load_yaml, to_dict
from mutualctr.models import canonical_model_name, model_config_class, model_config_from_dict
from mutualctr.runtime import PRECISIONS
from mutualctr.training.optim import OptimConfig


@dataclass
class TrainConfig:
    """Loop settings (YAML section ``train``). ``device``, ``threads``, ``precision`` and
    ``compile`` are run-time defaults that :class:`mutualctr.runtime.RuntimeOptions` (flags, API
    arguments) replace; the run's config.yaml records the values it ran with."""

    batch_size: int = 4000
    epochs: int = 8
    seed: int = 2024
    evals_per_epoch: int = 1  # dev evaluations per epoch (finetuning uses several)
    eval_every: int = 0  # evaluate every k steps instead, when > 0
    patience: int = 2  # stop after this many evaluations without a better dev AUC
    eval_batch_size: int = 0  # rows per evaluation forward; 0 = auto (see inference.eval_batch)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    prefetch: int = 2  # batches prepared ahead in a background thread
    # bf16: training steps (forward, and so backward) under bf16 autocast; parameters, optimizer
    # states, losses, evaluations and predictions stay float32; refused where the device has no
    # native bf16 (AMX or AVX512-BF16 CPUs, bf16 GPUs), where it is emulated and many times
    # slower. auto (the default): bf16 where native, else fp32, chosen when the run starts and
    # recorded in its config.yaml and summary.json. Evidence and figures: docs/performance.md.
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    # compile: each member's forward through torch.compile (inductor), which fuses the
    # elementwise work around the matrix products, after a compile pause (docs/performance.md).
    # auto: compile when the run plans at least device.COMPILE_AUTO_STEPS training steps (where
    # the pause pays for itself) and a C++ compiler is there; the run records true or false.
    compile: bool | Literal["auto"] = False
    # the part of the train split a run reads: rows [lo * n, hi * n) in the split's order
    # (experiment --finetune-split pretrains on the first part and finetunes on the rest)
    row_range: tuple[float, float] = (0.0, 1.0)
    # a resumable checkpoint also inside an epoch, about every this many seconds (0: only at
    # the evaluations); a killed run then loses at most this much work
    checkpoint_every: float = 300.0
    # stop when the training loss runs away: the mean of the last 5 steps above this many times
    # the larger of the first step's loss and ln 2, from the second step on (0: never)
    divergence_factor: float = 10.0

    def __post_init__(self):
        check_fields(self, "train")  # also values set by dataclasses.replace (CLI flags)
        for name in ("batch_size", "epochs", "evals_per_epoch"):
            check_range(f"train.{name}", getattr(self, name), ge=1)
        for name in ("patience", "eval_every", "eval_batch_size", "threads", "prefetch", "checkpoint_every"):
            check_range(f"train.{name}", getattr(self, name), ge=0)
        check_seed("train.seed", self.seed)
        if self.divergence_factor != 0:
            check_range("train.divergence_factor", self.divergence_factor, gt=1)
        lo, hi = self.row_range
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"train.row_range must satisfy 0 <= lo < hi <= 1, got {list(self.row_range)}")


AUTO = "auto"


@dataclass
class MutualConfig:
    """How a group is finetuned (YAML section ``mutual``; ``mutual``, ``distill`` and
    ``experiment`` read it, flags override single values). See docs/training.md.

    ``alpha`` weighs the peer term of SPEC.md equation (3) (for distillation: beta); ``auto``
    chooses it on dev: a group is finetuned for every value of ``alpha_grid`` and, while the
    best is at an end of the grid, for ten times further past that end (at most three times),
    so that the choice lies inside what was tried. ``lr``, ``epochs`` and ``evals_per_epoch``
    are the finetuning's (a group trained from scratch keeps its members' own). ``scope: dense``
    freezes the embedding tables (only the network is finetuned); ``embedding_lr_scale``
    multiplies the tables' learning rate; ``finetune_split`` F > 0 finetunes on the last F of
    the train split only.
    """

    alpha: float | Literal["auto"] = AUTO
    alpha_grid: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0, 1000.0])
    loss: Literal["mse_prob", "mse_logit", "kl"] = "mse_prob"
    lr: float = 1e-4
    epochs: int = 1
    evals_per_epoch: int = 4
    scope: Literal["all", "dense"] = "all"
    embedding_lr_scale: float = 1.0
    finetune_split: float = 0.0

    def __post_init__(self):
        check_fields(self, "mutual")  # also values set by dataclasses.replace (flags)
        if self.alpha != AUTO:
            check_range("mutual.alpha", self.alpha, ge=0)
        if not self.alpha_grid:
            raise ConfigError("mutual.alpha_grid must list at least one number")
        for a in self.alpha_grid:
            check_range("mutual.alpha_grid", a, gt=0)
        check_range("mutual.lr", self.lr, gt=0)
        check_range("mutual.epochs", self.epochs, ge=1)
        check_range("mutual.evals_per_epoch", self.evals_per_epoch, ge=1)
        check_range("mutual.embedding_lr_scale", self.embedding_lr_scale, gt=0)
        check_range("mutual.finetune_split", self.finetune_split, ge=0, lt=1)

    @property
    def searches(self) -> bool:
        return self.alpha == AUTO


@dataclass
class RunConfig:
    """Everything a single run needs besides the store: model, optimizer, loop."""

    model: dict[str, Any] = field(default_factory=lambda: {"name": "deepfm"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mutual: MutualConfig = field(default_factory=MutualConfig)

    @property
    def model_name(self) -> str:
        return self.model["name"]

    def model_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}

    def validate(self) -> "RunConfig":
        if "name" not in self.model:
            raise ConfigError("missing required key model.name")
        name = canonical_model_name(self.model["name"])  # a user model: its import string
        model_config_from_dict(name, self.model_params())
        if name != self.model["name"]:
            self.model = {**self.model, "name": name}
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
    data = load_yaml(path)
    if not data:  # not the defaults of a model nobody named
        raise ConfigError(f"{path}: is empty; a run config names at least its model (model: {{name: deepfm}})")
    return run_config_from_dict(data, str(path))


def with_overrides(cfg: RunConfig, *, model: str | None = None, seed: int | None = None,
                   epochs: int | None = None, lr: float | None = None, batch_size: int | None = None,
                   device: str | None = None, precision: str | None = None,
                   compile: bool | str | None = None, evals_per_epoch: int | None = None) -> RunConfig:
    """A copy of ``cfg`` with single values replaced (CLI flags)."""
    cfg = copy.deepcopy(cfg)
    if model is not None and model != cfg.model.get("name"):
        # A different architecture keeps only the shared keys it understands.
        allowed = set(model_config_class(model).__dataclass_fields__)
        cfg.model = {"name": model, **{k: v for k, v in cfg.model.items() if k in allowed}}
    train = cfg.train
    if seed is not None:
        train = replace(train, seed=seed)
    if epochs is not None:
        train = replace(train, epochs=epochs)
    if evals_per_epoch is not None:
        train = replace(train, evals_per_epoch=evals_per_epoch)
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


def with_group_overrides(group: MutualConfig, **values: Any) -> MutualConfig:
    """A copy of ``group`` with the given values (flags; None = keep), type-checked as YAML is,
    so a bad value names its key (``mutual.alpha``)."""
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return group
    return from_dict(MutualConfig, {**to_dict(group), **given}, "mutual")


def with_precision(train: TrainConfig, precision: str | None) -> TrainConfig:
    """``train`` with ``precision`` (a CLI flag or API argument) when it is given."""
    if precision is None:
        return train
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    return replace(train, precision=precision)


def run_config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return to_dict(cfg)


def train_with_runtime(train: TrainConfig, options) -> TrainConfig:
    """``train`` with the values that run-time options replace (device, precision, compile:
    :meth:`mutualctr.runtime.RuntimeOptions.config_overrides`; None = keep)."""
    given = {k: v for k, v in options.config_overrides().items() if v is not None}
    return replace(train, **given) if given else train


def with_runtime(cfg: RunConfig, options) -> RunConfig:
    """``cfg`` with its ``train`` values replaced by the run-time options
    (:func:`train_with_runtime`), so that its config.yaml records what ran."""
    train = train_with_runtime(cfg.train, options)
    return cfg if train is cfg.train else replace(cfg, train=train)
