"""Typed, strict configuration loading shared by schemas, models and training.

Every config in mutualctr is a frozen-ish ``@dataclass``. :func:`from_dict` builds one
from plain YAML data and rejects unknown keys and wrongly typed values with a
:class:`ConfigError` that names the key path (``model.mlp.hidden[1]``) and, where
known, the file. There is no ``**kwargs`` plumbing and no ``eval``.

The dataclasses check their own values in ``__post_init__`` with :func:`check_fields` (types,
``Literal`` choices) and :func:`check_range` (finite, within bounds), so a value set by a CLI
flag through ``dataclasses.replace`` gets the same error as one read from YAML. YAML files are
read with a loader that rejects duplicate keys (:func:`load_yaml`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from mutualctr.errors import ConfigError, input_problem

__all__ = ["ConfigError", "check_fields", "check_range", "from_dict", "load_config", "load_yaml",
           "to_dict"]

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    if tp is type(None):
        return "null"
    return _PLAIN_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


_PLAIN_NAMES = {float: "number", int: "integer", str: "string", bool: "true/false"}


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{where}: expected one of {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, f"{where}.<key>"): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: cannot read {value!r} as {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise ConfigError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    prefix = f"{where}." if where else ""
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s} (allowed: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {prefix}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(obj: Any, section: str) -> None:
    """Check (and normalise, e.g. int -> float) every init field of dataclass ``obj`` against
    its annotation; errors name ``section.field``. For ``__post_init__``: values given to the
    constructor or to ``dataclasses.replace`` are checked like values read from YAML."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.init:
            setattr(obj, f.name, _convert(getattr(obj, f.name), hints[f.name], f"{section}.{f.name}"))


def _bound(x: float) -> str:
    return repr(x) if isinstance(x, float) and not x.is_integer() else str(int(x))


def check_range(key: str, value: float, *, ge: float | None = None, gt: float | None = None,
                le: float | None = None, lt: float | None = None) -> None:
    """Raise ConfigError unless ``value`` is a finite number within the given bounds, e.g.
    ``train.epochs must be >= 1, got 0`` or ``optim.beta1 must be in [0, 1), got 1.5``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    lo = (f"[{_bound(ge)}" if ge is not None else f"({_bound(gt)}" if gt is not None else None)
    hi = (f"{_bound(le)}]" if le is not None else f"{_bound(lt)})" if lt is not None else None)
    ok = ((ge is None or value >= ge) and (gt is None or value > gt)
          and (le is None or value <= le) and (lt is None or value < lt))
    if ok:
        return
    if lo and hi:
        rule = f"in {lo}, {hi}"
    elif lo:
        rule = (">= " if lo[0] == "[" else "> ") + lo[1:]
    else:
        rule = ("<= " if hi[-1] == "]" else "< ") + hi[:-1]
    raise ConfigError(f"{key} must be {rule}, got {value!r}")


SEED_MAX = 2**32 - 1  # numpy's seeds; torch's and the split hash take these too


def check_seed(key: str, value: Any) -> int:
    """``value`` as a seed: an integer in [0, 2**32 - 1], else a ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{key} must be an integer in [0, {SEED_MAX}], got {value!r}")
    return value


def check_seeds(key: str, values: Any) -> list[int]:
    """A list of seeds (:func:`check_seed` each); a single string or number is refused."""
    if isinstance(values, (str, bytes, int, float)) or not hasattr(values, "__iter__"):
        raise ConfigError(f"{key}: expected a list of integers, got {values!r}")
    return [check_seed(key, v) for v in values]


def to_dict(obj: Any) -> Any:
    """Plain (YAML/JSON-safe) form of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated in one mapping (PyYAML keeps the last silently;
    YAML itself requires unique keys). Keys brought in by a ``<<`` merge may be overridden."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {first})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file (and line, for syntax errors and duplicate
    keys)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a YAML file")
    if (problem := input_problem(path)) is not None:
        raise ConfigError(f"{path}: {problem}")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{at}: invalid YAML: {getattr(e, 'problem', e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path, where: str = "") -> T:
    """``from_dict`` on a YAML file, with the file named in any error."""
    try:
        return from_dict(cls, load_yaml(path), where)
    except ConfigError as e:
        if str(path) in str(e):
            raise
        raise ConfigError(f"{path}: {e}") from e
