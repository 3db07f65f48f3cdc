"""Raw CTR files -> a store (two streaming passes: count on train, then encode).

:func:`prepare` checks its arguments (:func:`_plan`), reuses an unchanged store, and otherwise
has a :class:`StoreBuilder` write one atomically, fit then transform, in four named steps:

1. ``count`` (pass 1) reads the inputs chunk by chunk, validates every cell (vectorised),
   assigns each row to train/dev/test, counts the train split's values per field (per-chunk
   counts, merged geometrically with ``group_by``, see :class:`_Counts`) and spills each chunk,
   dictionary-encoded, to a temporary file;
2. ``fit`` gives each field its ids: the values seen at least min-count times, sorted by value,
   after its OOV and missing rows, at the next free offset;
3. ``encode`` (pass 2) maps each spilled chunk's dictionaries to those ids (``index_in``) and
   writes each split's rows straight into its preallocated ``.npy``;
4. ``write_feature_map``.

What a step does for one field is its field class's (:mod:`mutualctr.data.fields`: a field kind
is a :class:`~mutualctr.data.fields._Field` subclass). Memory is flat in the number of rows: a few chunks plus the
value counts (which grow with the distinct values).

With ``vocab_from`` (``prepare --vocab-from STORE``) the new rows are encoded with an existing
store's fields and vocabularies instead (:class:`_ParentField`): pass 1 then counts nothing, the
vocabularies are the parent's as they are, and the child's ``vocab_fingerprint`` equals the parent's.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mutualctr import outdir, resources
from mutualctr.atomic import atomic_dir
from mutualctr.config import ConfigError, check_seed, to_dict
from mutualctr.data.encode import bad_row_error
from mutualctr.data.fields import _Counts, _Field, _ParentField, encode_parts, grow_fields, make_field  # noqa: F401 (_Counts: its old home)
from mutualctr.data.reader import TableReader, iter_blocks
from mutualctr.data.schema import BUILTIN, Schema, load_schema, schema_from_dict
from mutualctr.data.store import (
    PAD,
    SPLITS,
    FeatureMap,
    FieldInfo,
    Store,
    read_feature_map,
    split_problem,
    vocab_fingerprint,
)
from mutualctr.data.transform import ChunkTransformer, Transformed
from mutualctr.errors import DataError, MutualCTRError, StoreError, input_problem
from mutualctr.progress import Bar

FRACTIONS = (0.8, 0.1, 0.1)
FINGERPRINT_VERSION = 1
_HEAD_TAIL = 1 << 20


@dataclass(frozen=True)
class PrepareSummary:
    """What a store holds, as ``prepare`` prints it: per-split rows and click rate, per-field
    vocabulary sizes, rejected rows, and the splits on which no AUC can be computed."""

    dataset: str
    fingerprint: str
    vocab_fingerprint: Optional[str]
    parent: Optional[dict[str, Any]]  # the --vocab-from store: {"path", "fingerprint", ...}
    rows: dict[str, int]  # split -> rows
    click_rate: dict[str, float]  # split -> positives / rows (nan for an empty split)
    vocab_size: dict[str, int]  # field -> embedding rows (its OOV and missing rows included)
    num_features: int  # embedding rows in all
    rejected: int
    rejected_lines: list[str]  # the first rejected rows, as "file:line"
    warnings: list[str]  # splits of one class (no AUC on them); see Store.split_problem
    seconds: Optional[float] = None  # None when an existing store was reused
    rows_per_s: Optional[float] = None
    #: list field -> {"truncated": rows cut to max_length, "empty": rows with an empty list};
    #: None for a store without list fields
    lists: Optional[dict[str, dict[str, int]]] = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("vocab_fingerprint", "parent")}


@dataclass
class PrepareResult:
    store: Store
    reused: bool
    summary: PrepareSummary


# -- fingerprint ------------------------------------------------------------------------------
def file_identity(path: Path) -> dict[str, Any]:
    """Size, mtime and a hash of the first and last MiB: cheap, and changes with the file."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_HEAD_TAIL))
        if st.st_size > 2 * _HEAD_TAIL:
            f.seek(st.st_size - _HEAD_TAIL)
            h.update(f.read(_HEAD_TAIL))
        elif st.st_size > _HEAD_TAIL:
            h.update(f.read())
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "head_tail_sha256": h.hexdigest()}


def fingerprint(schema: Schema, settings: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    blob = json.dumps({"v": FINGERPRINT_VERSION, "schema": schema.as_dict(), "settings": settings,
                       "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


# -- splits -----------------------------------------------------------------------------------
def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def assign_splits(index: np.ndarray, mode: str, seed: int, total: int | None = None) -> np.ndarray:
    """Split (0 train, 1 dev, 2 test) of rows by global row index, independent of chunking.

    random: in every block of 10 consecutive rows a seeded shuffle puts 8 rows in train, 1 in
    dev and 1 in test (exactly 80/10/10 up to the last partial block). sequential: the first
    80% of the rows train, the next 10% dev, the last 10% test (file order = time order).
    """
    index = np.asarray(index, dtype=np.int64)
    if mode == "sequential":
        a, b = int(total * FRACTIONS[0]), int(total * (FRACTIONS[0] + FRACTIONS[1]))
        return (index >= a).astype(np.uint8) + (index >= b).astype(np.uint8)
    if len(index) == 0:
        return np.zeros(0, np.uint8)
    b0, b1 = index.min() // 10, index.max() // 10 + 1
    keys = np.arange(b0 * 10, b1 * 10, dtype=np.int64).reshape(-1, 10)
    with np.errstate(over="ignore"):
        h = _splitmix64(keys.astype(np.uint64) ^ _splitmix64(np.array([seed], np.uint64)))
    rank = np.argsort(np.argsort(h, axis=1), axis=1).ravel()
    r = rank[index - b0 * 10]
    return np.where(r < 8, 0, np.where(r == 8, 1, 2)).astype(np.uint8)


def count_lines(path: Path, block: int = 16 << 20) -> int:
    """Lines of a (possibly compressed) text file, not counting trailing blank lines."""
    n = 0
    trailing = 0  # newlines at the end of what was read so far
    last = b""
    for data in iter_blocks(path, block):
        n += data.count(b"\n")
        stripped = data.rstrip(b"\r\n")
        trailing = trailing + data.count(b"\n") if not stripped else \
            data[len(stripped):].count(b"\n")
        last = data[-1:]
    if not n and not last:
        return 0
    if last != b"\n":
        return n + 1
    return n - max(trailing - 1, 0)


def _count_rows(schema: Schema, path: Path) -> int:
    """Data rows of a file (physical lines minus header), for the sequential split."""
    if schema.format == "parquet":
        return pq.ParquetFile(str(path)).metadata.num_rows
    reader = TableReader(schema, path)  # checks layout and header
    return count_lines(path) - reader.header_lines


class _NpyWriter:
    """A preallocated ``.npy`` file filled by row ranges with ``os.pwrite``."""

    def __init__(self, path: Path, dtype, shape: tuple[int, ...]) -> None:
        dtype = np.dtype(dtype)
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                    "shape": shape})
            self.base = f.tell()
            f.truncate(self.base + int(np.prod(shape)) * dtype.itemsize)
        self.row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        self.dtype = dtype
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, row: int, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=self.dtype)
        if not data.size:  # e.g. X of a store without one-id fields: (rows, 0)
            return
        mv = memoryview(data).cast("B")
        at = self.base + row * self.row_bytes
        while len(mv):
            n = os.pwrite(self.fd, mv, at)
            mv, at = mv[n:], at + n

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


def _ordered_map(fn: Callable, items, workers: int = 2, window: int = 4):
    """``map(fn, items)`` on a thread pool, in order, at most ``window`` results ahead
    (pyarrow and numpy release the GIL, so chunks are processed on both cores)."""
    pending: deque = deque()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mutualctr-prepare") as ex:
        try:
            for item in it:
                pending.append(ex.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
            close = getattr(it, "close", None)
            if close is not None:  # stop the readers' background threads now
                close()


# -- prepare ----------------------------------------------------------------------------------
def _summary(fm: FeatureMap, seconds: float | None = None) -> PrepareSummary:
    c = fm.counts
    rows = c["rows"]
    rejected = c.get("rejected", 0)
    rate = None
    if seconds is not None:
        rate = (sum(rows.values()) + rejected) / seconds if seconds > 0 else float("nan")
    return PrepareSummary(
        dataset=fm.dataset, fingerprint=fm.fingerprint, vocab_fingerprint=fm.vocab_fingerprint,
        parent=fm.parent, rows=dict(rows),
        click_rate={s: (c["positives"][s] / rows[s] if rows[s] else float("nan")) for s in SPLITS},
        vocab_size={f.name: f.vocab_size for f in fm.fields}, num_features=fm.num_features,
        rejected=rejected, rejected_lines=list(c.get("rejected_lines", [])),
        warnings=[p for s in SPLITS if "positives" in c
                  and (p := split_problem(s, rows[s], c["positives"][s])) is not None],
        seconds=seconds, rows_per_s=rate, lists=c.get("lists"))


def prepare(dataset: str | Path, inputs: Sequence[Path], out: Path, split: str = "random",
            seed: int = 0, min_count: int | None = None, on_bad_rows: str = "error",
            overwrite: bool = False, progress: bool = True,
            vocab_from: str | Path | None = None, grow: bool = False) -> PrepareResult:
    """Prepare raw ``inputs`` of ``dataset`` (criteo, avazu or a schema YAML) into store ``out``.

    ``vocab_from``: encode the inputs with that store's fields, vocabularies and offsets (seen
    values keep their ids, unseen ones get their field's OOV id); ``dataset`` must be the schema
    it was prepared with, and ``min_count`` is refused (nothing is recounted). The new rows get
    their own ``split``; the child records ``parent`` and shares the parent's ``vocab_fingerprint``.
    ``grow`` (with ``vocab_from``): the vocabularies grow instead (:func:`grow_fields`: the
    parent's values keep their local ids, new values of the train rows reaching the min count get
    the next ones; fields are laid out again from offset 0, so offsets move but local ids do not),
    and ``parent`` records the layouts of the parent and its grown ancestors
    (:func:`mutualctr.data.store.FeatureMap.ancestor_layout`).

    The same inputs and settings reuse an existing store (``reused=True``); another store at
    ``out`` raises StoreError unless ``overwrite``; ``overwrite`` replaces only a store
    (:func:`mutualctr.outdir.check_replaceable`), never other files. One writer at a time per
    ``out`` (:func:`mutualctr.outdir.locked`); temporaries left by killed writers are removed.
    Bad input raises DataError naming file, line and column, or with ``on_bad_rows='skip'`` is
    skipped and counted. Splits without rows are refused (DataError); splits of one class are
    listed in ``summary.warnings``.
    """
    t0 = time.perf_counter()
    plan = _plan(dataset, inputs, out, split, seed, min_count, on_bad_rows, vocab_from, grow)
    out, shown = plan.out, plan.shown
    store = _reusable(out, plan.fingerprint, shown)
    if store is not None:  # nothing to write; tidy up after killed writers if we can
        try:
            with outdir.locked(out, error=StoreError):
                outdir.clean_stale(out)
        except StoreError:
            pass  # another writer at work, or a read-only folder
        return PrepareResult(store, True, _summary(store.feature_map))
    with outdir.locked(out, shown=shown, error=StoreError):
        outdir.clean_stale(out)
        store = _reusable(out, plan.fingerprint, shown)  # another writer may have just finished it
        if store is not None:
            return PrepareResult(store, True, _summary(store.feature_map))
        if (out / "feature_map.json").exists() and not outdir.is_ours(out, "store"):
            raise StoreError(f"{shown}: holds an unreadable or foreign feature_map.json, so it is "
                             "not recognisably a mutualctr store; pass another --out (or delete it "
                             "yourself)")
        state = outdir.check_replaceable(out, "store", shown=shown, error=StoreError)
        if state == "ours" and not overwrite:
            _refuse_existing(out, shown, plan.fingerprint)
        try:
            with atomic_dir(out) as tmp, Bar("{task.description}", "<bar>", "<n/total>", "<rows/s>",
                                             "<elapsed>", quiet=not progress) as bar:
                fm = StoreBuilder(plan, tmp, bar).build()
        except OSError as e:  # disk full, permissions, ...: nothing is left behind
            raise StoreError(f"{shown}: cannot write the store: {e}") from e
        except DataError as e:  # a file of another layout: name the schemas that fit it
            raise DataError(f"{e}{_schema_hint(plan.schema, dataset, plan.inputs[0])}") from None
    store = Store.open(shown)
    return PrepareResult(store, False, _summary(fm, time.perf_counter() - t0))


@dataclass(frozen=True)
class _Plan:
    """One store to write (or reuse): checked arguments, resolved schema, settings, fingerprint."""

    schema: Schema  # the parent's for a --vocab-from child
    inputs: list[Path]
    out: Path  # resolved
    shown: Path  # as given (for messages)
    split: str
    seed: int
    min_count: Optional[int]
    on_bad_rows: str
    settings: dict[str, Any]
    identities: list[dict[str, Any]]
    fingerprint: str
    parent: Optional[Store] = None
    grow: bool = False  # --grow: the parent's vocabularies grow with the new rows' values


def _plan(dataset: str | Path, inputs: Sequence[Path], out: Path, split: str, seed: int,
          min_count: int | None, on_bad_rows: str, vocab_from: str | Path | None, grow: bool = False) -> _Plan:
    """``prepare``'s arguments checked (ConfigError, DataError, StoreError; nothing written)."""
    check_seed("seed", seed)
    if split not in ("random", "sequential"):
        raise ConfigError(f"split: expected 'random' or 'sequential', got {split!r}")
    if on_bad_rows not in ("error", "skip"):
        raise ConfigError(f"on_bad_rows: expected 'error' or 'skip', got {on_bad_rows!r}")
    if min_count is not None and min_count < 1:
        raise ConfigError(f"min_count: must be >= 1, got {min_count}")
    schema = load_schema(dataset)
    parent = None
    if grow and vocab_from is None:
        raise ConfigError("--grow: needs --vocab-from PARENT (the store whose vocabularies grow)")
    if vocab_from is not None:
        if min_count is not None and not grow:
            raise ConfigError(f"min_count: cannot be combined with vocab_from ({vocab_from}): the "
                              "parent's vocabularies are used as they are, nothing is recounted")
        parent = Store.open(vocab_from)
        schema = _parent_schema(schema, dataset, parent)
    inputs = _check_inputs(inputs)
    shown = out
    out = outdir.resolve(out, error=StoreError)  # symlinks followed; never the cwd
    for p in inputs:
        if out in p.resolve().parents:
            raise StoreError(f"{shown}: holds the input {p}; pass another --out")
    settings = {"split": split, "seed": seed, "min_count": min_count, "on_bad_rows": on_bad_rows,
                "fractions": list(FRACTIONS)}
    if parent is not None:
        real = parent.path.resolve()
        if real == out or out in real.parents:
            raise StoreError(f"{shown}: is (or holds) the vocab_from store {parent.path}; pass another --out")
        settings["vocab_from"] = {"fingerprint": parent.fingerprint,
                                  "vocab_fingerprint": parent.vocab_fingerprint}
        if grow:
            settings["vocab_from"]["grow"] = True
    identities = [file_identity(p) for p in inputs]
    return _Plan(schema, inputs, out, shown, split, seed, min_count, on_bad_rows, settings,
                 identities, fingerprint(schema, settings, identities), parent, grow)


def _check_inputs(inputs: Sequence[Path]) -> list[Path]:
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise DataError("no input files")
    for p in inputs:
        if p.is_dir():
            raise DataError(f"{p}: is a directory, not a file (give each raw file with --input)")
        if (problem := input_problem(p)) is not None:
            raise DataError(f"{p}: {problem}")
    return inputs


def fitting_schemas(path: str | Path, exclude: str = "") -> list[str]:
    """The built-in datasets and shipped schemas (by name, ``exclude`` left out) whose layout
    fits the first line(s) of the raw file ``path``: its columns and header read, and every
    column the schema names present. For the hint of a file that does not fit its schema."""
    out = []
    for name in [*BUILTIN, *resources.schema_names()]:
        if name == exclude:
            continue
        try:
            schema = load_schema(name)
            schema.resolve(TableReader(schema, Path(path)).columns).fields()
        except (MutualCTRError, OSError):
            continue
        out.append(name)
    return out


def _schema_hint(schema: Schema, dataset: str | Path, path: Path) -> str:
    """``"; it fits ..."`` naming the built-in datasets and shipped schemas whose layout fits
    ``path`` when ``schema`` does not; empty when it does (the error is in a later row)."""
    try:
        schema.resolve(TableReader(schema, path).columns).fields()
        return ""
    except (DataError, ConfigError, OSError):
        pass
    fit = fitting_schemas(path, exclude=str(dataset))
    if not fit:
        return ""
    return (f" ({path} fits the layout of {' and '.join(repr(f) for f in fit)}: try --dataset {fit[0]}; "
            "mutualctr schemas lists the shipped schemas)")


def _parent_schema(schema: Schema, dataset: str | Path, parent: Store) -> Schema:
    """The parent's (resolved) schema, after checking that ``dataset`` names the same one."""
    theirs = schema_from_dict(parent.feature_map.schema)
    try:
        mine = schema if schema.columns else schema.resolve(theirs.columns)
    except ConfigError:  # it does not fit the parent's columns: a mismatch, reported as one below
        mine = schema
    a, b = to_dict(mine), to_dict(theirs)
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ:
        keys = ", ".join(differ[:3]) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")
        raise ConfigError(
            f"vocab_from {parent.path}: was prepared with dataset {parent.feature_map.dataset!r}, whose "
            f"schema differs from {str(dataset)!r} in {keys}; give the dataset or schema the store "
            "was prepared with")
    return theirs


def _reusable(out: Path, fp: str, shown: Path) -> Store | None:
    """The complete store of fingerprint ``fp`` at ``out`` (opened as ``shown``), else None
    (reads only)."""
    if not (out / "feature_map.json").is_file():
        return None
    try:
        if read_feature_map(out).fingerprint != fp:
            return None
        return Store.open(shown)
    except StoreError:
        return None


def _refuse_existing(out: Path, shown: Path, fp: str) -> None:
    """Raise the StoreError for a store of ours at ``out`` that is not reusable."""
    old = read_feature_map(out)  # raises for a store of another version
    if old.fingerprint == fp:  # ours, but damaged
        try:
            Store.open(out)
        except StoreError as e:
            raise StoreError(f"{e}; pass --overwrite to prepare it again") from None
    raise StoreError(
        f"{shown}: holds a store prepared from other inputs or settings (fingerprint "
        f"{old.fingerprint} != {fp}); pass another --out or --overwrite")


def _check_splits(inputs: list[Path], rows: np.ndarray, rejected: int, split: str) -> None:
    """A DataError (before anything is written) when a split gets no rows."""
    empty = [name for k, name in enumerate(SPLITS) if rows[k] == 0]
    if not empty:
        return
    what = str(inputs[0]) if len(inputs) == 1 else f"{len(inputs)} inputs"
    rej = f" ({rejected:,} rows rejected)" if rejected else ""
    shares = "/".join(f"{round(100 * f)}" for f in FRACTIONS)
    raise DataError(
        f"{what}: {int(rows.sum()):,} rows{rej} give train {rows[0]:,}, dev {rows[1]:,}, test "
        f"{rows[2]:,} ({split} {shares} split): the {empty[0]} split would be empty; every split "
        "needs rows (give at least 10)")




# -- the builder: count, fit, encode, write the feature map ------------------------------------
class StoreBuilder:
    """Writes the store of a :class:`_Plan` into ``tmp`` in four named steps (:meth:`build`),
    each leaving its results on the builder for the next:

    1. :meth:`count` (pass 1): read, validate and split every row; each field counts its train
       values; the chunks are spilled dictionary-encoded to ``tmp/.spill``;
    2. :meth:`fit`: each field fits its ids (vocabulary and offset), written to ``vocab/``;
    3. :meth:`encode` (pass 2): the spilled chunks, encoded, into the splits' ``.npy`` files;
    4. :meth:`write_feature_map`.

    What a step does for one field is its :class:`_Field` class's (a kind is a class). Memory is
    flat in the rows: a few chunks in flight plus the fields' value counts.
    """

    def __init__(self, plan: _Plan, tmp: Path, bar: Bar) -> None:
        self.plan, self.tmp, self.bar = plan, tmp, bar
        self.spill = tmp / ".spill"
        self.readers = [TableReader(plan.schema, p, plan.on_bad_rows) for p in plan.inputs]
        self.schema = self._resolve_schema()
        self.fields = self._make_fields()
        self.transform = ChunkTransformer(self.schema)
        self.total: int | None = None  # rows of all inputs (for the sequential split)
        self.rows = np.zeros(3, np.int64)  # per split
        self.positives = np.zeros(3, np.int64)
        self.rejected = 0
        self.bad_lines: list[str] = []  # the first rejected rows, "file:line"
        self.rows_read = 0
        self.chunks = 0  # spilled
        self.infos: list[FieldInfo] = []  # set by fit
        self.vocabs: list[pa.Array] = []

    def build(self) -> FeatureMap:
        self.count()
        self.fit()
        self.encode()
        return self.write_feature_map()

    def _resolve_schema(self) -> Schema:
        schema = self.plan.schema.resolve(self.readers[0].columns)
        for r in self.readers:
            r.schema = schema
            if r.columns != schema.columns:
                raise DataError(f"{r.path}: columns differ from {self.plan.inputs[0]} "
                                f"({', '.join(r.columns)} vs {', '.join(schema.columns)})")
        return schema

    def _make_fields(self) -> list[_Field]:
        spec = self.schema.fields()
        parent = self.plan.parent
        if parent is None:
            return [self._make_field(name, kind, col) for name, kind, col in spec]
        if [(f.name, f.kind, f.column) for f in parent.feature_map.fields] != spec:
            raise StoreError(f"{parent.path}: its fields do not follow its own schema; prepare it again")
        if self.plan.grow:
            return grow_fields(parent, self.schema, self.plan.min_count)
        return [_ParentField(parent, i, make_field(self.schema, name, kind, col, 1))
                for i, (name, kind, col) in enumerate(spec)]

    def _make_field(self, name: str, kind: str, col: str) -> _Field:
        return make_field(self.schema, name, kind, col, self.schema.min_count_for(col, self.plan.min_count))

    # -- 1. count -------------------------------------------------------------------------------
    def count(self) -> None:
        """Pass 1: parse, validate and split every row, count the train values, spill the chunks;
        a DataError for a bad row (unless skipped) or an empty split."""
        if self.plan.split == "sequential":
            self.bar.add("counting rows", None)
            self.total = sum(_count_rows(self.schema, p) for p in self.plan.inputs)
        self.spill.mkdir()
        task = self.bar.add("pass 1/2 read+count" if self.plan.parent is None or self.plan.grow else "pass 1/2 read",
                            self.total)
        for chunk, t, s, counted in _ordered_map(self._read_chunk, self._chunks()):
            self._tally(chunk, t, s)
            for field, c in zip(self.fields, counted):
                field.add(c)
            self.bar.advance(task, chunk.batch.num_rows)
        self.rejected += sum(r.skipped for r in self.readers)
        for r in self.readers:
            self.bad_lines += [f"{r.path}:{ln}" for ln in r.bad_width_lines(5)]
        _check_splits(self.plan.inputs, self.rows, self.rejected, self.plan.split)

    def _chunks(self):
        """(chunk number, global index of its first row, chunk) of every input in order."""
        g0, ci = 0, 0
        for reader in self.readers:
            for chunk in reader:
                yield ci, g0, chunk
                ci += 1
                g0 += chunk.batch.num_rows

    def _read_chunk(self, item: tuple[int, int, Any]) -> tuple[Any, Transformed, np.ndarray, list]:
        """One chunk of pass 1, on a worker thread: transformed, split (3: bad row), each
        field's tokens read, spilled. Changes nothing on the builder."""
        ci, g0, chunk = item
        n = chunk.batch.num_rows
        t = self.transform(chunk.batch)
        s = assign_splits(np.arange(g0, g0 + n), self.plan.split, self.plan.seed, self.total)
        if t.errors:
            s[t.bad] = 3
        train = s == 0
        read = [field.read(tok, train) for field, tok in zip(self.fields, t.tokens)]
        names = [f"f{i}" for i in range(len(read))] + ["split", "label"]
        batch = pa.RecordBatch.from_arrays([col for col, _ in read] + [pa.array(s), pa.array(t.label)],
                                           names)
        with pa.OSFile(str(self.spill / f"{ci:06d}.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, batch.schema) as w:
                w.write_batch(batch)
        return chunk, t, s, [c for _, c in read]

    def _tally(self, chunk: Any, t: Transformed, s: np.ndarray) -> None:
        """Rows, positives and rejected rows of one chunk (the first bad row raises unless skipped)."""
        self.rows_read += chunk.batch.num_rows
        self.chunks += 1
        if t.errors:
            if self.plan.on_bad_rows != "skip":
                raise bad_row_error(chunk, t)
            self.rejected += int(t.bad.sum())
            if len(self.bad_lines) < 5:
                self.bad_lines += [f"{chunk.path}:{chunk.line(int(i))}"
                                   for i in np.flatnonzero(t.bad)[:5]]
        self.rows += np.bincount(s, minlength=4)[:3]
        self.positives += np.bincount(s, weights=t.label, minlength=4)[:3].astype(np.int64)

    # -- 2. fit ---------------------------------------------------------------------------------
    def fit(self) -> None:
        """Each field's ids, in field order from global id 0 (from 1 when list fields reserve
        :data:`PAD`), fields that share another's ids after it: ``infos`` and ``vocabs``, and
        ``vocab/NNN.arrow``."""
        (self.tmp / "vocab").mkdir()
        offset = PAD + 1 if any(f.slot == "bags" for f in self.fields) else 0
        n = len(self.fields)
        self.infos, self.vocabs = [None] * n, [None] * n
        fitted: dict[str, _Field] = {}
        for i in sorted(range(n), key=lambda i: self.fields[i].shares is not None):
            field = self.fields[i]
            info, vocab = field.fit(self.tmp / "vocab" / f"{i:03d}.arrow", offset, fitted)
            self.infos[i], self.vocabs[i] = info, vocab
            fitted[info.name] = field
            offset = max(offset, info.offset + info.vocab_size)
        if offset >= 2**31:
            raise DataError(f"{offset} features do not fit int32 ids; raise --min-count")

    # -- 3. encode ------------------------------------------------------------------------------
    def _parts(self) -> dict[str, tuple[Any, tuple[int, ...]]]:
        """The arrays of each split, ``<split>.<part>.npy``: part -> (dtype, shape without rows)."""
        ids = [f for f in self.fields if f.slot == "ids"]
        parts: dict[str, tuple[Any, tuple[int, ...]]] = {"X": (np.int32, (len(ids),)), "y": (np.float32, ())}
        for i, f in enumerate(self.fields):
            if f.slot == "bags":
                parts[f"bags.{i:03d}"] = (np.int32, (f.max_length,))
        dense = sum(f.slot == "dense" for f in self.fields)
        if dense:
            parts.update(values=(np.float32, (dense,)), missing=(np.bool_, (dense,)))
        return parts

    def encode(self) -> None:
        """Pass 2: each spilled chunk's fields encoded, its rows written to their split's files
        (plain positional writes, not a memory map: written pages then do not count as RSS)."""
        writers = {(name, part): _NpyWriter(self.tmp / f"{name}.{part}.npy", dtype,
                                            (int(self.rows[k]), *shape))
                   for k, name in enumerate(SPLITS) for part, (dtype, shape) in self._parts().items()}
        at = np.zeros(3, np.int64)
        task = self.bar.add("pass 2/2 encode", self.rows_read)
        for parts, s in _ordered_map(self._encode_chunk, range(self.chunks)):
            for k, name in enumerate(SPLITS):
                sel = s == k
                m = int(sel.sum())
                if m:
                    for part, values in parts.items():
                        writers[name, part].write(at[k], values[sel])
                    at[k] += m
            self.bar.advance(task, len(s))
        self.spill.rmdir()
        for w in writers.values():
            w.close()

    def _encode_chunk(self, ci: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Spilled chunk ``ci`` (then deleted) -> ({part: its rows}, splits): ``X`` int32 (rows,
        one-id fields), ``y`` labels, and the list fields' and dense fields' arrays."""
        f = self.spill / f"{ci:06d}.arrow"
        F = len(self.fields)
        with pa.memory_map(str(f)) as src:
            batch = pa.ipc.open_file(src).get_batch(0)
            parts = encode_parts(self.fields, [batch.column(i) for i in range(F)])
            s = batch.column(F).to_numpy().copy()
            parts["y"] = batch.column(F + 1).to_numpy().copy()
            del batch
        f.unlink()
        return parts, s

    # -- 4. feature map -------------------------------------------------------------------------
    def write_feature_map(self) -> FeatureMap:
        plan = self.plan
        counts = {"rows": {name: int(self.rows[k]) for k, name in enumerate(SPLITS)},
                  "positives": {name: int(self.positives[k]) for k, name in enumerate(SPLITS)},
                  "rejected": int(self.rejected), "rejected_lines": self.bad_lines[:5],
                  "rows_read": int(self.rows_read)}
        lists = {f.name: {"truncated": f.truncated, "empty": f.empty}
                 for f in self.fields if f.slot == "bags"}
        if lists:  # rows cut to max_length and empty lists, per list field
            counts["lists"] = lists
        schema_d = self.schema.as_dict()
        parent = None if plan.parent is None else {"path": str(plan.parent.path.resolve()),
                                                   "fingerprint": plan.parent.fingerprint}
        if plan.grow:
            parent.update(grown=True, ancestors=plan.parent.feature_map.lineage(plan.parent.vocab_fingerprint))
        elif parent is not None and (plan.parent.feature_map.parent or {}).get("ancestors"):
            parent["ancestors"] = plan.parent.feature_map.parent["ancestors"]  # same ids: the same ancestors
        fm = FeatureMap(dataset=self.schema.name, fields=self.infos, fingerprint=plan.fingerprint,
                        schema=schema_d, settings=plan.settings, counts=counts,
                        inputs=plan.identities,
                        vocab_fingerprint=vocab_fingerprint(self.infos, self.vocabs, schema_d),
                        parent=parent)
        (self.tmp / "feature_map.json").write_text(json.dumps(fm.to_json(), indent=1) + "\n")
        return fm
