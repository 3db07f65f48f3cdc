"""The run config of a model for a dataset: the caller's directory, the shipped configs
(:mod:`mutualctr.resources`), or a stated fallback; the one lookup behind ``train``, ``mutual`` and
``experiment`` (through ``training.jobs.default_config``). See docs/training.md, "Which config a
run uses"."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from mutualctr import resources
from mutualctr.config import ConfigError
from mutualctr.models.plugins import label
from mutualctr.resources import CONFIGS, FALLBACK_DATASET, PACKAGE, ConfigFallbackWarning
from mutualctr.training.config import RunConfig, load_run_config, run_config_from_dict

Origin = Literal["config_dir", "shipped", "fallback", "builtin"]


@dataclass(frozen=True)
class ConfigChoice:
    """A run config and where it came from.

    ``origin``: ``config_dir`` (a file in the caller's directory), ``shipped`` (the package's
    config of that very dataset), ``fallback`` (the package's Criteo config, for a dataset that
    has none) or ``builtin`` (the dataclass defaults: only for a model without shipped configs).
    ``where``: the file read (``mutualctr/configs/<dataset>/<model>.yaml`` for a shipped one, the
    same in a checkout and a wheel) or ``built-in defaults``. ``note``: why this is not the
    dataset's own config; empty when it is.
    """

    config: RunConfig
    origin: Origin
    where: str
    note: str = ""


def _shipped_choice(dataset: str, model: str, origin: Origin, note: str = "") -> ConfigChoice:
    where = f"{PACKAGE}/{CONFIGS}/{dataset}/{model}.yaml"
    try:
        data = yaml.safe_load(resources.shipped_config_text(dataset, model))
    except yaml.YAMLError as e:  # a broken package, not user input; still name the file
        raise ConfigError(f"{where}: invalid YAML: {e}") from e
    return ConfigChoice(run_config_from_dict(data, where), origin, where, note)


def find_config(model: str, dataset: str | None = None, config_dir: str | Path | None = None) -> ConfigChoice:
    """The run config of ``model`` for ``dataset`` (a store's ``feature_map.dataset``), in this order:

    1. ``config_dir/<dataset>/<model>.yaml``, then ``config_dir/<model>.yaml`` (``config_dir`` given);
    2. the shipped ``configs/<dataset>/<model>.yaml`` (``dataset`` is ``criteo`` or ``avazu``);
    3. a dataset without shipped configs (a user's schema, or ``None``): the shipped Criteo config
       of the model (the paper's protocol, learning rate tuned on Criteo), never the dataclass
       defaults (lr 1e-3, no embedding L2), which are not the paper's protocol;
    4. a model with no shipped config at all: the built-in dataclass defaults.

    Whenever the result is not the dataset's own config (3, 4, or 1 asked for but not found), the
    reason is in ``note`` and is also issued as a :class:`ConfigFallbackWarning` (the CLI prints
    it as one ``warning:`` line), so a fallback is never silent.
    An unknown ``model`` raises ``ConfigError``.
    """
    missed = ""
    if config_dir is not None:
        base = Path(config_dir)
        names = [model] + ([label(model)] if label(model) != model else [])  # a user model: also ClassName.yaml
        for cand in [base / d / f"{n}.yaml" for n in names for d in ([dataset] if dataset else []) + [""]]:
            if cand.is_file():
                return ConfigChoice(load_run_config(cand), "config_dir", str(cand))
        missed = f"no {f'{dataset}/{model}.yaml or ' if dataset else ''}{model}.yaml in {base}; "
    if dataset is not None and model in resources.shipped_models(dataset):
        choice = _shipped_choice(dataset, model, "shipped",
                                 f"{missed}using {PACKAGE}/{CONFIGS}/{dataset}/{model}.yaml" if missed else "")
    elif model in resources.shipped_models(FALLBACK_DATASET):
        what = f"dataset {dataset!r} has no shipped configs" if dataset else "no dataset given"
        choice = _shipped_choice(
            FALLBACK_DATASET, model, "fallback",
            f"{missed}{what} (shipped: {', '.join(resources.shipped_datasets())}): using "
            f"{PACKAGE}/{CONFIGS}/{FALLBACK_DATASET}/{model}.yaml, the paper's protocol with the "
            f"learning rate tuned on Criteo; give your own to change it (train --config FILE, "
            f"experiment --config-dir DIR)")
    else:
        cfg = run_config_from_dict({"model": {"name": model}})  # ConfigError for an unknown model
        choice = ConfigChoice(cfg, "builtin", "built-in defaults",
                              f"{missed}no shipped config for model {model!r}: using the built-in defaults "
                              f"(lr {cfg.optim.lr:g}, no embedding L2), not the paper's protocol")
    if choice.note:
        warnings.warn(choice.note, ConfigFallbackWarning, stacklevel=2)
    return choice
