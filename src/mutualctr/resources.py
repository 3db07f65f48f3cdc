"""Files shipped inside the package: the run configs and the example schemas.

They live in ``src/mutualctr/configs/`` in a source checkout and in ``mutualctr/configs/`` of an
installed wheel, and are read through :mod:`importlib.resources`, so both behave the same::

    configs/<dataset>/<model>.yaml   the paper's protocol per dataset (criteo, avazu) and model
    configs/schemas/<name>.yaml      example schemas: ``mutualctr prepare --dataset NAME`` (or FILE);
                                     ``mutualctr schemas`` lists them

:func:`find_config` is the one lookup of "the config of dataset D and model M";
``train``, ``mutual`` and ``experiment`` reach it through ``training.jobs.default_config``.
This module imports nothing heavy (torch is imported only when a config is built).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mutualctr.training.config import RunConfig

PACKAGE = "mutualctr"
CONFIGS = "configs"
SCHEMAS = "schemas"
# A dataset with no shipped configs (a user's schema) trains with these, and says so.
FALLBACK_DATASET = "criteo"

Origin = Literal["config_dir", "shipped", "fallback", "builtin"]


class ConfigFallbackWarning(UserWarning):
    """The config used is not the one of the dataset asked for (see :func:`find_config`)."""


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

    config: "RunConfig"
    origin: Origin
    where: str
    note: str = ""


def configs_root() -> Traversable:
    """The shipped ``configs`` directory of the installed (or checked-out) package."""
    return resources.files(PACKAGE).joinpath(CONFIGS)


def shipped_datasets() -> list[str]:
    """Datasets with shipped run configs (``criteo``, ``avazu``)."""
    return sorted(d.name for d in configs_root().iterdir() if d.is_dir() and d.name != SCHEMAS)


def shipped_models(dataset: str) -> list[str]:
    """Models with a shipped config for ``dataset`` (empty for a dataset without configs)."""
    if dataset not in shipped_datasets():
        return []
    return sorted(f.name[:-5] for f in configs_root().joinpath(dataset).iterdir() if f.name.endswith(".yaml"))


def shipped_config_text(dataset: str, model: str) -> str:
    """The YAML text of ``configs/<dataset>/<model>.yaml`` (KeyError when it is not shipped)."""
    if model not in shipped_models(dataset):
        raise KeyError(f"no shipped config for model {model!r} on dataset {dataset!r}")
    return configs_root().joinpath(dataset, f"{model}.yaml").read_text()


def schema_names() -> list[str]:
    """The shipped example schemas (``configs/schemas/<name>.yaml``)."""
    return sorted(f.name[:-5] for f in configs_root().joinpath(SCHEMAS).iterdir() if f.name.endswith(".yaml"))


def schema_path(name: str) -> Path:
    """The file of a shipped example schema, e.g. ``example_shop``: pass it to ``prepare --dataset``
    or copy it as a starting point. (torch cannot run from a zip, so the package is on disk.)"""
    if name not in schema_names():
        raise KeyError(f"no shipped schema {name!r} (shipped: {', '.join(schema_names())})")
    return Path(str(configs_root().joinpath(SCHEMAS, f"{name}.yaml")))


def schema_description(name: str) -> str:
    """The first sentence of a shipped schema's opening comment (what layout it reads), for
    ``mutualctr schemas``."""
    import re

    words = []
    for line in schema_path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    return re.split(r"(?<=\.)\s+(?=[A-Z])", " ".join(words), maxsplit=1)[0]


def _shipped_choice(dataset: str, model: str, origin: Origin, note: str = "") -> "ConfigChoice":
    from mutualctr.config import ConfigError
    from mutualctr.training.config import run_config_from_dict
    import yaml

    where = f"{PACKAGE}/{CONFIGS}/{dataset}/{model}.yaml"
    try:
        data = yaml.safe_load(shipped_config_text(dataset, model))
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
    from mutualctr.training.config import load_run_config, run_config_from_dict

    missed = ""
    if config_dir is not None:
        base = Path(config_dir)
        for cand in ([base / dataset / f"{model}.yaml"] if dataset else []) + [base / f"{model}.yaml"]:
            if cand.is_file():
                return ConfigChoice(load_run_config(cand), "config_dir", str(cand))
        missed = f"no {f'{dataset}/{model}.yaml or ' if dataset else ''}{model}.yaml in {base}; "
    if dataset is not None and model in shipped_models(dataset):
        choice = _shipped_choice(dataset, model, "shipped",
                                 f"{missed}using {PACKAGE}/{CONFIGS}/{dataset}/{model}.yaml" if missed else "")
    elif model in shipped_models(FALLBACK_DATASET):
        what = f"dataset {dataset!r} has no shipped configs" if dataset else "no dataset given"
        choice = _shipped_choice(
            FALLBACK_DATASET, model, "fallback",
            f"{missed}{what} (shipped: {', '.join(shipped_datasets())}): using "
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
