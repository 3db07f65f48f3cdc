"""A small table with every kind of issue 25 (hashed, multi-valued, sequence, dense) and a
pure-Python reading of it: the reference the store's arrays are compared with."""

from __future__ import annotations

import math
import random
from pathlib import Path

import xxhash

SCHEMA = """\
label: y
categorical: [item]
hashed: {user: {buckets: 13}}
multi_valued: {genres: {max_length: 2, pooling: sum}}
sequence: {hist: {max_length: 3, vocab_from: item}}
dense: {price: {transform: standardize}, clicks: {transform: log1p}, score: {}}
"""
COLUMNS = ["y", "user", "item", "genres", "hist", "price", "clicks", "score"]


def rows(n: int = 60, seed: int = 3) -> list[list[str]]:
    r = random.Random(seed)
    out = []
    for i in range(n):
        genres = "|".join(r.sample(["Action", "Comedy", "Drama", "Noir", "War"], r.randint(0, 4)))
        hist = "|".join(str(r.randint(1, 9)) for _ in range(r.randint(0, 5)))
        price = "" if i % 7 == 3 else f"{r.uniform(-5, 20):.3f}"
        clicks = "" if i % 5 == 1 else str(r.randint(0, 500))
        score = "" if i % 11 == 4 else f"{r.gauss(0, 1):.4f}"
        out.append([str(i % 3 % 2), "" if i % 13 == 6 else f"u{r.randint(0, 30)}", str(r.randint(1, 9)),
                    genres, hist, price, clicks, score])
    return out


def write(tmp: Path, table: list[list[str]], name: str = "d.csv") -> tuple[Path, Path]:
    (tmp / "s.yaml").write_text(SCHEMA)
    (tmp / name).write_text(",".join(COLUMNS) + "\n" + "".join(",".join(r) + "\n" for r in table))
    return tmp / "s.yaml", tmp / name


def items(cell: str) -> list[str]:
    return cell.split("|") if cell else []


def vocab(cells: list[str], listed: bool) -> list[str]:
    """The kept values (min_count 1) of the train cells, sorted: value i has local id i + 2."""
    seen = set()
    for c in cells:
        seen.update(items(c) if listed else ([c] if c else []))
    return sorted(seen)


def hashed_id(value: str, buckets: int, offset: int) -> int:
    """The documented formula: offset + 2 + xxh64(utf-8 text, seed 0) mod buckets."""
    return offset + 2 + xxhash.xxh64_intdigest(value.encode("utf-8"), seed=0) % buckets


def bag(ids: list[int], length: int, keep_last: bool, missing: int) -> list[int]:
    """A padded row: the first (or last) ``length`` ids, left-aligned, pad 0; empty -> [missing]."""
    if not ids:
        ids = [missing]
    ids = ids[-length:] if keep_last else ids[:length]
    return ids + [0] * (length - len(ids))


def dense(cells: list[str], transform: str, train: int) -> tuple[list[float], list[bool]]:
    """Values (0 where missing) and missing flags, the statistics from the first ``train`` rows."""
    missing = [c == "" for c in cells]
    v = [0.0 if m else float(c) for c, m in zip(cells, missing)]
    if transform == "log1p":
        v = [0.0 if m else math.log1p(x) for x, m in zip(v, missing)]
    if transform == "standardize":
        present = [x for x, m in zip(v[:train], missing[:train]) if not m]
        mean = sum(present) / len(present)
        std = math.sqrt(sum((x - mean) ** 2 for x in present) / len(present))
        v = [0.0 if m else (x - mean) / std for x, m in zip(v, missing)]
    return v, missing
