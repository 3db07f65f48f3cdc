"""Models from outside the package: import strings, entry points, classes and factories.

A model name is a built-in registry name (``deepfm``), the name of an entry point of group
``mutualctr.models`` that an installed package declares, or an import string
``package.module:ClassName``. A user model is a class (or a factory function) called as
``factory(features, config)`` with the store's :class:`Features` and an instance of its
``config_class`` (a dataclass, read strictly from the run config's ``model`` section; a model
without one takes no settings). ``forward(ids (B, F)) -> (B,)`` logits. See docs/models.md,
"Writing a model".

Runs record the import string (an entry point is recorded as the import string it points at),
and loading a run imports the class by that string: nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from mutualctr.config import from_dict
from mutualctr.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "Field", "Features", "NoConfig", "ModelSpec", "resolve", "import_string",
           "installed", "check_output", "label"]

ENTRY_POINT_GROUP = "mutualctr.models"
_IMPORT_STRING = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_FORM = "a built-in model, an installed entry point, or an import string package.module:ClassName"


@dataclass(frozen=True)
class Field:
    """One field of the store: its name, kind (``categorical``, ``hashed``, ...), its rows of the
    one embedding table (``offset`` .. ``offset + vocab_size - 1``)."""

    name: str
    kind: str
    vocab_size: int
    offset: int


@dataclass(frozen=True)
class Features:
    """What a user model is built from. ``fields``: the store's fields in column order;
    ``num_features``: rows of the one embedding table (the global ids); ``sparse_grad``: the
    gradient layout the optimizer reads (pass it to :class:`FeatureEmbedding`)."""

    fields: tuple[Field, ...]
    num_features: int
    sparse_grad: bool = False

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @classmethod
    def of(cls, feature_map: Any, sparse_grad: bool = False) -> "Features":
        """From a store's feature map (anything with ``fields`` and ``num_features``)."""
        fields = tuple(Field(f.name, f.kind, int(f.vocab_size), int(f.offset)) for f in feature_map.fields)
        return cls(fields, int(feature_map.num_features), sparse_grad)

    @classmethod
    def anonymous(cls, num_features: int, num_fields: int, sparse_grad: bool = False) -> "Features":
        """Fields known only by their count (a checkpoint written before fields were recorded)."""
        return cls(tuple(Field(f"f{i}", "categorical", 0, 0) for i in range(num_fields)), num_features, sparse_grad)

    def to_dict(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "fields": [dataclasses.asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], sparse_grad: bool = False) -> "Features":
        return cls(tuple(Field(**f) for f in data["fields"]), int(data["num_features"]), sparse_grad)


@dataclass
class NoConfig:
    """The config of a model that takes no settings: any key under ``model`` is refused."""


@dataclass(frozen=True)
class ModelSpec:
    """A resolved user model: ``name`` as runs record it (the import string), the class or
    factory, its config dataclass, and where it came from (for ``mutualctr models``)."""

    name: str
    factory: Callable[..., nn.Module]
    config_class: type
    origin: str

    def config(self, data: Any) -> Any:
        """The model's config from plain data, strict (keys ``model.*``), or as given."""
        if data is None or isinstance(data, dict):
            return from_dict(self.config_class, data, "model")
        if type(data) is not self.config_class:
            raise ConfigError(f"model {self.name} takes a {self.config_class.__name__}, got {type(data).__name__}")
        return data

    def build(self, features: Features, config: Any) -> nn.Module:
        try:
            model = self.factory(features, config)
        except ConfigError:
            raise
        except Exception as e:  # the user's constructor: one line naming it
            raise ConfigError(f"model {self.name}: building it failed: {type(e).__name__}: {e}") from e
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model {self.name}: built a {type(model).__name__}, not a torch.nn.Module")
        return model


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _import(name: str, known: Sequence[str] = ()) -> Any:
    """The object an import string names; a ConfigError naming the string when it cannot."""
    if ":" not in name:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(known) or 'none'}; or an installed entry "
                          "point, or an import string package.module:ClassName)")
    if not _IMPORT_STRING.match(name):
        raise ConfigError(f"model {name!r}: not {_FORM}")
    module_name, qualname = name.split(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # the module's own code may raise anything
        raise ConfigError(f"model {name}: cannot import module {module_name!r}: {type(e).__name__}: {e}") from e
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"model {name}: module {module_name!r} has no attribute {qualname!r}") from None
    return obj


def _spec(name: str, obj: Any, origin: str) -> ModelSpec:
    if isinstance(obj, type) and not issubclass(obj, nn.Module):
        raise ConfigError(f"model {name}: {obj.__qualname__} is not a torch.nn.Module subclass")
    if not callable(obj):
        raise ConfigError(f"model {name}: names a {type(obj).__name__}, not a model class or factory")
    config_class = getattr(obj, "config_class", NoConfig)
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise ConfigError(f"model {name}: config_class must be a dataclass, got {config_class!r}")
    return ModelSpec(name, obj, config_class, origin)


def resolve(name: str, known: Sequence[str] = ()) -> ModelSpec:
    """The user model ``name`` (an entry point name or an import string; not a built-in;
    ``known``: the built-in names, for the error of a name that is none of these)."""
    if ":" not in name:
        for ep in _entry_points():
            if ep.name == name:
                dist = getattr(ep.dist, "name", None) or "?"
                try:
                    obj = ep.load()
                except Exception as e:
                    raise ConfigError(f"model {name}: entry point {ep.value} (from {dist}) cannot be loaded: "
                                      f"{type(e).__name__}: {e}") from e
                return _spec(ep.value, obj, f"entry point {name} -> {ep.value} ({dist})")
    return _spec(name, _import(name, known), "import string")


def import_string(obj: Any) -> str:
    """``module:qualname`` of a class or factory, checked to import back to the very object."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ConfigError(f"model {obj!r}: a model given from Python must be a class or function defined at "
                          "module level (runs record its import string module:name)")
    name = f"{module}:{qualname}"
    if _import(name) is not obj:
        raise ConfigError(f"model {name}: importing it gives another object than the one given")
    return name


def installed() -> list[tuple[str, str, str]]:
    """The entry points of group ``mutualctr.models``: (name, import string, distribution)."""
    return sorted((ep.name, ep.value, getattr(ep.dist, "name", None) or "?") for ep in _entry_points())


def check_output(model: nn.Module, name: str, ids) -> None:
    """One forward on ``ids`` (a first batch: an ids tensor (B, F), or a store's batch of list and
    dense fields; in eval mode, no gradient): a ConfigError naming the model unless it returns
    floating logits of shape ``(B,)``."""
    rows = len(ids)
    given = f"ids of shape {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else f"a batch of {rows} rows"
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(ids)
    except Exception as e:
        raise ConfigError(f"model {name}: forward failed on {given}: {type(e).__name__}: {e}") from e
    finally:
        model.train(was)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if not isinstance(out, torch.Tensor) or shape != (rows,) or not out.is_floating_point():
        raise ConfigError(f"model {name}: forward must return float logits of shape ({rows},) for "
                          f"{given}, got {shape}")


def label(name: str) -> str:
    """A short, path-safe label of a model name (member directories): the class name of an
    import string, the name itself otherwise."""
    return name.rsplit(":", 1)[-1].rsplit(".", 1)[-1] if ":" in name else name
