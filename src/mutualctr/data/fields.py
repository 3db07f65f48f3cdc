"""Store fields: what each step of :class:`mutualctr.data.prepare.StoreBuilder` does for one
field. A field kind is one :class:`_Field` subclass:

- :class:`_CountedField`: categorical, numeric-bucketed and the hour fields: one id per row, the
  train split's values kept at ``min_count``;
- :class:`_HashedField`: one id per row, ``offset + 2 + xxh64(text, seed=HASH_SEED) % buckets``;
  nothing counted, no vocabulary;
- :class:`_ListField`: multi-valued and sequence fields: a padded ``(rows, max_length)`` id
  matrix per split (pad id :data:`PAD`), counted like categorical values, or sharing another
  field's ids (``vocab_from``);
- :class:`_DenseField`: a float value per row and a missing flag, optionally standardized with
  the train split's statistics;
- :class:`_ParentField`: a field of a ``--vocab-from`` parent store, taken as it is.

``slot`` says where a field's encoded rows go: ``ids`` (a column of ``<split>.X.npy``), ``bags``
(its own ``<split>.bags.NNN.npy``) or ``dense`` (a column of ``<split>.values.npy`` and
``<split>.missing.npy``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from mutualctr.config import ConfigError, to_dict
from mutualctr.data.schema import (
    DENSE,
    HASHED,
    LIST_KINDS,
    SEQUENCE,
    DenseSpec,
    HashedSpec,
    MultiValuedSpec,
    Schema,
    SequenceSpec,
    schema_from_dict,
)
from mutualctr.data.store import FIRST, MISSING, OOV, PAD, FieldInfo, Store, write_vocab
from mutualctr.data.transform import truncate

#: the seed of the hashed fields' xxh64 (part of the id formula: never change it)
HASH_SEED = 0


class _Counts:
    """Running value counts of one field.

    Each chunk's (value, count) pairs wait in ``pending`` until they are as many as the merged
    table's rows (and at least ``MERGE_MIN``); then all are merged with one ``group_by``. A
    merge costs O(merged + pending) <= O(2 * pending + MERGE_MIN), so counting is amortised
    linear in the pairs added, and memory is bounded by the field's distinct values, not by the
    rows: at most ~2x the distinct values (+ MERGE_MIN pairs) are held at any time. (Merging
    only when the pending pairs exceed a large fixed floor let every field hold up to a million
    pairs of chunk-local duplicates: ~10M pairs, ~190 MiB and much allocator fragmentation at
    20M rows.) The merged counts are exact and the vocabulary is sorted by value, so the
    merge schedule never changes a store.
    """

    MERGE_MIN = 1 << 16

    def __init__(self, value_type: pa.DataType) -> None:
        self.type = value_type
        self.merged = pa.table({"value": pa.array([], value_type), "count": pa.array([], pa.int64())})
        self.pending: list[pa.Table] = []
        self.pending_len = 0
        self.merges = 0  # (for tests)

    def add_counts(self, values: pa.Array, counts: np.ndarray) -> None:
        keep = counts > 0
        if not keep.any():
            return
        if not keep.all():
            values = values.filter(pa.array(keep))
            counts = counts[keep]
        self.pending.append(pa.table({"value": values.cast(self.type),
                                      "count": pa.array(counts, pa.int64())}))
        self.pending_len += len(values)
        if self.pending_len >= max(self.MERGE_MIN, self.merged.num_rows):
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        t = pa.concat_tables([self.merged, *self.pending])
        g = t.group_by("value").aggregate([("count", "sum")])
        self.merged = pa.table({"value": g.column("value").combine_chunks(),
                                "count": g.column("count_sum").combine_chunks()})
        self.pending, self.pending_len = [], 0
        self.merges += 1

    def vocabulary(self, min_count: int) -> tuple[pa.Array, pa.Array]:
        """Values with count >= min_count, sorted by value (deterministic ids)."""
        self._merge()
        t = self.merged.filter(pc.greater_equal(self.merged.column("count"), min_count))
        t = t.sort_by("value")
        return t.column("value").combine_chunks(), t.column("count").combine_chunks()


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


def _dictionary(tok: pa.Array) -> pa.DictionaryArray:
    return tok if pa.types.is_dictionary(tok.type) else pc.dictionary_encode(tok)


class _Field:
    """One store field through :class:`StoreBuilder`'s steps; a field kind is a subclass.

    ``read`` runs on pass 1's worker threads and only returns (it stores nothing); ``add``,
    ``fit`` and ``encode`` run in chunk order. By default a field spills its tokens
    dictionary-encoded and becomes one int32 column of the split matrices (``slot = "ids"``).
    """

    slot = "ids"
    #: the field whose ids this one shares (fitted after it), else None
    shares: str | None = None

    def __init__(self) -> None:
        self.encoder: Encoder | None = None  # set by fit

    def read(self, tok: pa.Array, train: np.ndarray) -> tuple[pa.Array, Any]:
        """Pass 1, one chunk's tokens -> (the column to spill, what ``add`` takes)."""
        return _dictionary(tok), None

    def add(self, counted: Any) -> None:
        """Pass 1: fold in what ``read`` counted in one chunk (nothing by default)."""

    def fit(self, path: Path, offset: int, fitted: dict[str, "_Field"]) -> tuple[FieldInfo, pa.Array]:
        """The field's ids, its embedding rows from ``offset``; writes its vocabulary to ``path``.
        ``fitted``: the fields fitted so far, by name (a shared field's source is among them)."""
        raise NotImplementedError

    def encode(self, col: pa.Array) -> Any:
        """Pass 2: a spilled column -> int32 global ids (rows,) (``bags``: (rows, max_length);
        ``dense``: float32 values and bool missing flags)."""
        return self.encoder.column(0, col)

    def adopt(self, info: FieldInfo, vocab: pa.Array) -> None:
        """Encode with a fitted field's ids instead of fitting (``info`` and ``vocab`` from a
        store: ``--vocab-from`` and :func:`encode_tokens` on new rows)."""
        self.encoder = Encoder([vocab], [info.offset])
        self.info = info


class _CountedField(_Field):
    """A field whose vocabulary is the values seen at least ``min_count`` times in the train
    split, sorted by value (categorical, numeric-bucketed and the hour fields)."""

    def __init__(self, name: str, kind: str, column: str, min_count: int) -> None:
        super().__init__()
        self.name, self.kind, self.column, self.min_count = name, kind, column, min_count
        self.counts: _Counts | None = None
        self.info: FieldInfo | None = None  # set by fit

    def read(self, tok: pa.Array, train: np.ndarray) -> tuple[pa.Array, Any]:
        d = _dictionary(tok)
        idx = d.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        sel = idx[train]
        return d, (d.dictionary, np.bincount(sel[sel >= 0], minlength=len(d.dictionary)))

    def add(self, counted: tuple[pa.Array, np.ndarray]) -> None:
        values, counts = counted
        if self.counts is None:  # the first chunk's value type is the field's
            self.counts = _Counts(values.type)
        self.counts.add_counts(values, counts)

    def fit(self, path: Path, offset: int, fitted: dict[str, _Field]) -> tuple[FieldInfo, pa.Array]:
        if self.counts is None:  # no train row held a value
            self.counts = _Counts(pa.string())
        return self.fitted(path, offset, *self.counts.vocabulary(self.min_count))

    def fitted(self, path: Path, offset: int, values: pa.Array, counts: pa.Array) -> tuple[FieldInfo, pa.Array]:
        """Take ``values`` (with their ``counts``) as the field's vocabulary, its rows from ``offset``."""
        self.counts = None  # not needed again
        write_vocab(path, values, counts)
        self.encoder = Encoder([values], [offset])
        self.info = FieldInfo(self.name, self.kind, self.column, FIRST + len(values), offset, offset,
                              offset + 1, self.min_count, spec=self.spec())
        return self.info, values

    def spec(self) -> dict[str, Any] | None:
        """The kind's settings recorded in the field's FieldInfo (None for today's kinds)."""
        return None


class _ParentField(_Field):
    """A field of a ``--vocab-from`` child: field ``i`` of the parent store, its vocabulary
    (values and train counts), offset and settings as they are (``inner``, the field of its
    kind, adopts them); nothing is counted."""

    def __init__(self, parent: Store, i: int, inner: _Field) -> None:
        super().__init__()
        self.parent, self.i, self.inner = parent, i, inner
        self.slot = inner.slot
        self.info = parent.feature_map.fields[i]
        inner.adopt(self.info, parent.vocab(i))

    def __getattr__(self, name: str) -> Any:  # max_length, truncated, empty: the inner field's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def read(self, tok: pa.Array, train: np.ndarray) -> tuple[pa.Array, Any]:
        return self.inner.read(tok, np.zeros_like(train))  # no train rows: nothing counted

    def add(self, counted: Any) -> None:
        if self.slot == "bags":  # the lists cut and empty are counted for the child too
            self.inner.add((None, *counted[1:]))

    def fit(self, path: Path, offset: int, fitted: dict[str, _Field]) -> tuple[FieldInfo, pa.Array]:
        info = self.info
        if info.spec is None:
            table = self.parent.vocab_table(self.i)
            write_vocab(path, table.column("value").combine_chunks(), table.column("count").combine_chunks())
        else:  # hashed, dense, list: the parent's file as it is (a shared sequence's is empty)
            path.write_bytes((self.parent.path / "vocab" / path.name).read_bytes())
        return FieldInfo(**vars(info)), self.parent.vocab(self.i)

    def encode(self, col: pa.Array) -> Any:
        return self.inner.encode(col)


class _RelocatedField(_ParentField):
    """A hashed or dense field of a ``--grow`` child: the parent's settings as they are, its
    rows moved to the child's ``offset`` (fields before it may have grown)."""

    def fit(self, path: Path, offset: int, fitted: dict[str, _Field]) -> tuple[FieldInfo, pa.Array]:
        info, vocab = super().fit(path, offset, fitted)
        info = FieldInfo(**{**vars(info), "offset": offset, "oov_index": offset, "missing_index": offset + 1})
        self.inner.adopt(info, vocab)
        return info, vocab


def _grown_vocabulary(old: pa.Table, counts: "_Counts | None", min_count: int) -> tuple[pa.Array, pa.Array, int]:
    """A grown field's vocabulary: the parent's values (``old``, in its order) with their counts,
    then the values of ``counts`` (the new train rows') seen at least ``min_count`` times that the
    parent lacks, sorted by value, with their new counts; and how many values are new."""
    old_values = old.column("value").combine_chunks()
    if counts is None:
        counts = _Counts(old_values.type if len(old_values) else pa.string())
    new_values, new_counts = counts.vocabulary(min_count)
    if new_values.type != old_values.type and len(old_values):
        new_values = new_values.cast(old_values.type)
    if len(old_values):
        fresh = pc.invert(pc.is_in(new_values, value_set=old_values))
        new_values, new_counts = new_values.filter(fresh), new_counts.filter(fresh)
    values = pa.concat_arrays([old_values.cast(new_values.type), new_values])
    counts_out = pa.concat_arrays([old.column("count").combine_chunks().cast(pa.int64()),
                                   new_counts.cast(pa.int64())])
    return values, counts_out, len(new_values)


def _fit_grown(field: "_CountedField", old: pa.Table, path: Path, offset: int) -> tuple[FieldInfo, pa.Array]:
    """Fit a grown counted or list field (:func:`_grown_vocabulary`), its rows from ``offset``."""
    values, counts, field.grown = _grown_vocabulary(old, field.counts, field.min_count)
    return field.fitted(path, offset, values, counts)


class _GrownField(_CountedField):
    """A counted field (categorical, numeric-bucketed, hour) of a ``--grow`` child: the parent's
    values keep their local ids (``FIRST + i``, in the parent's order); the values of the new
    train rows seen at least ``min_count`` times that the parent lacks get the next local ids,
    sorted by value. The vocabulary file holds the parent's counts for its values and the new
    rows' counts for the new ones. The field's rows start at the child's ``offset``."""

    def __init__(self, parent: Store, i: int, min_count: int) -> None:
        info = parent.feature_map.fields[i]
        super().__init__(info.name, info.kind, info.column, min_count)
        self.old = parent.vocab_table(i)

    def fit(self, path: Path, offset: int, fitted: dict[str, _Field]) -> tuple[FieldInfo, pa.Array]:
        return _fit_grown(self, self.old, path, offset)


def grow_fields(parent: Store, schema: Schema, min_count: int | None) -> list[_Field]:
    """The fields of a ``--grow`` child of ``parent``: counted and list fields grow
    (:class:`_GrownField`, :class:`_GrownListField`; a sequence sharing another field's ids grows
    with that field), hashed and dense ones keep the parent's settings at their new offset."""
    out: list[_Field] = []
    for i, info in enumerate(parent.feature_map.fields):
        mc = info.min_count if min_count is None else schema.min_count_for(info.column, min_count)
        if info.kind in LIST_KINDS:
            out.append(_GrownListField(parent, i, mc, schema.spec(info.column)))
        elif info.spec is None:
            out.append(_GrownField(parent, i, mc))  # by default the parent's min count
        else:
            out.append(_RelocatedField(parent, i, make_field(schema, info.name, info.kind, info.column, 1)))
    return out


def _empty_vocab(path: Path) -> pa.Array:
    """Write the empty vocabulary of a field without values of its own; return its values."""
    values = pa.array([], pa.string())
    write_vocab(path, values, pa.array([], pa.int64()))
    return values


def hash_buckets(values: pa.Array, buckets: int) -> np.ndarray:
    """int64 ``xxh64(utf8(value), seed=HASH_SEED) % buckets`` of each (non-null) string."""
    return np.array([xxhash.xxh64_intdigest(v.encode("utf-8"), seed=HASH_SEED) % buckets
                     for v in values.to_pylist()], dtype=np.int64)


class _HashedField(_Field):
    """``hashed``: one id per row, ``offset + 2 + xxh64(text) % buckets`` (the raw text as UTF-8,
    seed :data:`HASH_SEED`), an empty cell the missing id ``offset + 1``; local id 0 (OOV) is
    never used. Nothing is counted: the same value has the same id in every store."""

    def __init__(self, name: str, kind: str, column: str, spec: HashedSpec) -> None:
        super().__init__()
        self.name, self.kind, self.column, self.buckets = name, kind, column, spec.buckets
        self.offset = 0

    def read(self, tok: pa.Array, train: np.ndarray) -> tuple[pa.Array, Any]:
        d = _dictionary(tok)
        lut = np.append(FIRST + hash_buckets(d.dictionary, self.buckets), MISSING).astype(np.int32)
        return pa.array(lut[d.indices.fill_null(-1).to_numpy(zero_copy_only=False)]), None

    def fit(self, path: Path, offset: int, fitted: dict[str, _Field]) -> tuple[FieldInfo, pa.Array]:
        self.offset = offset
        spec = {"buckets": self.buckets, "hash": "xxh64", "seed": HASH_SEED}
        info = FieldInfo(self.name, self.kind, self.column, FIRST + self.buckets, offset, offset,
                         offset + 1, 1, spec=spec)
        return info, _empty_vocab(path)

    def encode(self, col: pa.Array) -> np.ndarray:
        return col.to_numpy(zero_copy_only=False).astype(np.int32) + np.int32(self.offset)

    def adopt(self, info: FieldInfo, vocab: pa.Array) -> None:
        self.offset, self.info = info.offset, info


class _ListField(_CountedField):
    """``multi_valued`` and ``sequence``: a list of ids per row in a ``(rows, max_length)`` int32
    matrix, left-aligned and padded with :data:`PAD`; an empty list is one missing id. Lists are
    cut to ``max_length`` (a sequence keeps its last, most recent items; a multi-valued field its
    first) and the cut rows counted. The items are counted like categorical values, unless the
    field shares the ids of its ``vocab_from`` field (then nothing is counted)."""

    slot = "bags"

    def __init__(self, name: str, kind: str, column: str, min_count: int,
                 spec: MultiValuedSpec | SequenceSpec) -> None:
        super().__init__(name, kind, column, min_count)
        self.settings = spec
        self.max_length = spec.max_length
        self.keep_last = kind == SEQUENCE
        self.shares = getattr(spec, "vocab_from", None)
        self.truncated = 0  # rows whose list was cut to max_length
        self.empty = 0  # rows with an empty list

    def read(self, tok: pa.Array, train: np.ndarray) -> tuple[pa.Array, Any]:
        lists, cut = truncate(tok, self.max_length, self.keep_last)
        lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
        d = pc.dictionary_encode(lists.flatten())
        offsets = np.zeros(len(lengths) + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        spill = pa.ListArray.from_arrays(pa.array(offsets), d, mask=pa.array(lengths == 0))
        counted = None
        if self.shares is None:
            sel = d.indices.to_numpy(zero_copy_only=False)[np.repeat(train, lengths)]
            counted = (d.dictionary, np.bincount(sel, minlength=len(d.dictionary)))
        return spill, (counted, int(cut.sum()), int((lengths == 0).sum()))

    def add(self, counted: tuple[Any, int, int]) -> None:
        values, truncated, empty = counted
        self.truncated += truncated
        self.empty += empty
        if values is not None:
            super().add(values)

    def fit(self, path: Path, offset: int, fitted: dict[str, _Field]) -> tuple[FieldInfo, pa.Array]:
        if self.shares is None:
            return super().fit(path, offset, fitted)
        src = fitted[self.shares]
        self.encoder = src.encoder
        s = src.info
        self.info = FieldInfo(self.name, self.kind, self.column, s.vocab_size, s.offset, s.oov_index,
                              s.missing_index, s.min_count, spec=self.spec())
        _empty_vocab(path)  # the values are the source's (Store.vocab follows vocab_from)
        return self.info, src.encoder.vocabs[0]

    def spec(self) -> dict[str, Any]:
        return to_dict(self.settings)

    def encode(self, col: pa.Array) -> np.ndarray:
        lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
        n = len(lengths)
        out = np.full((n, self.max_length), PAD, np.int32)
        if lengths.sum():
            ids = self.encoder.column(0, col.flatten())
            starts = np.zeros(n, np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            rows = np.repeat(np.arange(n), lengths)
            out[rows, np.arange(len(rows)) - np.repeat(starts, lengths)] = ids
        out[lengths == 0, 0] = self.info.missing_index
        return out


class _GrownListField(_ListField):
    """A multi-valued or sequence field of a ``--grow`` child: its items' vocabulary grows as a
    :class:`_GrownField`'s does (the parent's items keep their local ids, the pad stays
    :data:`PAD`); a field sharing another's ids (``vocab_from``) takes that field's grown ids."""

    def __init__(self, parent: Store, i: int, min_count: int, spec: MultiValuedSpec | SequenceSpec) -> None:
        info = parent.feature_map.fields[i]
        super().__init__(info.name, info.kind, info.column, min_count, spec)
        self.old = None if self.shares else parent.vocab_table(i)

    def fit(self, path: Path, offset: int, fitted: dict[str, _Field]) -> tuple[FieldInfo, pa.Array]:
        if self.shares is not None:
            return super().fit(path, offset, fitted)
        return _fit_grown(self, self.old, path, offset)


class _DenseField(_Field):
    """``dense``: a float32 value per row and a missing flag (an empty cell: value 0, flag set).
    ``standardize``: (v - mean) / std with the mean and population std of the train split's
    present values (std 0 -> 1). Two embedding rows: local 0 the value's vector, 1 the missing
    vector."""

    slot = "dense"

    def __init__(self, name: str, kind: str, column: str, spec: DenseSpec) -> None:
        super().__init__()
        self.name, self.kind, self.column, self.transform = name, kind, column, spec.transform
        self.n, self.mean, self.m2 = 0, 0.0, 0.0  # running train statistics (Chan et al.)
        self.std = 1.0

    def read(self, tok: pa.Array, train: np.ndarray) -> tuple[pa.Array, Any]:
        if self.transform != "standardize":
            return tok, None
        x = tok.fill_null(0).to_numpy(zero_copy_only=False)[train & tok.is_valid().to_numpy(
            zero_copy_only=False)]
        if not len(x):
            return tok, None
        mean = float(x.mean())
        return tok, (len(x), mean, float(((x - mean) ** 2).sum()))

    def add(self, counted: tuple[int, float, float] | None) -> None:
        if counted is None:
            return
        n, mean, m2 = counted
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    def fit(self, path: Path, offset: int, fitted: dict[str, _Field]) -> tuple[FieldInfo, pa.Array]:
        spec: dict[str, Any] = {"transform": self.transform}
        if self.transform == "standardize":
            std = (self.m2 / self.n) ** 0.5 if self.n else 0.0
            self.std = std if std > 0 else 1.0
            spec.update(mean=self.mean, std=self.std)
        info = FieldInfo(self.name, self.kind, self.column, 2, offset, offset, offset + 1, 1, spec=spec)
        return info, _empty_vocab(path)

    def encode(self, col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        missing = ~col.is_valid().to_numpy(zero_copy_only=False)
        v = col.fill_null(0).to_numpy(zero_copy_only=False)
        if self.transform == "standardize":
            v = (v - self.mean) / self.std
        return np.where(missing, 0.0, v).astype(np.float32), missing

    def adopt(self, info: FieldInfo, vocab: pa.Array) -> None:
        self.info = info
        if self.transform == "standardize":
            self.mean, self.std = info.spec["mean"], info.spec["std"]


def make_field(schema: Schema, name: str, kind: str, col: str, min_count: int) -> _Field:
    """The field of ``kind`` for column ``col`` of ``schema`` (one of ``schema.fields()``)."""
    if kind == HASHED:
        return _HashedField(name, kind, col, schema.spec(col))
    if kind in LIST_KINDS:
        return _ListField(name, kind, col, min_count, schema.spec(col))
    if kind == DENSE:
        return _DenseField(name, kind, col, schema.spec(col))
    return _CountedField(name, kind, col, min_count)


def fields_for_store(store: Store) -> list[_Field]:
    """A store's fields, fitted as they are in it: to encode new rows exactly as prepare did."""
    schema = schema_from_dict(store.feature_map.schema)
    out = []
    for i, info in enumerate(store.feature_map.fields):
        field = make_field(schema, info.name, info.kind, info.column, info.min_count)
        field.adopt(info, store.vocab(i))
        out.append(field)
    return out


def encode_parts(fields: Sequence[_Field], cols: Sequence[pa.Array]) -> dict[str, np.ndarray]:
    """Each field's column (as read, or spilled) encoded, in the arrays of a split:
    ``X`` int32 (rows, one-id fields) and, for list and dense fields, ``bags.NNN`` (NNN: the
    field's index) int32 (rows, max_length), ``values`` float32 and ``missing`` bool (rows, dense)."""
    n = len(cols[0]) if cols else 0
    X = np.empty((n, sum(f.slot == "ids" for f in fields)), dtype=np.int32)
    parts: dict[str, np.ndarray] = {"X": X}
    values, missing, j = [], [], 0
    for i, (field, col) in enumerate(zip(fields, cols)):
        out = field.encode(col)
        if field.slot == "ids":
            X[:, j] = out
            j += 1
        elif field.slot == "bags":
            parts[f"bags.{i:03d}"] = out
        else:
            values.append(out[0])
            missing.append(out[1])
    if values:
        parts.update(values=np.stack(values, axis=1), missing=np.stack(missing, axis=1))
    return parts
