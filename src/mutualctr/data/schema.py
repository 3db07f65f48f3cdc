"""Table schemas: the built-in ``criteo`` and ``avazu`` layouts and user schemas in YAML.

A schema says how to read a raw CTR table (format, separator, header, column names), which
column is the label (and how to map its raw values to 0/1), and what each other column
becomes: a categorical field, a numeric field bucketed as ``floor(ln(v)^2)``, an Avazu-style
``YYMMDDHH`` time column (three fields: hour of day, weekday, weekend flag), a multi-valued
field (a list of tokens, pooled), a sequence (a list of tokens, most recent last, optionally
sharing another field's vocabulary), a dense value, a hashed id, or nothing.
See docs/data.md for the YAML reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mutualctr import resources
from mutualctr.config import ConfigError, from_dict, load_config, to_dict

CRITEO_INT = [f"I{i}" for i in range(1, 14)]
CRITEO_CAT = [f"C{i}" for i in range(1, 27)]
AVAZU_COLUMNS = [
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
]

#: kinds of store fields
CATEGORICAL = "categorical"
NUMERIC = "numeric-bucketed"
HOUR = "hour-of-day"
WEEKDAY = "weekday"
WEEKEND = "weekend"
MULTI = "multi-valued"
SEQUENCE = "sequence"
DENSE = "dense"
HASHED = "hashed"
#: the kinds whose field is one id per row (a column of the split matrices ``X``)
SINGLE_KINDS = (CATEGORICAL, NUMERIC, HOUR, WEEKDAY, WEEKEND, HASHED)
#: the kinds whose field is a padded list of ids per row (a ``bags`` matrix)
LIST_KINDS = (MULTI, SEQUENCE)

#: schema keys of the list, dense and hashed kinds: left out of the schema's recorded form when
#: empty, so that a schema without them records (and fingerprints) exactly as before they existed
KIND_KEYS = ("multi_valued", "sequence", "dense", "hashed")
_ROLES = ("categorical", "numeric", "hour", "drop", *KIND_KEYS)


@dataclass
class MultiValuedSpec:
    """``multi_valued: {col: {...}}``: a list of tokens per cell, pooled into one field vector;
    order ignored; the values are counted and min-count-filtered like categorical ones."""

    max_length: int  # items kept per row (the first ones; the rest are dropped and counted)
    separator: str = "|"  # between items in a text cell (parquet list columns need none)
    pooling: Literal["mean", "sum"] = "mean"


@dataclass
class SequenceSpec:
    """``sequence: {col: {...}}``: a list of tokens per cell, most recent last."""

    max_length: int  # the most recent (last) items kept; older ones are dropped and counted
    separator: str = "|"
    #: a categorical field whose vocabulary (and embedding rows) the items share; None: the
    #: sequence counts its own values like a multi-valued field
    vocab_from: str | None = None


@dataclass
class DenseSpec:
    """``dense: {col: {...}}``: a number used as a value (empty cell = missing)."""

    #: ``log1p``: log(1 + v) (v must be > -1); ``standardize``: (v - mean) / std with the train
    #: split's mean and (population) std of the present values
    transform: Literal["none", "log1p", "standardize"] = "none"


@dataclass
class HashedSpec:
    """``hashed: {col: {...}}``: id = xxh64(raw text, seed HASH_SEED) mod buckets; no vocabulary."""

    buckets: int


@dataclass
class Schema:
    """How to read one CTR table. Every key is optional except ``label`` (default ``label``)."""

    name: str = "custom"
    format: Literal["csv", "tsv", "parquet"] = "csv"
    #: field separator; default ``,`` for csv and a tab for tsv
    separator: str | None = None
    #: whether the first line holds the column names; ``auto`` = yes when it equals ``columns``
    header: bool | Literal["auto"] = True
    #: whether ``"`` quotes fields (csv); off is faster and right for Criteo/Avazu
    quoting: bool = True
    #: column names in file order; required without a header, checked against it with one
    columns: list[str] = field(default_factory=list)
    label: str = "label"
    #: raw label value -> 0/1, e.g. {"-1": 0, "1": 1}; default: the values 0 and 1
    label_map: dict[Any, int] = field(default_factory=dict)
    categorical: list[str] = field(default_factory=list)
    #: numbers bucketed as floor(ln(v)^2) for v > 2, else v, then used as a categorical token
    numeric: list[str] = field(default_factory=list)
    #: ``integer``: numeric columns must hold integers; ``number``: decimals too (floored)
    numeric_values: Literal["integer", "number"] = "integer"
    #: YYMMDDHH columns -> three fields <col>.hour_of_day, <col>.weekday, <col>.weekend
    hour: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    #: what to do with a file column named nowhere above
    others: Literal["error", "categorical", "drop"] = "error"
    #: values seen fewer times than this in the train split map to the field's OOV index
    min_count: int = 1
    min_count_per_column: dict[str, int] = field(default_factory=dict)
    #: column -> how its cells are lists of tokens (pooled) / sequences / dense values / hashed ids
    multi_valued: dict[str, MultiValuedSpec] = field(default_factory=dict)
    sequence: dict[str, SequenceSpec] = field(default_factory=dict)
    dense: dict[str, DenseSpec] = field(default_factory=dict)
    hashed: dict[str, HashedSpec] = field(default_factory=dict)
    #: a one-id field (categorical, numeric or hashed column) whose values group the rows for the
    #: grouped AUC (``gauc`` of ``evaluate``), e.g. ``user_id``; left out of the recorded form when unset
    group_by: str | None = None

    def __post_init__(self) -> None:
        self.label_map = {str(k): v for k, v in self.label_map.items()}
        for k, v in self.label_map.items():
            if v not in (0, 1):
                raise ConfigError(f"label_map.{k}: must map to 0 or 1, got {v!r}")
        if self.min_count < 1:
            raise ConfigError(f"min_count: must be >= 1, got {self.min_count}")
        if self.format == "parquet" and self.header is False:
            raise ConfigError("header: parquet files always carry their column names")
        if self.header is not True and self.format != "parquet" and not self.columns:
            raise ConfigError(f"columns: required when header is {str(self.header).lower()}")
        seen: dict[str, str] = {}
        for role in _ROLES:
            for col in getattr(self, role):
                if col == self.label:
                    raise ConfigError(f"{role}: {col!r} is the label column")
                if col in seen:
                    raise ConfigError(f"{role}: {col!r} is already listed under {seen[col]}")
                seen[col] = role
        if self.columns:
            if len(set(self.columns)) != len(self.columns):
                raise ConfigError("columns: names must be unique")
            for col in seen:
                if col not in self.columns:
                    raise ConfigError(f"{seen[col]}: {col!r} is not one of columns")
            if self.label not in self.columns:
                raise ConfigError(f"label: {self.label!r} is not one of columns")
        for col in self.min_count_per_column:
            if self.columns and col not in self.columns:
                raise ConfigError(f"min_count_per_column: {col!r} is not one of columns")
        if self.separator is not None and (len(self.separator) != 1 or self.separator in '"\r\n'):
            raise ConfigError(f"separator: must be one character other than a quote or a line break, got "
                              f"{self.separator!r} (default: ',' for csv, a tab for tsv)")
        self._check_kinds(seen)
        if self.group_by is not None:
            self._check_group_by(seen)

    def _check_group_by(self, roles: dict[str, str]) -> None:
        """``group_by`` names a column that becomes one id per row (as far as columns are known)."""
        col = self.group_by
        role = "the label" if col == self.label else roles.get(col)
        if role is None and self.columns:
            if col not in self.columns:
                raise ConfigError(f"group_by: {col!r} is not a field (no such column; columns: "
                                  f"{', '.join(self.columns)})")
            role = "categorical" if self.others == "categorical" else f"others: {self.others}"
        if role is None and not self.columns and self.others != "categorical":
            raise ConfigError(f"group_by: {col!r} is not a field (not listed under categorical, numeric "
                              "or hashed)")
        if role is not None and role not in ("categorical", "numeric", "hashed"):
            raise ConfigError(f"group_by: {col!r} is not a one-id field (it is under {role}); group by a "
                              "categorical, numeric or hashed column")

    def _check_kinds(self, roles: dict[str, str]) -> None:
        """The list kinds' lengths and separators, hashed buckets and ``vocab_from`` (as far as
        the columns are known); errors name the key."""
        for role in ("multi_valued", "sequence"):
            for col, spec in getattr(self, role).items():
                if spec.max_length < 1:
                    raise ConfigError(f"{role}.{col}.max_length: must be >= 1, got {spec.max_length}")
                if not spec.separator:
                    raise ConfigError(f"{role}.{col}.separator: must not be empty")
                if self.format != "parquet" and spec.separator == self.sep:
                    raise ConfigError(
                        f"{role}.{col}.separator: {spec.separator!r} is also the column separator; "
                        "pick another one for the items")
        for col, spec in self.hashed.items():
            if spec.buckets < 1:
                raise ConfigError(f"hashed.{col}.buckets: must be >= 1, got {spec.buckets}")
        for col, spec in self.sequence.items():
            if spec.vocab_from is not None:
                self._check_vocab_from(f"sequence.{col}.vocab_from", spec.vocab_from, roles)

    def _check_vocab_from(self, where: str, src: str, roles: dict[str, str]) -> None:
        role = "the label" if src == self.label else roles.get(src)
        if role is None and self.columns:
            if src not in self.columns:
                raise ConfigError(f"{where}: no column {src!r} (columns: {', '.join(self.columns)})")
            role = "categorical" if self.others == "categorical" else f"others: {self.others}"
        if role is not None and role != "categorical":
            raise ConfigError(f"{where}: {src!r} is not a categorical field (it is under {role}); "
                              "a sequence shares the vocabulary of a categorical field")

    @property
    def sep(self) -> str:
        if self.separator is not None:
            return self.separator
        return "\t" if self.format == "tsv" else ","

    def role(self, col: str) -> str:
        """``label``, ``categorical``, ``numeric``, ``hour``, ``drop`` or one of
        :data:`KIND_KEYS` for a file column."""
        if col == self.label:
            return "label"
        for role in _ROLES:
            if col in getattr(self, role):
                return role
        if self.others == "error":
            raise ConfigError(
                f"column {col!r} is not listed under categorical, numeric, hour, drop, "
                "multi_valued, sequence, dense or hashed (or set others: categorical|drop)"
            )
        return self.others

    def spec(self, col: str) -> MultiValuedSpec | SequenceSpec | DenseSpec | HashedSpec | None:
        """The spec of a multi-valued, sequence, dense or hashed column (None for the others)."""
        for role in KIND_KEYS:
            if col in getattr(self, role):
                return getattr(self, role)[col]
        return None

    def as_dict(self) -> dict[str, Any]:
        """The plain form recorded in a store (and fingerprinted): :func:`to_dict` without the
        list, dense and hashed keys when they are empty (so older schemas record as before)."""
        d = to_dict(self)
        for key in KIND_KEYS:
            if not d[key]:
                del d[key]
        if d["group_by"] is None:
            del d["group_by"]
        return d

    def resolve(self, columns: list[str]) -> "Schema":
        """This schema with ``columns`` filled in from a file's header (checked)."""
        if self.columns:
            return self
        d = to_dict(self)
        d["columns"] = list(columns)
        return from_dict(Schema, d)

    def fields(self) -> list[tuple[str, str, str]]:
        """Store fields in order: (field name, kind, source column)."""
        out: list[tuple[str, str, str]] = []
        for col in self.columns:
            role = self.role(col)
            if role == "categorical":
                out.append((col, CATEGORICAL, col))
            elif role == "numeric":
                out.append((col, NUMERIC, col))
            elif role == "hour":
                out += [(f"{col}.hour_of_day", HOUR, col), (f"{col}.weekday", WEEKDAY, col),
                        (f"{col}.weekend", WEEKEND, col)]
            elif role in KIND_KEYS:
                out.append((col, _KIND_OF_ROLE[role], col))
        if not out:
            raise ConfigError("the schema yields no feature fields")
        return out

    def min_count_for(self, col: str, override: int | None) -> int:
        if col in self.min_count_per_column:
            return self.min_count_per_column[col]
        return override if override is not None else self.min_count


_KIND_OF_ROLE = {"multi_valued": MULTI, "sequence": SEQUENCE, "dense": DENSE, "hashed": HASHED}


def criteo_schema() -> Schema:
    return Schema(name="criteo", format="tsv", header=False, quoting=False,
                  columns=["label", *CRITEO_INT, *CRITEO_CAT], label="label",
                  numeric=list(CRITEO_INT), categorical=list(CRITEO_CAT), min_count=10)


def avazu_schema() -> Schema:
    return Schema(name="avazu", format="csv", header="auto", quoting=False,
                  columns=list(AVAZU_COLUMNS), label="click", hour=["hour"], drop=["id"],
                  others="categorical", min_count=2)


BUILTIN = {"criteo": criteo_schema, "avazu": avazu_schema}


def load_schema(dataset: str | Path) -> Schema:
    """``criteo``, ``avazu``, the path of a schema YAML, or the name of a schema shipped in
    ``mutualctr/configs/schemas`` (``criteo_csv``; ``mutualctr schemas`` lists them; a file of
    that name wins). Unknown keys raise ConfigError."""

    if isinstance(dataset, str) and dataset in BUILTIN:
        return BUILTIN[dataset]()
    path = Path(dataset)
    if not path.is_file() and str(dataset) in resources.schema_names():
        path = resources.schema_path(str(dataset))
    if not path.is_file():
        raise ConfigError(
            f"dataset {str(dataset)!r}: not 'criteo', 'avazu' or an existing schema YAML file, nor a "
            f"shipped schema ({', '.join(resources.schema_names())}: mutualctr schemas lists them)"
        )
    return load_config(Schema, path)


def schema_from_dict(d: dict[str, Any]) -> Schema:
    return from_dict(Schema, d)
