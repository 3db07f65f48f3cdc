#!/usr/bin/env python3
"""Score raw rows with a mutualctr export, without mutualctr: the reference encoder.

    python examples/serve_export.py EXPORT_DIR INPUT --out preds.csv [--keep COL ...]
    python examples/serve_export.py EXPORT_DIR INPUT --ids-out ids.npy      # ids only

EXPORT_DIR is what ``mutualctr export`` wrote. Each raw row of INPUT (csv/tsv, ``.gz`` ok, in
the layout the run's store was prepared from, label column optional) becomes the model's int64
ids through EXPORT_DIR/encoder.json, the way ``mutualctr predict`` encodes it (docs/export.md
restates every rule), and is scored by EXPORT_DIR's model: onnxruntime for model.onnx,
torch.jit for model.pt. The CSV holds the --keep columns and ``probability`` (6 decimals), as
predict's. Needs Python 3.9+ and numpy, plus onnxruntime (or torch for TorchScript), and xxhash
for a store with hashed fields. A store with list or dense fields gives the model several
inputs (ids, bag_<field>, values, missing; docs/export.md).

Plain Python, one cell at a time: a reference to port, not a fast serving path. A bad cell
stops it with one line naming file, line and column (exit 2), as predict does.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime
import gzip
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

ENCODER_FORMAT, ENCODER_VERSION = "mutualctr-encoder", 1
EXPORT_FORMAT, EXPORT_VERSION = "mutualctr-export", 1
# integers predict reads in every case (a leading "+" or a value outside int64 makes it fail)
INTEGER = re.compile(r"-?[0-9]+")
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
INT64 = (-(2**63), 2**63 - 1)


class BadInput(ValueError):
    """A raw cell or file mutualctr would reject too (or a spec this encoder cannot read)."""


def _read_json(path: Path, fmt: str, version: int) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: unreadable: {e}") from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise BadInput(f"{path}: not a {fmt} file")
    if d.get("version") != version:
        raise BadInput(f"{path}: version {d.get('version')}, this encoder reads {version}")
    return d


# ---- one cell -> one token ----------------------------------------------------------------

def log_squared_token(text: str, transform: dict):
    """The token of a numeric cell: ``v`` (floored) for ``v <= 2``, else the number of
    thresholds ``<= v`` (= ``floor(ln(v)^2)`` below the last threshold)."""
    number = transform["values"] == "number"
    if INTEGER.fullmatch(text) and INT64[0] <= int(text) <= INT64[1]:
        v = int(text)
        if v <= 2:
            return v
        x = float(v) if number else v
    elif number and NUMBER.fullmatch(text):
        x = float(text)
        if x <= 2:
            return math.floor(x) if math.isfinite(x) else None  # -inf: no token (OOV)
    else:
        raise BadInput("is not an integer" if not number else "is not a number")
    return bisect.bisect_right(transform["thresholds"], x)


def yymmddhh_token(text: str, part: str) -> int:
    """hour_of_day (0-23), weekday (Monday 0) or weekend (1 for Saturday and Sunday) of a
    YYMMDDHH value (20YY; a day past the month's end runs on into the next month)."""
    if not (len(text) == 8 and text.isdigit()):
        raise BadInput("is not a YYMMDDHH hour")
    n = int(text)
    yy, mm, dd, hh = n // 1000000, n // 10000 % 100, n // 100 % 100, n % 100
    if not (1 <= mm <= 12 and 1 <= dd <= 31 and hh <= 23):
        raise BadInput("is not a YYMMDDHH hour")
    if part == "hour_of_day":
        return hh
    weekday = (datetime.date(2000 + yy, mm, 1).weekday() + dd - 1) % 7
    return weekday if part == "weekday" else int(weekday >= 5)


class Encoder:
    """Raw rows -> int64 (n, F) ids with an encoder spec (encoder.json)."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.input = spec["input"]
        self.fields = spec["fields"]
        ids = spec["ids"]
        self.oov, self.missing, self.first = ids["oov"], ids["missing"], ids["first"]
        self.lookup = [{v: self.first + i for i, v in enumerate(f["vocab"])} for f in self.fields]
        # a store with list or dense fields (issue 25): the model's further inputs
        kind = [f["transform"]["name"] for f in self.fields]
        self.single = [i for i, k in enumerate(kind) if k not in ("list", "dense")]
        self.lists = [i for i, k in enumerate(kind) if k == "list"]
        self.dense = [i for i, k in enumerate(kind) if k == "dense"]

    @classmethod
    def load(cls, path: str | Path) -> "Encoder":
        return cls(_read_json(Path(path), ENCODER_FORMAT, ENCODER_VERSION))

    def token(self, f: dict, text: str):
        t = f["transform"]
        if t["name"] == "text":
            return text
        if t["name"] == "log_squared":
            return log_squared_token(text, t)
        if t["name"] == "yymmddhh":
            return yymmddhh_token(text, t["part"])
        raise BadInput(f"field {f['name']}: unknown transform {t['name']!r}")

    def local_id(self, i: int, text: str) -> int:
        """Field ``i``'s local id of a raw cell ('' = missing)."""
        if text == "":
            return self.missing
        t = self.fields[i]["transform"]
        if t["name"] == "xxh64":  # hashed: no vocabulary
            import xxhash

            return self.first + xxhash.xxh64_intdigest(text.encode("utf-8"), seed=t["seed"]) % t["buckets"]
        return self.lookup[i].get(self.token(self.fields[i], text), self.oov)

    def list_ids(self, i: int, text: str) -> list[int]:
        """A list field's padded global ids: items cut to max_length (first, or last for a
        sequence), an empty cell the one missing id, 0 after the items."""
        f, t = self.fields[i], self.fields[i]["transform"]
        items = text.split(t["separator"]) if text else []
        if any(item == "" for item in items):
            raise BadInput(f"has an empty item (separator {t['separator']!r})")
        items = items[-t["max_length"]:] if t["keep"] == "last" else items[:t["max_length"]]
        ids = [f["offset"] + self.lookup[i].get(item, self.oov) for item in items] or [f["offset"] + self.missing]
        return ids + [0] * (t["max_length"] - len(ids))

    def dense_value(self, i: int, text: str) -> tuple[float, bool]:
        """A dense field's (value, missing): the number, then log1p or standardize."""
        if text == "":
            return 0.0, True
        t = self.fields[i]["transform"]
        if not NUMBER.fullmatch(text) or not math.isfinite(float(text)):
            raise BadInput("is not a number")
        v = float(text)
        if t["transform"] == "log1p":
            if v <= -1:
                raise BadInput("is <= -1 (log1p)")
            v = math.log1p(v)
        elif t["transform"] == "standardize":
            v = (v - t["mean"]) / t["std"]
        return v, False

    def label(self, text: str) -> int:
        lm = self.input["label_map"]
        if lm:
            if text not in lm:
                raise BadInput(f"is not a label value ({', '.join(lm)})")
            return int(lm[text])
        if text not in ("0", "1"):
            raise BadInput("is not a label (0 or 1)")
        return int(text)

    # ---- a raw file -------------------------------------------------------------------------
    def _lines(self, path: Path):
        """(line number, text, valid UTF-8) of the data rows; trailing blank lines are not rows."""
        if self.input["format"] == "parquet":
            raise BadInput(f"{path}: parquet input is not read by this example (read the columns "
                           "with pyarrow and give it their cells as text)")
        opener = gzip.open if path.name.endswith(".gz") else open
        blank: list[int] = []
        try:
            with opener(path, "rb") as f:
                for n, raw in enumerate(f, 1):
                    raw = raw.rstrip(b"\n")
                    raw = raw[:-1] if raw.endswith(b"\r") else raw
                    if not raw:
                        blank.append(n)
                        continue
                    for b in blank:
                        yield b, "", True
                    blank = []
                    try:
                        yield n, raw.decode("utf-8"), True
                    except UnicodeDecodeError:  # only the cells the fields read must be text
                        yield n, raw.decode("utf-8", errors="surrogateescape"), False
        except (OSError, EOFError) as e:
            raise BadInput(f"{path}: cannot read: {e}") from None

    def _split(self, text: str) -> list[str]:
        sep = self.input["separator"]
        if self.input["quoting"] and '"' in text:
            return next(csv.reader([text], delimiter=sep))
        return text.split(sep)

    def _columns(self, path: Path, first: list[str]) -> tuple[list[str], bool]:
        """The file's columns and whether the first line is a header."""
        want, label = self.input["columns"], self.input["label"]
        alt = [c for c in want if c != label]
        header = self.input["header"]
        if header == "auto":
            header = len(first) > 1 and all(c in want for c in first)
        if header:
            if first not in (want, alt):
                raise BadInput(f"{path}:1: columns {', '.join(first)} are not "
                               f"{', '.join(want)} (label optional)")
            return first, True
        if len(first) == len(want):
            return list(want), False
        if len(first) == len(alt):
            return alt, False
        raise BadInput(f"{path}:1: expected {len(want)} columns, found {len(first)}")

    def encode_file(self, path: str | Path, keep=()) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """(ids int64 (n, F), labels (n,) or None, {kept column: [raw cells]}); for a store
        with list or dense fields ids is ``{input name: array}`` (the model's inputs)."""
        path = Path(path)
        rows, labels, kept = [], [], {c: [] for c in keep}
        extra = []
        columns = None
        for n, text, utf8 in self._lines(path):
            cells = self._split(text)
            if columns is None:
                columns, is_header = self._columns(path, cells)
                where = {c: j for j, c in enumerate(columns)}
                for c in keep:
                    if c not in where:
                        raise BadInput(f"{path}: no column {c!r} to keep "
                                       f"(columns: {', '.join(columns)})")
                src = [where[f["column"]] for f in self.fields]
                lab = where.get(self.input["label"])
                if is_header:
                    continue
            if len(cells) != len(columns):
                raise BadInput(f"{path}:{n}: expected {len(columns)} columns, found {len(cells)}")
            j = None
            try:
                ids, bags, values, missing = [], [], [], []
                for i, j in enumerate(src):
                    if not utf8 and not _is_text(cells[j]):
                        raise BadInput("is not valid UTF-8 text")
                    kind = self.fields[i]["transform"]["name"]
                    if kind == "list":
                        bags.append(self.list_ids(i, cells[j]))
                    elif kind == "dense":
                        v, m = self.dense_value(i, cells[j])
                        values.append(v)
                        missing.append(m)
                    else:
                        ids.append(self.fields[i]["offset"] + self.local_id(i, cells[j]))
                extra.append((bags, values, missing))
                if lab is not None:
                    j = lab
                    labels.append(self.label(cells[lab]))
            except BadInput as e:
                shown = "an empty value" if cells[j] == "" else repr(cells[j])
                raise BadInput(f"{path}:{n}: column {columns[j]}: {shown} {e}") from None
            rows.append(ids)
            for c in keep:
                kept[c].append(cells[where[c]])
        if columns is None:
            raise BadInput(f"{path}: empty file")
        X = np.array(rows, dtype=np.int64).reshape(len(rows), len(self.single))
        y = np.array(labels, np.float32) if lab is not None else None
        if not self.lists and not self.dense:
            return X, y, kept
        inputs = {"ids": X}
        for k, i in enumerate(self.lists):
            inputs[f"bag_{self.fields[i]['name']}"] = np.array([e[0][k] for e in extra], np.int64).reshape(
                len(rows), self.fields[i]["transform"]["max_length"])
        if self.dense:
            inputs["values"] = np.array([e[1] for e in extra], np.float32).reshape(len(rows), len(self.dense))
            inputs["missing"] = np.array([e[2] for e in extra], np.bool_).reshape(len(rows), len(self.dense))
        return inputs, y, kept


def _is_text(cell: str) -> bool:
    try:
        cell.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ---- the model ----------------------------------------------------------------------------

def load_model(export_dir: str | Path):
    """``ids (n, F) int64 -> probabilities (n,) float32`` over the export's model file."""
    export_dir = Path(export_dir)
    m = _read_json(export_dir / "export.json", EXPORT_FORMAT, EXPORT_VERSION)
    path = export_dir / m["model_file"]
    name_in, name_out = m["input"]["name"], m["output"]["name"]
    names = [d["name"] for d in m.get("inputs") or [m["input"]]]  # several with list/dense fields

    def named(X):
        return X if isinstance(X, dict) else {name_in: X}

    if m["model_format"] == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda X: session.run([name_out], named(X))[0]
    import torch

    model = torch.jit.load(str(path), map_location="cpu")

    def score(X):
        with torch.no_grad():
            return model(*(torch.from_numpy(named(X)[n]) for n in names)).numpy()

    return score


def score(model, X, batch: int = 65536) -> np.ndarray:
    """Probabilities of ids ``(n, F)`` (or of ``{input name: array}``), a batch at a time."""
    rows = len(X["ids"]) if isinstance(X, dict) else len(X)
    out = np.empty(rows, np.float32)
    for s in range(0, rows, batch):
        part = ({k: np.ascontiguousarray(v[s:s + batch]) for k, v in X.items()} if isinstance(X, dict)
                else np.ascontiguousarray(X[s:s + batch]))
        out[s:s + batch] = model(part)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export_dir", type=Path)
    p.add_argument("input", type=Path)
    p.add_argument("--out", type=Path, help="CSV of the --keep columns and the probability")
    p.add_argument("--keep", action="append", default=[], help="raw column to copy (repeatable)")
    p.add_argument("--ids-out", type=Path, help="write the encoded ids as an int64 .npy")
    a = p.parse_args(argv)
    if a.out is None and a.ids_out is None:
        p.error("give --out and/or --ids-out")
    try:
        enc = Encoder.load(a.export_dir / "encoder.json")
        X, labels, kept = enc.encode_file(a.input, a.keep)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.ids_out is not None:  # with list or dense fields: the ids input (the one-id fields)
        np.save(a.ids_out, X["ids"] if isinstance(X, dict) else X)
    if a.out is not None:
        probs = score(load_model(a.export_dir), X)
        with open(a.out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(a.keep) + ["probability"])
            for i, pr in enumerate(probs):
                w.writerow([kept[c][i] for c in a.keep] + [f"{float(pr):.6f}"])
        print(f"wrote {len(probs):,} probabilities to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
