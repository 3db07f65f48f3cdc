"""Streaming readers: a raw csv/tsv (optionally gzip) or parquet file -> chunks of columns.

Memory stays flat: a file is read block by block with pyarrow's streaming CSV reader (every
column as a nullable string, empty = null) or parquet's batch iterator. Rows with the wrong
number of columns raise a DataError naming file and line (or are skipped and counted).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mutualctr.data._threads import background
from mutualctr.data.schema import Schema
from mutualctr.errors import DataError, input_problem

BLOCK_SIZE = 16 << 20
PARQUET_BATCH = 1 << 16


@dataclass
class Chunk:
    batch: pa.RecordBatch
    path: Path
    start: int  # index of the chunk's first row among the file's data rows
    first_line: int = 1  # physical line (parquet: row number) of the chunk's first row
    line_map: np.ndarray | None = None  # physical line of each row, when rows were skipped

    def line(self, row: int) -> int:
        """1-based physical line (row number for parquet) of the chunk's row ``row``."""
        if self.line_map is not None:
            return int(self.line_map[row])
        return self.first_line + row


def _open(path: Path) -> pa.NativeFile:
    try:
        return pa.input_stream(str(path), compression="detect")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open: {e}") from None


def iter_blocks(path: Path, block: int, where: Callable[[], str] = lambda: "") -> Iterator[bytes]:
    """Decompressed blocks of a file; a truncated or corrupt stream is a DataError."""
    with _open(path) as f:
        while True:
            try:
                data = f.read(block)
            except OSError as e:
                raise DataError(f"{path}: truncated or corrupt compressed file{where()}: {e}") from None
            if not data:
                return
            yield data


def iter_lines(path: Path, block: int = 4 << 20) -> Iterator[bytes]:
    """Physical lines of a (possibly compressed) text file, without their newline."""
    rest = b""
    for data in iter_blocks(path, block):
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line[:-1] if line.endswith(b"\r") else line
    if rest:
        yield rest[:-1] if rest.endswith(b"\r") else rest


def _split_line(line: str, schema: Schema) -> list[str]:
    if schema.quoting and '"' in line:
        return next(csv.reader([line], delimiter=schema.sep))
    return line.split(schema.sep)


def _first_line(path: Path) -> str | None:
    for line in iter_lines(path, block=1 << 20):
        return line.decode("utf-8", errors="replace")
    return None


class TableReader:
    """Reads one file of ``schema`` in chunks.

    ``optional``: columns the file may lack (the label, when encoding unlabeled rows).
    After construction ``columns`` holds the file's columns and ``header_lines`` 0 or 1.
    """

    def __init__(self, schema: Schema, path: Path, on_bad_rows: str = "error",
                 optional: tuple[str, ...] = (), block_size: int | None = None) -> None:
        self.schema = schema
        self.path = Path(path)
        self.skip = on_bad_rows == "skip"
        self.block_size = block_size or BLOCK_SIZE
        self.skipped = 0  # rows of the wrong width skipped
        self._bad_lines: list[int] = []
        if (problem := input_problem(self.path)) is not None:
            raise DataError(f"{self.path}: {problem}")
        if schema.format == "parquet":
            self._init_parquet(optional)
        else:
            self._init_text(optional)

    # -- layout -----------------------------------------------------------------------------
    def _check_names(self, names: list[str], optional: tuple[str, ...], where: str) -> None:
        want = self.schema.columns
        if not want:
            return
        alt = [c for c in want if c not in optional]
        if names != want and names != alt:
            missing = [c for c in want if c not in names and c not in optional]
            extra = [c for c in names if c not in want]
            detail = (f"missing column {missing[0]!r}" if missing else
                      f"unexpected column {extra[0]!r}" if extra else "columns in another order")
            raise DataError(f"{where}: {detail} (expected {', '.join(want)})")

    def _init_parquet(self, optional: tuple[str, ...]) -> None:
        try:
            self._pq = pq.ParquetFile(str(self.path))
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{self.path}: not a readable parquet file: {e}") from None
        names = list(self._pq.schema_arrow.names)
        self._check_names(names, optional, str(self.path))
        self._check_list_types()
        self.columns = names
        self.header_lines = 0
        if self._pq.metadata.num_rows == 0:
            raise DataError(f"{self.path}: empty file (no rows)")

    def _check_list_types(self) -> None:
        """A column declared multi-valued or a sequence must be a parquet list column, or text
        to split at its separator; any other type (a number: one value or a list?) is refused."""
        types = {f.name: f.type for f in self._pq.schema_arrow}
        for role in ("multi_valued", "sequence"):
            for col, spec in getattr(self.schema, role).items():
                t = types.get(col)
                if t is None or pa.types.is_list(t) or pa.types.is_large_list(t) or \
                        pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
                    continue
                raise DataError(f"{self.path}: column {col}: declared {role} but its parquet type is "
                                f"{t}, neither a list nor text to split at {spec.separator!r}")
        lists = set(self.schema.multi_valued) | set(self.schema.sequence)
        for col, t in types.items():  # a one-value field read from a list, struct or map column
            role = None if col in lists or not pa.types.is_nested(t) else self.schema.role(col)
            if role not in (None, "drop"):
                raise DataError(f"{self.path}: column {col}: declared {role} but its parquet "
                                f"type is {t}, which holds several values per row (declare a list column "
                                "multi_valued or sequence: docs/data.md)")

    def _init_text(self, optional: tuple[str, ...]) -> None:
        first = _first_line(self.path)
        if first is None:
            raise DataError(f"{self.path}: empty file")
        fields = _split_line(first, self.schema)
        want = self.schema.columns
        header = self.schema.header
        if header == "auto":
            # a header: the first line is made of the schema's column names
            header = len(fields) > 1 and all(f in want for f in fields)
        if header:
            self._check_names(fields, optional, f"{self.path}:1")
            self.columns = fields
            self.header_lines = 1
        else:
            alt = [c for c in want if c not in optional]
            if len(fields) == len(want):
                self.columns = list(want)
            elif optional and len(fields) == len(alt):
                self.columns = alt
            else:
                raise DataError(f"{self.path}:1: expected {len(want)} columns, found {len(fields)}")
            self.header_lines = 0

    # -- reading ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Chunk]:
        if self.schema.format == "parquet":
            yield from self._iter_parquet()
        else:
            yield from self._iter_text()

    def _iter_parquet(self) -> Iterator[Chunk]:
        start = 0
        try:
            for batch in self._pq.iter_batches(batch_size=PARQUET_BATCH):
                yield Chunk(batch, self.path, start, first_line=start + 1)
                start += batch.num_rows
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{self.path}: corrupt parquet file near row {start + 1}: {e}") from None

    def _pieces(self) -> Iterator[tuple[bytes, int]]:
        """Whole lines in pieces of about ``block_size`` bytes: (bytes, first line number).

        The header is cut off; trailing blank lines at the end of the file are not rows.
        """
        first = 1 + self.header_lines  # line number of the next piece's first line
        header = self.header_lines
        pending: bytes | None = None
        pending_line = first

        def whole_lines() -> Iterator[bytes]:
            rest = b""
            for data in iter_blocks(self.path, self.block_size, lambda: f" (after line {first - 1})"):
                buf = rest + data if rest else data
                cut = buf.rfind(b"\n") + 1
                if cut == 0:
                    rest = buf
                    continue
                yield buf[:cut]
                rest = buf[cut:]
            if rest:
                yield rest + b"\n"

        for piece in whole_lines():
            while header and piece:
                piece, header = piece[piece.find(b"\n") + 1:], header - 1
            if not piece:
                continue
            if pending is not None:
                yield pending, pending_line
            pending, pending_line = piece, first
            first += piece.count(b"\n")
        if pending is not None:
            stripped = pending.rstrip(b"\r\n")
            if stripped:
                yield stripped + b"\n", pending_line

    def _parse(self, piece: bytes, first_line: int) -> tuple[pa.Table, np.ndarray | None]:
        names = self.columns
        skipped: list[int] = []

        def handler(row: pacsv.InvalidRow) -> str:
            skipped.append(1)
            return "skip" if self.skip else "error"

        # one thread per piece: the caller already overlaps parsing with the transforms, and
        # arrow's own threads cost ~40% more CPU here; UTF-8 is checked later, per distinct value
        read = pacsv.ReadOptions(column_names=names, block_size=len(piece) + 1, use_threads=False)
        parse = pacsv.ParseOptions(delimiter=self.schema.sep,
                                   quote_char='"' if self.schema.quoting else False,
                                   ignore_empty_lines=False, invalid_row_handler=handler)
        conv = pacsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                    strings_can_be_null=True, null_values=[""],
                                    quoted_strings_can_be_null=True, check_utf8=False)
        try:
            table = pacsv.read_csv(pa.py_buffer(piece), read_options=read, parse_options=parse,
                                   convert_options=conv)
        except pa.ArrowInvalid as e:
            if skipped:
                bad = self._bad_widths(piece, first_line, limit=1)
                if bad:
                    line, width = bad[0]
                    raise DataError(
                        f"{self.path}:{line}: expected {len(names)} columns, found {width}"
                    ) from None
            last = first_line + piece.count(b"\n") - 1
            raise DataError(f"{self.path}: cannot parse lines {first_line}..{last}: {e}") from None
        line_map = None
        if skipped:
            bad = self._bad_widths(piece, first_line, limit=None)
            self.skipped += len(skipped)
            self._bad_lines += [ln for ln, _ in bad][: max(0, 5 - len(self._bad_lines))]
            nlines = piece.count(b"\n")
            good = np.setdiff1d(np.arange(first_line, first_line + nlines),
                                np.array([ln for ln, _ in bad], dtype=np.int64))
            line_map = good[: table.num_rows]
        return table, line_map

    def _iter_text(self) -> Iterator[Chunk]:
        self.skipped = 0
        self._bad_lines = []
        parsed = background((self._parse(piece, first) + (first,) for piece, first in self._pieces()),
                            2, "mutualctr-reader")
        start = 0
        try:
            for table, line_map, first_line in parsed:
                for batch in table.combine_chunks().to_batches():
                    n = batch.num_rows
                    lm = None if line_map is None else line_map[:n]
                    yield Chunk(batch, self.path, start, first_line, lm)
                    if line_map is not None:
                        line_map = line_map[n:]
                        first_line = int(lm[-1]) + 1 if n else first_line
                    else:
                        first_line += n
                    start += n
        finally:
            parsed.close()
        if start == 0 and self.skipped == 0:
            raise DataError(f"{self.path}: empty file (no data rows)")

    # -- line numbers ---------------------------------------------------------------------
    def _bad_widths(self, piece: bytes, first_line: int,
                    limit: int | None) -> list[tuple[int, int]]:
        """(line, width) of the rows of wrong width in a piece (error paths only)."""
        n = len(self.columns)
        out = []
        for i, raw in enumerate(piece.split(b"\n")[:-1]):
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            width = len(_split_line(line, self.schema))
            if width != n:
                out.append((first_line + i, width))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def bad_width_lines(self, limit: int = 5) -> list[int]:
        """The first lines skipped for having the wrong number of columns."""
        return list(self._bad_lines[:limit])
