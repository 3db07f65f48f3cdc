"""Vectorised validation and transformation of one chunk of raw columns into field tokens.

Each store field gets one dictionary-encoded token array per chunk (null = missing; the
dictionary may repeat a token, e.g. raw "1" and "3" both bucket to 1):
- categorical: the raw string;
- numeric-bucketed: int64 ``floor(ln(v)^2)`` for v > 2, else ``v`` (Criteo_x4 setting);
- hour-of-day / weekday / weekend: int64 from a ``YYMMDDHH`` value;
- hashed: the raw string (hashed by its field, :mod:`mutualctr.data.fields`);
- multi-valued / sequence: a list of strings per row (a text cell split at the field's
  separator, or a parquet list column's items as text); null = an empty list (an empty cell);
  an empty item (``a||b``, a trailing separator, a null item) is a bad cell;
- dense: float64 (null = missing), ``log1p`` applied (a value <= -1 is a bad cell).
Labels become float32 0/1. Bad cells mark their row bad; the first bad cell of each column is
kept (row, column, message) so that errors can name file, line and column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mutualctr.data.schema import CATEGORICAL, DENSE, HASHED, HOUR, LIST_KINDS, NUMERIC, WEEKDAY, WEEKEND, Schema

_INT_RE = r"^[+-]?[0-9]+$"
_NUM_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_I64_MAX = "9223372036854775807"
_MIN_FLOOR = -(2.0**63)  # the smallest number whose floor is an int64 (numbers <= 2 bucket as floor(v))
OUT_OF_RANGE = "is out of range (numbers must floor to a 64-bit integer)"
INT_OUT_OF_RANGE = "is out of range (integers must fit in 64 bits)"


def int64_overflow(values: pa.Array) -> np.ndarray:
    """Which strings of decimal integers (``_INT_RE``) lie outside the int64 range."""
    neg = pc.starts_with(values, "-").fill_null(False).to_numpy(zero_copy_only=False)
    body = pc.utf8_ltrim(pc.utf8_ltrim(values, characters="+-"), characters="0")
    n = pc.utf8_length(body).fill_null(0).to_numpy(zero_copy_only=False)
    above = pc.greater(body, _I64_MAX).fill_null(False).to_numpy(zero_copy_only=False)
    edge = neg & pc.equal(body, "9223372036854775808").fill_null(False).to_numpy(zero_copy_only=False)
    return (n > 19) | ((n == 19) & above & ~edge)


@dataclass
class Transformed:
    tokens: list[pa.Array]
    label: np.ndarray | None
    bad: np.ndarray  # bool (rows,)
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (row, column, message)

    def first_error(self) -> tuple[int, str, str] | None:
        return min(self.errors) if self.errors else None


def _as_string(col: pa.Array) -> pa.Array:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col
    if pa.types.is_dictionary(col.type):
        return _as_string(col.dictionary_decode())
    if pa.types.is_floating(col.type):
        # 3.0 -> "3" so that parquet floats holding integers read like their csv text: value by
        # value (int64 ones), so that a value's text never depends on the rest of its chunk
        f = col.cast(pa.float64()).fill_null(0.5).to_numpy(zero_copy_only=False)
        whole = np.isfinite(f) & (np.floor(f) == f) & (np.abs(f) < 2.0**63)
        if whole.any():
            ints = pc.cast(pc.cast(pa.array(np.where(whole, f, 0.0)), pa.int64()), pa.string())
            return pc.if_else(pa.array(whole), ints, pc.cast(col, pa.string()))
    return pc.cast(col, pa.string())


def _checked(d: pa.DictionaryArray, col: str, flag) -> pa.DictionaryArray:
    """The CSV reader skips UTF-8 checks (faster); check each distinct value once here and
    flag the rows holding invalid text (their dictionary entry becomes "")."""
    try:
        d.dictionary.validate(full=True)
        return d
    except pa.ArrowInvalid:
        pass
    values = d.dictionary.cast(pa.binary()).to_pylist()
    ok = []
    for v in values:
        try:
            v.decode("utf-8")
            ok.append(True)
        except UnicodeDecodeError:
            ok.append(False)
    ok = np.array(ok, dtype=bool)
    idx = d.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    rows_bad = np.append(~ok, False)[idx]
    clean = pa.array([v.decode("utf-8") if k else "" for v, k in zip(values, ok)], pa.string())
    shown = pa.array([None if i < 0 else repr(values[i])[1:] for i in idx], pa.string())
    flag(rows_bad, col, shown, "is not valid UTF-8 text")
    return pa.DictionaryArray.from_arrays(d.indices, clean)


class ChunkTransformer:
    """Transforms chunks of one schema's file columns into the schema's field tokens."""

    def __init__(self, schema: Schema, need_label: bool = True) -> None:
        self.schema = schema
        self.fields = schema.fields()
        self.need_label = need_label

    def __call__(self, batch: pa.RecordBatch) -> Transformed:
        n = batch.num_rows
        bad = np.zeros(n, dtype=bool)
        errors: list[tuple[int, str, str]] = []
        names = batch.schema.names

        def flag(mask: np.ndarray, col: str, values: pa.Array, what: str) -> None:
            if mask.any():
                i = int(np.flatnonzero(mask)[0])
                v = values[i].as_py()
                shown = "an empty value" if v is None else repr(v)
                errors.append((i, col, f"{shown} {what}"))
                bad[:] |= mask

        label = None
        lab = self.schema.label
        if lab in names:
            label = self._label(batch.column(names.index(lab)), flag)
        elif self.need_label:
            raise KeyError(lab)

        cache: dict[str, list[pa.Array]] = {}
        tokens: list[pa.Array] = []
        for name, kind, col in self.fields:
            raw = batch.column(names.index(col))
            if kind in (CATEGORICAL, HASHED):
                tokens.append(_checked(pc.dictionary_encode(_as_string(raw)), col, flag))
            elif kind in LIST_KINDS:
                tokens.append(self._list(raw, col, flag))
            elif kind == DENSE:
                tokens.append(self._dense(raw, col, flag))
            elif kind == NUMERIC:
                tokens.append(self._numeric(raw, col, flag))
            else:
                if col not in cache:
                    cache[col] = self._hour(raw, col, flag)
                tokens.append(cache[col][(HOUR, WEEKDAY, WEEKEND).index(kind)])
        return Transformed(tokens, label, bad, errors)

    def _label(self, raw: pa.Array, flag) -> np.ndarray:
        s = _as_string(raw)
        lm = self.schema.label_map
        col = self.schema.label
        if lm:
            keys = pa.array(list(lm.keys()), pa.string())
            vals = np.array(list(lm.values()), dtype=np.float32)
            idx = pc.index_in(s, value_set=keys)
            ok = idx.is_valid().to_numpy(zero_copy_only=False)
            flag(~ok, col, s, f"is not a label value ({', '.join(lm)})")
            return np.where(ok, vals[idx.fill_null(0).to_numpy()], 0).astype(np.float32)
        one = pc.equal(s, "1").fill_null(False).to_numpy(zero_copy_only=False)
        zero = pc.equal(s, "0").fill_null(False).to_numpy(zero_copy_only=False)
        flag(~(one | zero), col, s, "is not a label (0 or 1)")
        return one.astype(np.float32)

    def _numeric(self, raw: pa.Array, col: str, flag) -> pa.DictionaryArray:
        """Numeric cells -> bucket tokens. Accepted: decimal integers within int64
        (``integer``) or finite decimal numbers whose floor fits int64 (``number``); empty =
        missing. Bad: other text (hex, inf, nan, spaces, ...), out-of-range values, and in
        parquet non-finite floats or (``integer``) fractions."""
        integer = self.schema.numeric_values == "integer"
        what = "is not an integer" if integer else "is not a number"
        if pa.types.is_integer(raw.type):
            if raw.type == pa.uint64():
                over = pc.greater(raw, pa.scalar(2**63 - 1, pa.uint64()))
                over = over.fill_null(False).to_numpy(zero_copy_only=False)
                flag(over, col, raw, INT_OUT_OF_RANGE)
                raw = pc.if_else(pa.array(over), pa.scalar(0, raw.type), raw)
            return pc.dictionary_encode(bucket(raw.cast(pa.int64())))
        if pa.types.is_floating(raw.type):
            v = raw.cast(pa.float64())
            null = ~v.is_valid().to_numpy(zero_copy_only=False)
            f = v.fill_null(0).to_numpy(zero_copy_only=False)
            bad = ~null & ~np.isfinite(f)
            if integer:
                bad |= ~null & np.isfinite(f) & (np.floor(f) != f)
            flag(bad, col, v, what)
            far = ~null & ~bad & (f < _MIN_FLOOR)
            flag(far, col, v, OUT_OF_RANGE)
            return pc.dictionary_encode(bucket(pa.array(np.where(bad | far, 0, f), mask=null)))
        # text: validate and bucket each distinct value once, on the chunk's dictionary
        s = _as_string(raw)
        d = _checked(pc.dictionary_encode(s), col, flag)
        values = d.dictionary
        try:  # fast path: every distinct value a plain integer (arrow also reads 0x.. as hex)
            v = pc.cast(values, pa.int64())
            if not pc.any(pc.match_substring(values, "x", ignore_case=True)).as_py():
                return pa.DictionaryArray.from_arrays(d.indices, bucket(v))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        ok = pc.match_substring_regex(values, _INT_RE if integer else _NUM_RE)
        ok = ok.to_numpy(zero_copy_only=False)
        plain = pc.replace_substring_regex(values, r"^\+", "")  # arrow's int parser refuses "+5"
        if integer:
            fits = ok & ~int64_overflow(values)
            v = pc.cast(pc.if_else(pa.array(fits), plain, pa.scalar("0")), pa.int64())
        else:
            f = pc.cast(pc.if_else(pa.array(ok), plain, pa.scalar("0")), pa.float64())
            f = f.to_numpy(zero_copy_only=False)
            fits = ok & np.isfinite(f) & (f >= _MIN_FLOOR)
            v = pa.array(np.where(fits, f, 0.0))
        idx = d.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        for mask, msg in ((~ok, what), (ok & ~fits, INT_OUT_OF_RANGE if integer else OUT_OF_RANGE)):
            if mask.any():
                flag(np.append(mask, False)[idx], col, s, msg)  # index -1 (missing) -> ok
        return pa.DictionaryArray.from_arrays(d.indices, bucket(v))

    def _list(self, raw: pa.Array, col: str, flag) -> pa.ListArray:
        """A list column's cells -> a list of strings per row (null: an empty cell). Text is
        split at the field's separator; a parquet list column's items are read as text."""
        if pa.types.is_list(raw.type) or pa.types.is_large_list(raw.type):
            lengths = pc.list_value_length(raw).fill_null(0).to_numpy(zero_copy_only=False)
            items = _as_string(raw.flatten())
            empty = ~items.is_valid().to_numpy(zero_copy_only=False)
            shown = raw  # its rows' text is made only for an error message
        else:
            s = _checked(pc.dictionary_encode(_as_string(raw)), col, flag).dictionary_decode()
            s = pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)
            split = pc.split_pattern(s, self.schema.spec(col).separator)
            lengths = pc.list_value_length(split).fill_null(0).to_numpy(zero_copy_only=False)
            items, shown = split.flatten(), s
            empty = pc.equal(items, "").to_numpy(zero_copy_only=False)
        offsets = np.zeros(len(lengths) + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        if empty.any():
            rows = np.repeat(np.arange(len(lengths)), lengths)[empty]
            if shown is raw:
                shown = pa.array([None if v is None else str(v) for v in raw.to_pylist()], pa.string())
            flag(np.isin(np.arange(len(lengths)), rows), col, shown, "has an empty item")
        valid = pa.array(lengths > 0)
        return pa.ListArray.from_arrays(pa.array(offsets), items.fill_null(""),
                                         mask=pc.invert(valid))

    def _dense(self, raw: pa.Array, col: str, flag) -> pa.Array:
        """Dense cells -> float64 (null: missing), ``log1p`` applied. Bad: text that is not a
        decimal number, non-finite values, and (``log1p``) values <= -1."""
        if pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type):
            v = raw.cast(pa.float64())
            f = v.fill_null(0).to_numpy(zero_copy_only=False)
            flag(~np.isfinite(f), col, v, "is not a number")
        else:
            s = _checked(pc.dictionary_encode(_as_string(raw)), col, flag).dictionary_decode()
            ok = pc.match_substring_regex(s, _NUM_RE).fill_null(True).to_numpy(zero_copy_only=False)
            plain = pc.replace_substring_regex(s, r"^\+", "")
            v = pc.cast(pc.if_else(pa.array(ok), plain, pa.scalar("0")), pa.float64())
            f = v.fill_null(0).to_numpy(zero_copy_only=False)
            flag(~ok, col, s, "is not a number")
            flag(ok & ~np.isfinite(f), col, s, "is out of range (not a finite number)")
        null = ~v.is_valid().to_numpy(zero_copy_only=False)
        f = np.where(np.isfinite(f), f, 0.0)
        if self.schema.spec(col).transform == "log1p":
            low = ~null & (f <= -1)
            flag(low, col, v, "is <= -1 (transform log1p needs values > -1)")
            f = np.log1p(np.where(low, 0.0, f))
        return pa.array(f, pa.float64(), mask=null)

    def _hour(self, raw: pa.Array, col: str, flag) -> list[pa.DictionaryArray]:
        s = _as_string(raw)
        enc = _checked(pc.dictionary_encode(s), col, flag)
        d = enc.dictionary.to_pylist()
        idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        ok_d = np.array([len(x) == 8 and x.isdigit() for x in d], dtype=bool)
        num = np.array([int(x) if ok else 0 for x, ok in zip(d, ok_d)], dtype=np.int64)
        yy, mm, dd, hh = num // 1000000, num // 10000 % 100, num // 100 % 100, num % 100
        ok_d &= (mm >= 1) & (mm <= 12) & (dd >= 1) & (dd <= 31) & (hh <= 23)
        days = ((2000 + yy - 1970).astype("datetime64[Y]").astype("datetime64[M]")
                + np.where(ok_d, mm - 1, 0)).astype("datetime64[D]") + np.where(ok_d, dd - 1, 0)
        weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        if not ok_d.all():
            flag(np.append(~ok_d, False)[idx], col, s, "is not a YYMMDDHH hour")
        return [pa.DictionaryArray.from_arrays(enc.indices, pa.array(values, pa.int64()))
                for values in (hh, weekday, (weekday >= 5).astype(np.int64))]


def bucket(v: pa.Array) -> pa.Array:
    """Criteo_x4 numeric bucketing: v > 2 -> floor(ln(v)^2), else v (floored); null stays."""
    valid = v.is_valid().to_numpy(zero_copy_only=False)
    x = v.fill_null(0).to_numpy(zero_copy_only=False)
    big = x > 2
    if np.issubdtype(x.dtype, np.integer):
        out = x.astype(np.int64)
    else:  # the floor of each value <= 2 (callers keep them >= -2**63)
        out = np.floor(np.where(big, 0, x)).astype(np.int64)
    if big.any():
        out[big] = np.floor(np.log(x[big].astype(np.float64)) ** 2).astype(np.int64)
    return pa.array(out, type=pa.int64(), mask=~valid)


def truncate(lists: pa.ListArray, max_length: int, keep_last: bool) -> tuple[pa.ListArray, np.ndarray]:
    """Lists cut to ``max_length`` items (the first ones, or with ``keep_last`` the last ones)
    and the (rows,) bool mask of the rows that were cut. Null (empty) lists stay null."""
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    cut = lengths > max_length
    items = lists.flatten()
    if not cut.any():
        return lists, cut
    kept = np.minimum(lengths, max_length)
    starts = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    if keep_last:
        starts += lengths - kept
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(kept, out=offsets[1:])
    take = np.repeat(starts - offsets[:-1], kept) + np.arange(offsets[-1])
    return pa.ListArray.from_arrays(pa.array(offsets), items.take(pa.array(take)),
                                    mask=pc.invert(pa.array(lengths > 0))), cut
