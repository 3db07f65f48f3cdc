"""Files shipped inside the package: the run configs and the example schemas.

They live in ``src/mutualctr/configs/`` in a source checkout and in ``mutualctr/configs/`` of an
installed wheel, and are read through :mod:`importlib.resources`, so both behave the same::

    configs/<dataset>/<model>.yaml   the paper's protocol per dataset (criteo, avazu) and model
    configs/schemas/<name>.yaml      example schemas: ``mutualctr prepare --dataset NAME`` (or FILE);
                                     ``mutualctr schemas`` lists them

It finds files and reads text; building a run config from them is
:func:`mutualctr.training.shipped.find_config`, the one lookup of "the config of dataset D and
model M" (``train``, ``mutual`` and ``experiment`` reach it through ``training.jobs.default_config``).
This module imports nothing heavy and nothing of mutualctr above :mod:`mutualctr.config`.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGE = "mutualctr"
CONFIGS = "configs"
SCHEMAS = "schemas"
# A dataset with no shipped configs (a user's schema) trains with these, and says so.
FALLBACK_DATASET = "criteo"

class ConfigFallbackWarning(UserWarning):
    """The config used is not the one of the dataset asked for (see
    :func:`mutualctr.training.shipped.find_config`)."""


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
    words = []
    for line in schema_path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    return re.split(r"(?<=\.)\s+(?=[A-Z])", " ".join(words), maxsplit=1)[0]
