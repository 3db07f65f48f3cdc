"""Encode raw rows with a prepared store's vocabularies (for prediction on new files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mutualctr.config import ConfigError
from mutualctr.data.fields import Encoder, encode_parts, fields_for_store  # noqa: F401 (Encoder: its old home)
from mutualctr.data.reader import Chunk, TableReader
from mutualctr.data.schema import Schema, schema_from_dict
from mutualctr.data.store import SplitArrays, Store
from mutualctr.data.transform import ChunkTransformer, Transformed
from mutualctr.errors import DataError


def bad_row_error(chunk: Chunk, t: Transformed) -> DataError:
    row, col, msg = t.first_error()
    return DataError(f"{chunk.path}:{chunk.line(row)}: column {col}: {msg}")


@dataclass
class EncodedRows:
    X: np.ndarray  # int32 (rows, len(id_fields)) global ids of the one-id fields
    labels: np.ndarray | None  # float32 (rows,), None when the file has no label column
    kept: dict[str, np.ndarray] = field(default_factory=dict)  # raw values of `keep` columns
    rejected: int = 0
    rejected_lines: list[int] = field(default_factory=list)
    #: list field name -> int32 (rows, max_length), padded with 0 (as in the store's bags files)
    bags: dict[str, np.ndarray] = field(default_factory=dict)
    values: np.ndarray | None = None  # float32 (rows, n_dense); None without dense fields
    missing: np.ndarray | None = None  # bool (rows, n_dense); None without dense fields

    @property
    def inputs(self):
        """What a model scores (``predict_logits``): ``X``, or with list or dense fields the rows
        as a :class:`~mutualctr.data.store.SplitArrays` (labels 0 when the file has none)."""
        if not self.bags and self.values is None:
            return self.X
        y = self.labels if self.labels is not None else np.zeros(len(self.X), np.float32)
        return SplitArrays(self.X, y, dict(self.bags), self.values, self.missing)


def encode_file(store: Store, path: Path, keep: Sequence[str] = (),
                on_bad_rows: str = "error") -> EncodedRows:
    """Encode a raw file of the store's schema (label column optional) with its fields exactly
    as prepare did (:func:`mutualctr.data.fields.fields_for_store`: vocabularies, hashes, list
    lengths, dense statistics)."""
    if on_bad_rows not in ("error", "skip"):
        raise ConfigError(f"on_bad_rows: expected 'error' or 'skip', got {on_bad_rows!r}")
    schema: Schema = schema_from_dict(store.feature_map.schema)
    path = Path(path)
    reader = TableReader(schema, path, on_bad_rows, optional=(schema.label,))
    for c in keep:
        if c not in reader.columns:
            raise DataError(f"{path}: no column {c!r} to keep (columns: {', '.join(reader.columns)})")
    has_label = schema.label in reader.columns
    transform = ChunkTransformer(schema, need_label=False)
    fields = fields_for_store(store)
    parts: list[dict[str, np.ndarray]] = []
    rejected, bad_rows = 0, []
    for chunk in reader:
        t = transform(chunk.batch)
        ok = slice(None)
        if t.errors:
            if on_bad_rows == "error":
                raise bad_row_error(chunk, t)
            ok = ~t.bad
            rejected += int(t.bad.sum())
            bad_rows += [chunk.line(int(i)) for i in np.flatnonzero(t.bad)[:5]]
        none = np.zeros(chunk.batch.num_rows, bool)
        part = encode_parts(fields, [f.read(tok, none)[0] for f, tok in zip(fields, t.tokens)])
        if has_label:
            part["y"] = t.label
        for c in keep:
            part[f"keep.{c}"] = chunk.batch.column(c).to_numpy(zero_copy_only=False)
        parts.append({k: v[ok] for k, v in part.items()})
    lines = sorted(bad_rows[:5] + reader.bad_width_lines(5))[:5]
    return _rows(store, parts, has_label, keep, rejected + reader.skipped, lines)


def _rows(store: Store, parts: list[dict[str, np.ndarray]], has_label: bool, keep: Sequence[str],
          rejected: int, lines: list[int]) -> EncodedRows:
    """The chunks' arrays concatenated (empty arrays of the right shapes for an empty file)."""
    fm = store.feature_map
    empty = {"X": np.zeros((0, len(fm.id_fields)), np.int32), "y": np.zeros(0, np.float32),
             **{f"keep.{c}": np.array([]) for c in keep}}
    for name, (dtype, shape) in fm.arrays("").items():
        empty[name[1:-4]] = np.zeros((0, *shape), dtype)  # ".bags.NNN.npy" -> "bags.NNN"

    def cat(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts]) if parts else empty[key]

    names = [f.name for f in fm.fields]
    dense = bool(fm.dense_fields)
    return EncodedRows(cat("X"), cat("y") if has_label else None, {c: cat(f"keep.{c}") for c in keep},
                       rejected, lines,
                       bags={names[i]: cat(f"bags.{i:03d}") for i in fm.bag_fields},
                       values=cat("values") if dense else None, missing=cat("missing") if dense else None)
