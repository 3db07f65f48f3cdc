"""Golden stores: small, deterministic prepare cases and the sha256 of every file they write.

``test_store_bytes.py`` checks that the stores prepared by today's code hash as recorded in
``store_hashes.json``. Regenerate that file only from a revision whose stores are known to be
right (it was first written from the code before prepare became fit/transform, issue 24)::

    PYTHONPATH=src:. python -m tests.data.store_cases --write tests/data/store_hashes.json

(``PYTHONPATH=<other checkout>/src:.`` hashes another revision's stores with these same inputs.)

What is normalised: the inputs' mtimes are set to a fixed time (``feature_map.json`` records
each input's size, mtime and head/tail hash, and the fingerprint hashes them), and the absolute
paths ``feature_map.json`` holds (the ``--vocab-from`` parent's path and the ``file:line`` of
rejected rows) are replaced by ``<ROOT>``. Nothing else in a store depends on time or place.

The inputs come from a pure-Python generator (no numpy random streams), so they do not change
with a numpy upgrade. Small read blocks make every input several chunks, so the chunked counts,
the ordered thread pool and the split writers are all exercised.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from mutualctr.data import reader as reader_mod
from mutualctr.data.prepare import prepare

MTIME_NS = 1_700_000_000 * 10**9
BLOCK_SIZE = 4096
_M64 = (1 << 64) - 1


class _Rand:
    """splitmix64 in Python ints: the same stream on every platform and version."""

    def __init__(self, seed: int) -> None:
        self.x = seed & _M64

    def next(self) -> int:
        self.x = (self.x + 0x9E3779B97F4A7C15) & _M64
        z = self.x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def skewed(self, n: int) -> int:
        """0..n-1, small values much more often (a few frequent values, many rare ones)."""
        return self.below(self.below(self.below(n) + 1) + 1)

    def chance(self, per_mille: int) -> bool:
        return self.below(1000) < per_mille


def criteo_lines(n: int, seed: int) -> list[list[str]]:
    r = _Rand(seed)
    rows = []
    for _ in range(n):
        row = [str(int(r.chance(300)))]
        for f in range(13):
            v = r.below(52) - 2 if f == 1 else r.skewed(400)
            row.append("" if r.chance(100) else str(v))
        for f in range(26):
            k = r.skewed(6 + 5 * f)
            row.append("" if r.chance(50) else f"{(k * 2654435761 + f) & 0xffffffff:08x}")
        rows.append(row)
    return rows


def avazu_lines(n: int, seed: int) -> list[list[str]]:
    r = _Rand(seed)
    hours = ["14102100", "14102523", "14102609", "14103012", "14102817"]
    rows = []
    for i in range(n):
        row = [str(10**18 + i), str(int(r.chance(200))), hours[r.below(len(hours))]]
        row += [f"v{f}_{r.skewed(4 + 2 * f)}" for f in range(21)]
        rows.append(row)
    return rows


SHOP_SCHEMA = """\
name: shop
format: csv
separator: ";"
header: true
label: clicked
label_map: {-1: 0, 1: 1}
categorical: [user, item]
numeric: [price]
numeric_values: number
hour: [ts]
drop: [row_id]
min_count: 2
min_count_per_column: {item: 3}
"""


def shop_lines(n: int, seed: int) -> list[list[str]]:
    r = _Rand(seed)
    rows = []
    for i in range(n):
        price = "" if r.chance(70) else f"{r.skewed(300)}.{r.below(100):02d}"
        if r.chance(30):
            price = f"-{r.below(3)}.5"
        rows.append([f"r{i}", "1" if r.chance(350) else "-1", f"u{r.skewed(60)}",
                     "" if r.chance(90) else f"i{r.skewed(25)}", price,
                     f"1410{21 + r.below(9):02d}{r.below(24):02d}"])
    return rows


def _write(path: Path, rows: list[list[str]], sep: str = "\t", header: list[str] | None = None) -> Path:
    lines = ([sep.join(header)] if header else []) + [sep.join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return path


def _bad_criteo(n: int, seed: int) -> list[list[str]]:
    rows = criteo_lines(n, seed)
    rows[9] = rows[9][:12]  # too few columns
    rows[99][5] = "x"  # not an integer
    rows[199][0] = "7"  # not a label
    rows[249] = rows[249] + ["extra"]  # too many columns
    rows[300][3] = "1.5"  # not an integer either
    return rows


def _cases(d: Path) -> dict[str, Callable[[], Path]]:
    """Case name -> a function preparing that case's store under ``d`` (returns the store)."""
    a = _write(d / "a.txt", criteo_lines(700, 1))
    b = _write(d / "b.txt", criteo_lines(500, 2))
    bad = _write(d / "bad.txt", _bad_criteo(600, 3))
    child_in = _write(d / "new.txt", criteo_lines(400, 4))
    avazu = _write(d / "avazu.csv", avazu_lines(900, 5), sep=",",
                   header=["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain",
                           "site_category", "app_id", "app_domain", "app_category", "device_id",
                           "device_ip", "device_model", "device_type", "device_conn_type", "C14",
                           "C15", "C16", "C17", "C18", "C19", "C20", "C21"])
    shop = _write(d / "shop.csv", shop_lines(800, 6), sep=";",
                  header=["row_id", "clicked", "user", "item", "price", "ts"])
    (d / "shop.yaml").write_text(SHOP_SCHEMA)

    def run(name: str, dataset, inputs, **kw) -> Callable[[], Path]:
        return lambda: prepare(dataset, inputs, d / name, progress=False, **kw).store.path

    return {
        "criteo_random_mc2": run("criteo_random_mc2", "criteo", [a, b], min_count=2),
        "criteo_random_seed7_mc1": run("criteo_random_seed7_mc1", "criteo", [a], seed=7,
                                       min_count=1),
        "criteo_default_mc": run("criteo_default_mc", "criteo", [a, b]),
        "criteo_sequential_mc3": run("criteo_sequential_mc3", "criteo", [b, a],
                                     split="sequential", min_count=3),
        "criteo_skip_bad_rows": run("criteo_skip_bad_rows", "criteo", [bad], min_count=2,
                                    on_bad_rows="skip"),
        "avazu_default_mc": run("avazu_default_mc", "avazu", [avazu]),
        "shop_schema_numeric": run("shop_schema_numeric", d / "shop.yaml", [shop]),
        "shop_sequential_mc1": run("shop_sequential_mc1", str(d / "shop.yaml"), [shop],
                                   split="sequential", min_count=1),
        # after criteo_random_mc2 (its parent)
        "criteo_vocab_from_child": run("criteo_vocab_from_child", "criteo", [child_in],
                                       split="sequential", vocab_from=d / "criteo_random_mc2"),
        "criteo_vocab_from_child_skip": run("criteo_vocab_from_child_skip", "criteo", [bad],
                                            on_bad_rows="skip", vocab_from=d / "criteo_random_mc2"),
    }


def store_hashes(store: Path, root: Path) -> dict[str, str]:
    """sha256 of every file of ``store`` (relative path -> hex); ``feature_map.json`` with
    ``root`` (as written and resolved) replaced by ``<ROOT>``."""
    out = {}
    for f in sorted(p for p in store.rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.name == "feature_map.json":
            text = data.decode()
            for r in sorted({str(root.resolve()), str(root)}, key=len, reverse=True):
                text = text.replace(r, "<ROOT>")
            data = text.encode()
        out[f.relative_to(store).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def all_hashes(root: Path) -> dict[str, dict[str, str]]:
    """Prepare every case under ``root`` (an empty folder); case -> file -> sha256."""
    old = reader_mod.BLOCK_SIZE
    reader_mod.BLOCK_SIZE = BLOCK_SIZE
    try:
        return {name: store_hashes(make(), root) for name, make in _cases(root).items()}
    finally:
        reader_mod.BLOCK_SIZE = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", type=Path, help="write the hashes (JSON) here; default: print them")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hashes = all_hashes(Path(tmp))
    doc = {"_comment": "sha256 of each file of the stores of tests/data/store_cases.py, written by "
                       "`PYTHONPATH=src:. python -m tests.data.store_cases --write "
                       "tests/data/store_hashes.json` from the prepare code before it became "
                       "fit/transform (issue 24); see that module's docstring",
           "cases": hashes}
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    if args.write:
        args.write.write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
