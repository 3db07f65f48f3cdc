"""Small raw files for the data tests (written into tmp_path; never real data)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
CRITEO_REAL = SHARED_DATA / "criteo" / "criteo_random137k.txt.gz"
AVAZU_DIR = SHARED_DATA / "avazu"


def criteo_rows(n: int, seed: int = 0) -> list[list[str]]:
    """n Criteo-layout rows: label, 13 ints (some empty), 26 hex tokens (some empty)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row = [str(int(rng.random() < 0.3))]
        for f in range(13):
            v = int(rng.integers(-2, 50)) if f == 1 else int(rng.geometric(0.05))
            row.append("" if rng.random() < 0.1 else str(v))
        for f in range(26):
            k = int(rng.zipf(1.5)) % (5 + 3 * f)
            row.append("" if rng.random() < 0.05 else f"{(k * 2654435761 + f) & 0xffffffff:08x}")
        rows.append(row)
    return rows


def write_tsv(path: Path, rows: list[list[str]], sep: str = "\t", header: list[str] | None = None,
              gz: bool = False) -> Path:
    lines = ([sep.join(header)] if header else []) + [sep.join(r) for r in rows]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def avazu_rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    hours = ["14102100", "14102523", "14102609", "14103012"]  # Tue 00h, Sat 23h, Sun 09h, Thu 12h
    rows = []
    for i in range(n):
        row = [str(10**18 + i), str(int(rng.random() < 0.2)), hours[i % 4]]
        row += [f"v{f}_{int(rng.integers(0, 4 + f))}" for f in range(21)]
        rows.append(row)
    return rows
