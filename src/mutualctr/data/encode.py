"""Encode raw rows with a prepared store's vocabularies (for prediction on new files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mutualctr.config import ConfigError
from mutualctr.data.reader import Chunk, TableReader
from mutualctr.data.schema import Schema, schema_from_dict
from mutualctr.data.store import FIRST, MISSING, OOV, Store
from mutualctr.data.transform import ChunkTransformer, Transformed
from mutualctr.errors import DataError, StoreError


class Encoder:
    """Field tokens -> int32 (rows, F) global ids: vocabulary value i -> offset + 2 + i,
    unseen or rare -> offset + OOV, missing -> offset + MISSING.

    Works per chunk dictionary: each distinct token is looked up once (``index_in``), the
    rows then take their id from that small table.
    """

    def __init__(self, vocabs: Sequence[pa.Array], offsets: Sequence[int]) -> None:
        self.vocabs = list(vocabs)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def column(self, f: int, tok: pa.Array) -> np.ndarray:
        """Global ids (int32) of one field's tokens."""
        d = tok if pa.types.is_dictionary(tok.type) else pc.dictionary_encode(tok)
        values = d.dictionary
        vocab = self.vocabs[f]
        if values.type != vocab.type:
            values = values.cast(vocab.type)
        lut = pc.index_in(values, value_set=vocab).fill_null(OOV - FIRST)
        lut = lut.to_numpy(zero_copy_only=False).astype(np.int64) + FIRST
        lut = (np.append(lut, MISSING) + self.offsets[f]).astype(np.int32)  # index -1: missing
        return lut[d.indices.fill_null(-1).to_numpy(zero_copy_only=False)]

    def __call__(self, tokens: Sequence[pa.Array]) -> np.ndarray:
        n = len(tokens[0]) if tokens else 0
        X = np.empty((n, len(self.vocabs)), dtype=np.int32)
        for f, tok in enumerate(tokens):
            X[:, f] = self.column(f, tok)
        return X

    @classmethod
    def for_store(cls, store: Store) -> "Encoder":
        fm = store.feature_map
        return cls([store.vocab(i) for i in range(fm.num_fields)], [f.offset for f in fm.fields])


def bad_row_error(chunk: Chunk, t: Transformed) -> DataError:
    row, col, msg = t.first_error()
    return DataError(f"{chunk.path}:{chunk.line(row)}: column {col}: {msg}")


@dataclass
class EncodedRows:
    X: np.ndarray  # int32 (rows, F) global ids
    labels: np.ndarray | None  # float32 (rows,), None when the file has no label column
    kept: dict[str, np.ndarray] = field(default_factory=dict)  # raw values of `keep` columns
    rejected: int = 0
    rejected_lines: list[int] = field(default_factory=list)


def encode_file(store: Store, path: Path, keep: Sequence[str] = (),
                on_bad_rows: str = "error") -> EncodedRows:
    """Encode a raw file of the store's schema (label column optional) with its vocabularies."""
    if on_bad_rows not in ("error", "skip"):
        raise ConfigError(f"on_bad_rows: expected 'error' or 'skip', got {on_bad_rows!r}")
    schema: Schema = schema_from_dict(store.feature_map.schema)
    other = [f.name for f in store.feature_map.fields if f.spec is not None]
    if other:
        raise StoreError(f"{store.path}: encoding raw rows of a store with hashed, multi-valued, "
                         f"sequence or dense fields is not supported yet (field {other[0]!r})")
    path = Path(path)
    reader = TableReader(schema, path, on_bad_rows, optional=(schema.label,))
    for c in keep:
        if c not in reader.columns:
            raise DataError(f"{path}: no column {c!r} to keep (columns: {', '.join(reader.columns)})")
    has_label = schema.label in reader.columns
    transform = ChunkTransformer(schema, need_label=False)
    encoder = Encoder.for_store(store)
    xs, ys, kept = [], [], {c: [] for c in keep}
    rejected, bad_rows = 0, []
    for chunk in reader:
        t = transform(chunk.batch)
        ok = None
        if t.errors:
            if on_bad_rows == "error":
                raise bad_row_error(chunk, t)
            ok = ~t.bad
            rejected += int(t.bad.sum())
            bad_rows += [chunk.line(int(i)) for i in np.flatnonzero(t.bad)[:5]]
        X = encoder(t.tokens)
        xs.append(X if ok is None else X[ok])
        if has_label:
            ys.append(t.label if ok is None else t.label[ok])
        for c in keep:
            v = chunk.batch.column(c).to_numpy(zero_copy_only=False)
            kept[c].append(v if ok is None else v[ok])
    F = store.feature_map.num_fields
    X = np.concatenate(xs) if xs else np.zeros((0, F), np.int32)
    y = (np.concatenate(ys) if ys else np.zeros(0, np.float32)) if has_label else None
    lines = sorted(bad_rows[:5] + reader.bad_width_lines(5))[:5]
    return EncodedRows(X, y, {c: np.concatenate(v) if v else np.array([]) for c, v in kept.items()},
                       rejected + reader.skipped, lines)
