"""Table schemas: the built-in ``criteo`` and ``avazu`` layouts and user schemas in YAML.

A schema says how to read a raw CTR table (format, separator, header, column names), which
column is the label (and how to map its raw values to 0/1), and what each other column
becomes: a categorical field, a numeric field bucketed as ``floor(ln(v)^2)``, an Avazu-style
``YYMMDDHH`` time column (three fields: hour of day, weekday, weekend flag) or nothing.
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
        for role in ("categorical", "numeric", "hour", "drop"):
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

    @property
    def sep(self) -> str:
        if self.separator is not None:
            return self.separator
        return "\t" if self.format == "tsv" else ","

    def role(self, col: str) -> str:
        """``label``, ``categorical``, ``numeric``, ``hour`` or ``drop`` for a file column."""
        if col == self.label:
            return "label"
        for role in ("categorical", "numeric", "hour", "drop"):
            if col in getattr(self, role):
                return role
        if self.others == "error":
            raise ConfigError(
                f"column {col!r} is not listed under categorical, numeric, hour or drop "
                "(or set others: categorical|drop)"
            )
        return self.others

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
        if not out:
            raise ConfigError("the schema yields no feature fields")
        return out

    def min_count_for(self, col: str, override: int | None) -> int:
        if col in self.min_count_per_column:
            return self.min_count_per_column[col]
        return override if override is not None else self.min_count


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
