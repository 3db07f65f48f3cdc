"""The periods of ``experiment online``: a time-ordered raw file cut into consecutive files.

Two ways (:func:`cut_periods`):

- equal rows (the default): K periods of ``rows // K`` consecutive rows, the last taking the rest;
- calendar periods of a time column (``--time-column COL --period day|week|month``): each row goes
  to the UTC day, ISO week or month of its value, and the first K such periods in the file are
  the experiment's (rows after them are left out). The column holds Unix seconds (an integer or a
  decimal), or ``YYMMDDHH`` hours when the schema lists it under ``hour`` (Avazu). The rows must
  be in time order: a row of an earlier period than the row before it is refused.

Either way the header line, if any, is copied into each period file, ``periods.json`` records
each period's name and rows, and the files are reused when present (the experiment's marker
holds the settings they were cut with).
"""

from __future__ import annotations

import csv
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from mutualctr import atomic
from mutualctr.config import ConfigError
from mutualctr.data.schema import Schema

#: fewest rows a period may hold (its store splits 80/10/10 and needs both classes in each)
MIN_PERIOD_ROWS = 200
CALENDAR = ("day", "week", "month")
INDEX = "periods.json"


def _open(path: Path):
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")


def cut_periods(raw: Path, schema: Schema, periods: int, out: Path, time_column: str | None = None,
                period: str | None = None) -> tuple[list[Path], list[dict]]:
    """``raw``'s rows cut into ``periods`` files under ``out``: the files and, per period, its
    ``name`` and ``rows``. Reused when present."""
    files = [out / f"period-{k}.txt" for k in range(periods)]
    if all(f.is_file() for f in files):
        if not (out / INDEX).is_file():  # cut before periods.json was written: the files stay as they are
            atomic.write_json(out / INDEX, _index_of(files, schema.header is not False))
        return files, json.loads((out / INDEX).read_text())
    if periods < 3:
        raise ConfigError(f"--periods: {periods}; the online experiment needs at least 3 (pretrain, update, evaluate)")
    header = schema.header is not False
    if time_column is None:
        counts = _equal_rows(raw, header, periods)
    else:
        counts = _calendar_counts(raw, schema, time_column, period or "month", periods)
    out.mkdir(parents=True, exist_ok=True)
    with _open(raw) as f:
        head = f.readline() if header else ""
        for path, c in zip(files, counts):
            with atomic.atomic_path(path) as tmp, open(tmp, "w", newline="") as w:
                w.write(head)
                for _ in range(c["rows"]):
                    w.write(f.readline())
    atomic.write_json(out / INDEX, counts)
    return files, counts


def _index_of(files: list[Path], header: bool) -> list[dict]:
    """The name (its rows' numbers) and rows of each period file already cut (equal rows)."""
    out, first = [], 1
    for f in files:
        with open(f) as r:
            rows = sum(1 for _ in r) - header
        out.append({"name": f"rows {first}-{first + rows - 1}", "rows": rows})
        first += rows
    return out


def _equal_rows(raw: Path, header: bool, periods: int) -> list[dict]:
    with _open(raw) as f:
        if header:
            f.readline()
        rows = sum(1 for _ in f)
    per = rows // periods
    if per < MIN_PERIOD_ROWS:
        raise ConfigError(f"--periods {periods}: {raw} has {rows:,} rows, {per:,} per period; a period needs "
                          f"at least {MIN_PERIOD_ROWS} (at most {rows // MIN_PERIOD_ROWS} periods here)")
    return [{"name": f"rows {k * per + 1}-{k * per + (per if k < periods - 1 else rows - per * k)}",
             "rows": per if k < periods - 1 else rows - per * (periods - 1)} for k in range(periods)]


def period_of(value: str, period: str, hour: bool) -> str:
    """The name of the UTC day (``1997-09-20``), ISO week (``1997-W38``) or month (``1997-09``)
    of a time value (Unix seconds, or ``YYMMDDHH`` when ``hour``); ValueError when unreadable."""
    if hour:
        t = datetime.strptime(value.strip(), "%y%m%d%H").replace(tzinfo=timezone.utc)
    else:
        t = datetime.fromtimestamp(float(value), tz=timezone.utc)
    if period == "day":
        return t.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    return t.strftime("%Y-%m")


def _split(schema: Schema, lines) -> Iterator[list[str]]:
    """Each line's cells (quoted fields read as csv when the schema quotes)."""
    if schema.quoting:
        return csv.reader(lines, delimiter=schema.sep)
    return (ln.rstrip("\r\n").split(schema.sep) for ln in lines)


def _cells(raw: Path, schema: Schema, column: str) -> Iterator[tuple[int, str]]:
    """(line number, the time column's cell) of every data row of ``raw`` (None: a blank line)."""
    with _open(raw) as f:
        first = f.readline()
        names = list(schema.columns)
        line0 = 1
        if schema.header is not False:
            names, line0 = next(_split(schema, [first])), 2
        else:
            f.seek(0)
        if column not in names:
            raise ConfigError(f"--time-column: {raw} has no column {column!r} (columns: {', '.join(names)})")
        j = names.index(column)
        rows = _split(schema, f)
        for n, cells in enumerate(rows, line0):
            yield n, (cells[j] if j < len(cells) else "") if cells else None


def _calendar_counts(raw: Path, schema: Schema, column: str, period: str, periods: int) -> list[dict]:
    """The rows of each of the first ``periods`` calendar periods of ``raw`` (ConfigError: a bad or
    out-of-order time value, too few periods, a period under :data:`MIN_PERIOD_ROWS` rows)."""
    if period not in CALENDAR:
        raise ConfigError(f"--period: expected {', '.join(CALENDAR)}, got {period!r}")
    hour = column in schema.hour
    counts: list[dict] = []
    for line, cell in _cells(raw, schema, column):
        if cell is None and counts:  # a blank line: kept with its period (prepare skips it)
            counts[-1]["rows"] += 1
            continue
        try:
            name = period_of(cell, period, hour)
        except (ValueError, OverflowError, OSError):
            what = "a YYMMDDHH hour" if hour else "Unix seconds"
            raise ConfigError(f"{raw}:{line}: column {column}: {cell!r} is not {what}") from None
        if counts and name < counts[-1]["name"]:
            raise ConfigError(f"{raw}:{line}: column {column}: {cell!r} ({name}) comes after a row of "
                              f"{counts[-1]['name']}; the rows must be in time order")
        if not counts or name != counts[-1]["name"]:
            counts.append({"name": name, "rows": 0})
        counts[-1]["rows"] += 1
    if len(counts) < periods:
        span = f" ({counts[0]['name']} .. {counts[-1]['name']})" if counts else ""
        raise ConfigError(f"--periods {periods}: {raw} has {len(counts)} {period}s by its column {column}{span}; "
                          f"at most {len(counts)} periods here")
    small = [c for c in counts[:periods] if c["rows"] < MIN_PERIOD_ROWS]
    if small:
        name, rows = small[0]["name"], small[0]["rows"]
        raise ConfigError(f"--periods {periods}: the {period} {name} of {raw} has {rows:,} rows; "
                          f"a period needs at least {MIN_PERIOD_ROWS}")
    return counts[:periods]
