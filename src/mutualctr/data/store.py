"""The prepared, memory-mappable training store.

Layout of a store directory (written atomically by :func:`mutualctr.data.prepare.prepare`)::

    feature_map.json         fields, vocab sizes, offsets, schema, settings, counts, fingerprint,
                             vocab_fingerprint, parent (the --vocab-from store, or null)
    train.X.npy train.y.npy  int32 (rows, F) global ids and float32 (rows,) 0/1 labels
    dev.X.npy   dev.y.npy
    test.X.npy  test.y.npy
    vocab/000.arrow ...      per field: the kept raw values (row i -> local id i + 2) and counts

and, in a store with multi-valued, sequence or dense fields (docs/data.md, "Store layout")::

    train.bags.NNN.npy ...   int32 (rows, max_length) global ids of list field NNN (its index
                             in ``fields``), left-aligned, padded with PAD = 0
    train.values.npy         float32 (rows, n_dense) values of the dense fields (0 if missing)
    train.missing.npy        bool (rows, n_dense): the value is missing

Ids: field ``f`` owns the global rows ``offset .. offset + vocab_size - 1`` of one embedding
table; local id 0 is the field's OOV index (rare or unseen values), 1 its missing index, and
2.. its vocabulary in ``vocab/NNN.arrow`` order (a hashed field: its buckets; a dense field has
two rows: its value's vector and its missing vector; a sequence with ``vocab_from`` owns no rows,
its ids are its source field's). ``X`` holds the one-id fields (:data:`SINGLE_KINDS`) in field
order. A store with list fields reserves global id 0 as the pad (:data:`PAD`; its fields start
at offset 1): no field's id is 0 there, so a model gives row 0 no gradient.

Two fingerprints: ``fingerprint`` identifies the store (schema, settings, inputs: other rows,
another fingerprint); ``vocab_fingerprint`` identifies only the id mapping (:func:`vocab_fingerprint`),
so stores encoded with one vocabulary (``prepare --vocab-from``) share it and a model trained on
one of them reads the others' ids unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mutualctr.data.schema import DENSE, LIST_KINDS, SINGLE_KINDS
from mutualctr.errors import StoreError
from mutualctr.outdir import KINDS

FORMAT = KINDS["store"].format  # feature_map.json's "format": the marker of a store we wrote
VERSION = 1
SPLITS = ("train", "dev", "test")
OOV, MISSING, FIRST = 0, 1, 2  # local ids
PAD = 0  # the global pad id of the list fields' matrices (reserved: no field's id in such a store)


@dataclass
class FieldInfo:
    name: str
    #: categorical | numeric-bucketed | hour-of-day | weekday | weekend | hashed | multi-valued |
    #: sequence | dense
    kind: str
    column: str  # the raw column it comes from
    vocab_size: int  # embedding rows of this field, OOV and missing included
    offset: int  # global id of the field's local id 0
    oov_index: int  # global id of the field's OOV row (= offset)
    missing_index: int  # global id of the field's missing row (= offset + 1)
    min_count: int = 1
    #: the settings of a hashed, list or dense field (buckets and hash; max_length, separator,
    #: pooling or vocab_from; transform, mean, std); None (and absent from JSON) for the others
    spec: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["spec"] is None:
            del d["spec"]
        return d


@dataclass
class FeatureMap:
    dataset: str
    fields: list[FieldInfo]
    fingerprint: str
    schema: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    #: :func:`vocab_fingerprint` of the fields and vocabularies (None: a store written before it was recorded)
    vocab_fingerprint: str | None = None
    #: {"path", "fingerprint"} of the store whose vocabularies encoded this one (--vocab-from), else None
    parent: dict[str, Any] | None = None

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def num_features(self) -> int:
        """Embedding rows in all (the pad row of a store with list fields included)."""
        return max(f.offset + f.vocab_size for f in self.fields)

    @property
    def id_fields(self) -> list[int]:
        """Indices (in ``fields``) of the one-id fields: the columns of ``X``, in order."""
        return [i for i, f in enumerate(self.fields) if f.kind in SINGLE_KINDS]

    @property
    def bag_fields(self) -> list[int]:
        """Indices of the multi-valued and sequence fields (each its ``bags.NNN`` matrix)."""
        return [i for i, f in enumerate(self.fields) if f.kind in LIST_KINDS]

    @property
    def dense_fields(self) -> list[int]:
        """Indices of the dense fields: the columns of ``values`` and ``missing``, in order."""
        return [i for i, f in enumerate(self.fields) if f.kind == DENSE]

    @property
    def pad_index(self) -> int | None:
        """The global pad id of the list matrices (:data:`PAD`), None without list fields."""
        return PAD if self.bag_fields else None

    def layout(self) -> list[list[int]]:
        """Each field's ``[offset, vocab_size]``: where its rows lie in the one embedding table."""
        return [[f.offset, f.vocab_size] for f in self.fields]

    def lineage(self, vocab_fingerprint: str) -> dict[str, list[list[int]]]:
        """The layouts of this store (whose vocabulary fingerprint is ``vocab_fingerprint``) and of
        the stores it grew from (``prepare --grow``), by vocabulary fingerprint."""
        return {**(self.parent or {}).get("ancestors", {}), vocab_fingerprint: self.layout()}

    def ancestor_layout(self, vocab_fingerprint: str | None) -> list[list[int]] | None:
        """The layout of the ancestor store (this one grew from it, directly or through a chain of
        ``--grow`` children) whose vocabulary fingerprint is ``vocab_fingerprint``, else None.

        Growing keeps every field's local ids (value i of the parent is local id ``2 + i`` in the
        child too) and lays the fields out again from the same start, so a row of an ancestor's
        table at ``offset_a + l`` is row ``offset + l`` here."""
        return (self.parent or {}).get("ancestors", {}).get(vocab_fingerprint) if vocab_fingerprint else None

    @property
    def group_by(self) -> str | None:
        """The schema's ``group_by`` field (rows grouped for the grouped AUC), None when unset."""
        return self.schema.get("group_by")

    @property
    def group_column(self) -> int | None:
        """The column of ``X`` that holds the ``group_by`` field's ids, None when unset."""
        if self.group_by is None:
            return None
        names = [self.fields[i].name for i in self.id_fields]
        return names.index(self.group_by)

    def group_ids(self, X) -> np.ndarray | None:
        """The ``group_by`` field's ids of rows ``X`` (a split's ids matrix or its
        :class:`SplitArrays`), None when the schema names no ``group_by``."""
        col = self.group_column
        if col is None:
            return None
        return np.asarray((X.X if isinstance(X, SplitArrays) else X)[:, col])

    def arrays(self, split: str) -> dict[str, tuple[Any, tuple[int, ...]]]:
        """The files of ``split`` besides ``X``/``y``: file name -> (dtype, shape without rows)."""
        out: dict[str, tuple[Any, tuple[int, ...]]] = {}
        for i in self.bag_fields:
            out[f"{split}.bags.{i:03d}.npy"] = (np.int32, (self.fields[i].spec["max_length"],))
        if self.dense_fields:
            n = len(self.dense_fields)
            out[f"{split}.values.npy"] = (np.float32, (n,))
            out[f"{split}.missing.npy"] = (np.bool_, (n,))
        return out

    def field(self, name: str) -> FieldInfo:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["fields"] = [f.to_json() for f in self.fields]
        return {"format": FORMAT, "version": VERSION, "num_fields": self.num_fields,
                "num_features": self.num_features, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "FeatureMap":
        return cls(dataset=d["dataset"], fields=[FieldInfo(**f) for f in d["fields"]],
                   fingerprint=d["fingerprint"], schema=d.get("schema", {}),
                   settings=d.get("settings", {}), counts=d.get("counts", {}),
                   inputs=d.get("inputs", []), vocab_fingerprint=d.get("vocab_fingerprint"),
                   parent=d.get("parent"))


def read_feature_map(path: Path) -> FeatureMap:
    fm = Path(path) / "feature_map.json"
    if not Path(path).is_dir():
        if Path(path).exists():
            raise StoreError(f"{path}: is a file, not a store directory (prepare one with "
                             "mutualctr prepare)")
        raise StoreError(f"{path}: no such store directory")
    if not fm.is_file():
        raise StoreError(f"{path}: not a mutualctr store (no feature_map.json; incomplete or "
                         "foreign directory)")
    try:
        d = json.loads(fm.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested thousands deep
        raise StoreError(f"{fm}: unreadable feature map: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise StoreError(f"{path}: not a mutualctr store ({fm.name} has no format marker)")
    if d.get("version") != VERSION:
        raise StoreError(f"{path}: store version {d.get('version')} is not {VERSION}; "
                         "prepare it again with --overwrite")
    try:
        feature_map = FeatureMap.from_json(d)
    except (KeyError, TypeError) as e:
        raise StoreError(f"{fm}: malformed feature map ({e})") from None
    _check_sizes(fm, feature_map, d.get("num_features"))
    return feature_map


MAX_FEATURES = 2**31 - 1  # ids are int32 in the store's matrices


def _check_sizes(fm: Path, feature_map: FeatureMap, recorded: Any) -> None:
    """Every field's size and offset a whole number in range, and ``num_features`` what they add
    up to (a hand-edited or damaged feature map is refused, not used to size the tables)."""
    if not feature_map.fields:
        raise StoreError(f"{fm}: malformed feature map (no fields)")
    for f in feature_map.fields:
        for key, value, lo in (("vocab_size", f.vocab_size, 1), ("offset", f.offset, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= MAX_FEATURES:
                raise StoreError(f"{fm}: malformed feature map (field {f.name!r}: {key} {value!r} is not an "
                                 f"integer in [{lo}, {MAX_FEATURES}])")
    total = feature_map.num_features
    if total > MAX_FEATURES or (recorded is not None and recorded != total):
        raise StoreError(f"{fm}: malformed feature map (num_features {recorded!r}, its fields add up to "
                         f"{total}; at most {MAX_FEATURES})")


class Store:
    """A prepared store: feature map, per-split memory maps and vocabularies."""

    def __init__(self, path: Path, feature_map: FeatureMap) -> None:
        self.path = Path(path)
        self.feature_map = feature_map
        self._vocab: dict[int, pa.Table] = {}

    @classmethod
    def open(cls, path: str | Path) -> "Store":
        path = Path(path)
        store = cls(path, read_feature_map(path))
        fm = store.feature_map
        for name in SPLITS:
            rows = store.rows(name)
            files = {f"{name}.X.npy": (rows, len(fm.id_fields)), f"{name}.y.npy": (rows,)}
            files.update({f: (rows, *shape) for f, (_, shape) in fm.arrays(name).items()})
            for fname, shape in files.items():
                store._check_array(path / fname, shape)
        for i in range(fm.num_fields):
            if not (path / "vocab" / f"{i:03d}.arrow").is_file():
                raise StoreError(f"{path}: incomplete store (missing vocab/{i:03d}.arrow)")
        return store

    def _check_array(self, f: Path, shape: tuple[int, ...]) -> None:
        if not f.is_file():
            raise StoreError(f"{self.path}: incomplete store (missing {f.name})")
        try:
            arr = np.load(f, mmap_mode="r") if shape[0] else np.load(f)
        except (OSError, ValueError) as e:
            raise StoreError(f"{f}: unreadable ({e})") from None
        if arr.shape != shape:
            raise StoreError(f"{f}: shape {arr.shape}, expected {shape}")

    @property
    def fingerprint(self) -> str:
        return self.feature_map.fingerprint

    @property
    def vocab_fingerprint(self) -> str:
        """The recorded vocabulary fingerprint (computed from the files for older stores)."""
        fm = self.feature_map
        if fm.vocab_fingerprint is None:
            fm.vocab_fingerprint = vocab_fingerprint(fm.fields, [self.vocab(i) for i in range(fm.num_fields)],
                                                     fm.schema)
        return fm.vocab_fingerprint

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def rows(self, name: str) -> int:
        if name not in SPLITS:
            raise StoreError(f"{self.path}: no split {name!r} (splits: {', '.join(SPLITS)})")
        return int(self.feature_map.counts["rows"][name])

    def split(self, name: str) -> tuple[Any, np.ndarray]:
        """(X int32 (rows, F) global ids, y float32 (rows,)) as read-only memory maps.

        For a store with multi-valued, sequence or dense fields ``X`` is the split's
        :class:`SplitArrays` (every array; ``len(X)`` and ``X[a:b]`` work as on a matrix, and
        ``BatchLoader(X, y)``, ``predict_logits`` and the export read it)."""
        fm = self.feature_map
        if fm.bag_fields or fm.dense_fields:
            arrays = self.split_arrays(name)
            return arrays, arrays.y
        return self._xy(name)

    def _xy(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self.rows(name)
        if rows == 0:
            return (np.zeros((0, len(self.feature_map.id_fields)), np.int32),
                    np.zeros((0,), np.float32))
        X = np.load(self.path / f"{name}.X.npy", mmap_mode="r")
        y = np.load(self.path / f"{name}.y.npy", mmap_mode="r")
        return X, y

    def split_arrays(self, name: str) -> "SplitArrays":
        """Every array of split ``name`` as read-only memory maps: ``X``, ``y`` and, for a store
        with list or dense fields, the ``bags`` (by field name), ``values`` and ``missing``."""
        X, y = self._xy(name)
        fm = self.feature_map
        rows = self.rows(name)

        def load(fname: str, dtype, shape: tuple[int, ...]) -> np.ndarray:
            if rows == 0:
                return np.zeros((0, *shape), dtype)
            return np.load(self.path / fname, mmap_mode="r")

        bags = {fm.fields[i].name: load(f"{name}.bags.{i:03d}.npy", np.int32,
                                        (fm.fields[i].spec["max_length"],)) for i in fm.bag_fields}
        values = missing = None
        if fm.dense_fields:
            n = (len(fm.dense_fields),)
            values, missing = load(f"{name}.values.npy", np.float32, n), load(f"{name}.missing.npy", np.bool_, n)
        return SplitArrays(X, y, bags, values, missing)

    def positives(self, name: str) -> int:
        """Rows labelled 1 in split ``name``."""
        pos = self.feature_map.counts.get("positives", {}).get(name)
        if pos is None:  # not recorded: count them
            pos = int(np.count_nonzero(self._xy(name)[1]))
        return int(pos)

    def split_problem(self, name: str) -> str | None:
        """Why split ``name`` cannot score an AUC (no rows, or one class only), else None."""
        return split_problem(name, self.rows(name), self.positives(name))

    def require_both_classes(self, *names: str) -> None:
        """Raise StoreError naming the store and the split if one of ``names`` (default: every
        split) has no rows or only one class: training on it, or an AUC of it, is undefined."""
        for name in names or SPLITS:
            problem = self.split_problem(name)
            if problem:
                raise StoreError(f"{self.path}: {problem}")

    def vocab_table(self, field: int | str) -> pa.Table:
        """The ``value`` and ``count`` table of a field (a sequence with ``vocab_from``: its
        source field's; a hashed or dense field: empty)."""
        names = [f.name for f in self.feature_map.fields]
        i = field if isinstance(field, int) else names.index(field)
        spec = self.feature_map.fields[i].spec or {}
        if spec.get("vocab_from"):
            return self.vocab_table(names.index(spec["vocab_from"]))
        if i not in self._vocab:
            with pa.memory_map(str(self.path / "vocab" / f"{i:03d}.arrow")) as src:
                self._vocab[i] = pa.ipc.open_file(src).read_all()
        return self._vocab[i]

    def vocab(self, field: int | str) -> pa.Array:
        """The kept raw values of a field; value ``vocab[i]`` has local id ``i + 2``."""
        return self.vocab_table(field).column("value").combine_chunks()

    def __repr__(self) -> str:
        fm = self.feature_map
        return (f"Store({str(self.path)!r}, dataset={fm.dataset!r}, fields={fm.num_fields}, "
                f"features={fm.num_features}, rows={fm.counts.get('rows')})")


@dataclass(frozen=True)
class SplitArrays:
    """The arrays of one split (:meth:`Store.split_arrays`)."""

    X: np.ndarray  # int32 (rows, len(id_fields)) global ids of the one-id fields
    y: np.ndarray  # float32 (rows,) 0/1 labels
    bags: dict[str, np.ndarray]  # list field name -> int32 (rows, max_length), padded with PAD
    values: np.ndarray | None  # float32 (rows, n_dense); None without dense fields
    missing: np.ndarray | None  # bool (rows, n_dense); None without dense fields

    @property
    def plain(self) -> bool:
        """Only one-id fields: batches are today's ``(ids, labels)``."""
        return not self.bags and self.values is None

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, sel) -> "SplitArrays":
        """Rows ``sel`` (a slice or row indices) of every array, as a SplitArrays."""
        return SplitArrays(self.X[sel], self.y[sel], {k: v[sel] for k, v in self.bags.items()},
                           None if self.values is None else self.values[sel],
                           None if self.missing is None else self.missing[sel])


VOCAB_FINGERPRINT_VERSION = 1


def _hash_values(h, values: pa.Array) -> None:
    """Feed the values of one vocabulary to ``h``: their kind, count, lengths and bytes, the same
    however the array is chunked, sliced or typed (string / large_string, any integer width)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    if values.null_count:
        h.update(b"nulls" + np.packbits(values.is_null().to_numpy(zero_copy_only=False)).tobytes())
    if pa.types.is_integer(values.type):
        h.update(b"int64 %d:" % n)
        h.update(values.fill_null(0).to_numpy(zero_copy_only=False).astype("<i8").tobytes())
        return
    a = values.cast(pa.large_string())
    h.update(b"utf8 %d:" % n)
    if n == 0:
        return
    offsets = np.frombuffer(a.buffers()[1], dtype="<i8")[a.offset:a.offset + n + 1]
    h.update(np.diff(offsets).astype("<i8").tobytes())
    h.update(memoryview(a.buffers()[2])[int(offsets[0]):int(offsets[-1])])


def vocab_fingerprint(fields: list[FieldInfo], vocabs: list[pa.Array], schema: dict[str, Any]) -> str:
    """A hash of the id mapping: each field's name, kind (its transform), source column, size,
    offset, OOV and missing ids and kept values in id order, plus the schema's numeric_values
    (which cells a numeric field accepts and how it floors them). Equal for a store and the stores
    encoded with its vocabularies; counts, rows and min counts do not enter it. The ``spec`` of
    a hashed, list or dense field (buckets, max length, transform statistics) enters too."""
    h = hashlib.sha256()
    head = {"v": VOCAB_FINGERPRINT_VERSION, "numeric_values": schema.get("numeric_values", "integer"),
            "fields": [[f.name, f.kind, f.column, f.vocab_size, f.offset, f.oov_index, f.missing_index]
                       + ([f.spec] if f.spec is not None else []) for f in fields]}
    h.update(json.dumps(head, sort_keys=True).encode())
    for values in vocabs:
        _hash_values(h, values)
    return h.hexdigest()[:32]


def write_vocab(path: Path, values: pa.Array, counts: pa.Array) -> None:
    table = pa.table({"value": values, "count": counts})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


def split_problem(name: str, rows: int, positives: int) -> str | None:
    """Why a split of ``rows`` rows, ``positives`` of them labelled 1, has no AUC, else None."""
    if rows == 0:
        return f"the {name} split has no rows"
    if positives in (0, rows):
        label = "0 (no clicks)" if positives == 0 else "1 (all clicks)"
        return f"every label of the {name} split ({rows:,} rows) is {label}; its AUC is undefined"
    return None
