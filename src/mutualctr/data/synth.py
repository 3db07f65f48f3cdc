"""Synthetic Criteo-format data from a hidden ground-truth model (the embedded default data).

The generator is a logistic model over the same features a CTR model sees:
- 26 categorical fields, cardinalities log-spaced from 10 to 1e5, values Zipf-distributed
  (a few values are frequent, most rare), some fields often missing; each value is written
  as an 8-hex-digit hash like Criteo's;
- 13 heavy-tailed (log-normal) integer counts with missing values, one allowing small
  negatives like Criteo's I2; their effect is a function of the ``floor(ln(v)^2)`` bucket;
- first-order weights per value, plus pairwise interactions between 12 field pairs
  (dot products of hidden 4-d value vectors, i.e. exactly what an FM can learn);
- a bias calibrated for a click rate of about 0.25.

``p = sigmoid(logit)`` is the best any model can do, so the AUC of ``p`` on the generated
labels (the ceiling) is recorded beside the file in ``FILE.meta.json`` and returned.
Everything is vectorised numpy/pyarrow and deterministic given ``seed``.

Memory is bounded, not proportional to ``rows``: rows are sampled and written ``CHUNK`` at a
time (at most two chunks ahead), and nothing is kept per row. The click rate and the ceiling
logloss are running sums over every row. The ceiling AUC is exact (``mutualctr.metrics.auc``)
on a bounded systematic sample: every ``stride``-th row, ``stride = ceil(rows / CEILING_ROWS)``,
so all rows when ``rows <= CEILING_ROWS`` and at most ``CEILING_ROWS`` rows spread over the whole
file otherwise (rows are i.i.d., so the sample's AUC differs from the all-rows AUC only by
sampling noise, ~3e-4 at 1M rows). ``ceiling_auc_rows`` in the meta file says how many rows it used.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mutualctr import atomic, outdir
from mutualctr.config import ConfigError
from mutualctr.data._threads import background
from mutualctr.metrics import auc, logloss
from mutualctr.progress import Bar

N_INT, N_CAT = 13, 26
CHUNK = 100_000
CEILING_ROWS = 1_000_000  # most rows the ceiling AUC is computed on (bounds memory)
K = 4  # hidden interaction dimension
N_PAIRS = 12
CLICK_RATE = 0.25
VERSION = 1
INT_BUCKETS = 256
FIRST_ORDER_SD = 1.2  # std of the first-order logit
INTERACTION_SD = 0.7  # std of the pairwise-interaction logit


@dataclass
class SynthResult:
    path: Path
    rows: int
    ceiling_auc: float
    click_rate: float
    seconds: float
    meta_path: Path


class _Model:
    """The hidden ground truth, a pure function of the seed."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 7919])
        self.cards = rng.permutation(np.round(np.logspace(1, 5, N_CAT)).astype(np.int64))
        self.zipf = rng.uniform(1.05, 1.4, N_CAT)
        self.cat_missing = rng.choice([0.0, 0.0, 0.0, 0.02, 0.1, 0.3, 0.45], N_CAT)
        # first-order strength per field: a few strong, most moderate
        sd = rng.choice([0.25, 0.4, 0.6, 0.9], N_CAT, p=[0.3, 0.3, 0.25, 0.15])
        self.w_cat = [rng.normal(0.0, s, c + 1) for s, c in zip(sd, self.cards)]  # [c] = missing
        self.tokens = []
        for f, c in enumerate(self.cards):
            h = rng.choice(2**32, size=c + 64, replace=False)[: c].astype(np.uint32)
            self.tokens.append(pa.array([f"{v:08x}" for v in h.tolist()], pa.string()))
        self.int_mu = rng.uniform(0.5, 4.0, N_INT)
        self.int_sigma = rng.uniform(0.8, 2.0, N_INT)
        self.int_missing = rng.choice([0.0, 0.05, 0.2, 0.45], N_INT)
        sd_i = rng.choice([0.05, 0.1, 0.2], N_INT)
        # smooth effect of the bucket: a random walk over bucket ids (+3 for negatives)
        self.w_int = [np.cumsum(rng.normal(0.0, s, INT_BUCKETS)) * 0.5 for s in sd_i]
        for w in self.w_int:
            w -= w[:40].mean()
        self.w_int_missing = rng.normal(0.0, 0.3, N_INT)
        # pairwise interactions between categorical fields (hidden K-d vectors)
        pairs = set()
        while len(pairs) < N_PAIRS:
            a, b = sorted(rng.choice(N_CAT, 2, replace=False).tolist())
            pairs.add((a, b))
        self.pairs = sorted(pairs)
        inv = sorted({f for p in self.pairs for f in p})
        self.vec = {f: rng.normal(0.0, 0.55, (self.cards[f] + 1, K)) for f in inv}
        self.bias, self.s1, self.s2 = 0.0, 1.0, 1.0

    def sample(self, rng: np.random.Generator, n: int):
        cats = np.empty((n, N_CAT), np.int64)  # value rank; card = missing
        for f in range(N_CAT):
            a, c = self.zipf[f], self.cards[f]
            u = rng.random(n)
            x = ((float(c) ** (1 - a) - 1.0) * u + 1.0) ** (1.0 / (1 - a))
            r = np.minimum(np.floor(x).astype(np.int64) - 1, c - 1)
            r[rng.random(n) < self.cat_missing[f]] = c
            cats[:, f] = r
        ints = np.empty((n, N_INT), np.float64)  # nan = missing
        for f in range(N_INT):
            v = np.floor(np.exp(rng.normal(self.int_mu[f], self.int_sigma[f], n))) - 1
            if f == 1:  # Criteo's I2 has small negatives
                v -= (rng.random(n) < 0.1) * rng.integers(1, 4, n)
            v[rng.random(n) < self.int_missing[f]] = np.nan
            ints[:, f] = v
        return cats, ints

    def logit(self, cats: np.ndarray, ints: np.ndarray) -> np.ndarray:
        z1, z2 = self._parts(cats, ints)
        return self.bias + self.s1 * z1 + self.s2 * z2

    def _parts(self, cats: np.ndarray, ints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.zeros(len(cats))
        for f in range(N_CAT):
            z += self.w_cat[f][cats[:, f]]
        for f in range(N_INT):
            v = ints[:, f]
            miss = np.isnan(v)
            vv = np.where(miss, 0.0, v)
            b = np.where(vv > 2, np.floor(np.log(np.maximum(vv, 1.0)) ** 2), vv).astype(np.int64)
            z += np.where(miss, self.w_int_missing[f], self.w_int[f][np.clip(b + 3, 0, INT_BUCKETS - 1)])
        z2 = np.zeros(len(cats))
        for a, b in self.pairs:
            z2 += np.einsum("ij,ij->i", self.vec[a][cats[:, a]], self.vec[b][cats[:, b]])
        return z, z2

    def calibrate(self, seed: int) -> None:
        cats, ints = self.sample(np.random.default_rng([seed, 104729]), 100_000)
        z1, z2 = self._parts(cats, ints)
        # fix the spread of the two parts: first order (what LR can learn) and interactions
        self.s1, self.s2 = FIRST_ORDER_SD / z1.std(), INTERACTION_SD / z2.std()
        z = self.s1 * z1 + self.s2 * z2
        lo, hi = -10.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if (1 / (1 + np.exp(-(z + mid)))).mean() > CLICK_RATE:
                hi = mid
            else:
                lo = mid
        self.bias = (lo + hi) / 2

    def table(self, cats: np.ndarray, ints: np.ndarray, y: np.ndarray) -> pa.Table:
        cols = {"label": pa.array(y.astype(np.int8)).cast(pa.string())}
        for f in range(N_INT):
            v = ints[:, f]
            cols[f"I{f + 1}"] = pc.cast(pa.array(np.nan_to_num(v).astype(np.int64),
                                                 mask=np.isnan(v)), pa.string())
        for f in range(N_CAT):
            c = cats[:, f]
            idx = pa.array(np.minimum(c, self.cards[f] - 1), mask=c == self.cards[f])
            cols[f"C{f + 1}"] = self.tokens[f].take(idx)
        return pa.table(cols)


class _CeilingSample:
    """Every ``stride``-th row's (probability, label), ``stride = ceil(rows / cap)``: a buffer of
    at most ``cap`` rows whatever ``rows`` is, plus running sums over all rows for the click rate
    and the logloss."""

    def __init__(self, rows: int, cap: int) -> None:
        self.rows, self.stride = rows, -(-rows // cap)
        size = -(-rows // self.stride)  # indices 0, stride, 2 stride, ... < rows
        self.probs = np.empty(size, np.float64)
        self.labels = np.empty(size, bool)
        self.positives = 0
        self.loss_sum = 0.0

    def add(self, start: int, p: np.ndarray, y: np.ndarray) -> None:
        """Rows ``start .. start + len(p) - 1``, in any order of chunks."""
        first = -(-start // self.stride) * self.stride  # first sampled index >= start
        keep = slice(first - start, len(p), self.stride)
        at = slice(first // self.stride, first // self.stride + len(p[keep]))
        self.probs[at], self.labels[at] = p[keep], y[keep]
        self.positives += int(y.sum())
        self.loss_sum += logloss(y, p) * len(p)

    def result(self) -> tuple[float, float, float]:
        """(ceiling AUC on the sample, click rate and ceiling logloss over all rows)."""
        return (auc(self.labels, self.probs), self.positives / self.rows,
                self.loss_sum / self.rows)


def generate(rows: int, out: Path, seed: int = 0, progress: bool = True) -> SynthResult:
    """Write ``rows`` Criteo-format TSV rows to ``out`` (gzip if it ends with .gz)."""
    if rows < 1:
        raise ConfigError(f"rows: must be >= 1, got {rows}")
    t0 = time.perf_counter()
    outdir.claim_file(out, "synth")  # never over a file of the user's, a store's, a run's
    out = Path(out)
    model = _Model(seed)
    model.calibrate(seed)
    acc = _CeilingSample(rows, CEILING_ROWS)
    opts = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none",
                              batch_size=CHUNK)
    # rich's default columns: description, bar, percentage, time remaining
    with Bar("[progress.description]{task.description}", "<bar>",
             "[progress.percentage]{task.percentage:>3.0f}%", "<remaining>", transient=True,
             quiet=not progress) as bar:
        task = bar.add("synth", rows)
        with atomic.atomic_path(out) as tmp:
            tmp.chmod(0o644)
            # gzip level 1: ~3x faster than the default and only ~10% larger
            opener = (lambda: gzip.open(tmp, "wb", compresslevel=1)) if out.name.endswith(".gz") \
                else (lambda: pa.output_stream(str(tmp)))
            with opener() as sink:
                writer = None

                def chunks():
                    for i, start in enumerate(range(0, rows, CHUNK)):
                        n = min(CHUNK, rows - start)
                        rng = np.random.default_rng([seed, i, 15485863])
                        cats, ints = model.sample(rng, n)
                        p = 1.0 / (1.0 + np.exp(-model.logit(cats, ints)))
                        y = rng.random(n) < p
                        acc.add(start, p, y)
                        yield n, model.table(cats, ints, y)

                # rows are sampled in a background thread while this one writes
                for n, t in background(chunks(), 2, "mutualctr-synth"):
                    if writer is None:
                        writer = pacsv.CSVWriter(sink, t.schema, write_options=opts)
                    writer.write_table(t)
                    bar.advance(task, n)
                writer.close()
    ceiling, rate, ceiling_logloss = acc.result()
    seconds = time.perf_counter() - t0
    meta = out.with_name(out.name + ".meta.json")
    atomic.write_json(meta, {"format": "criteo", "generator": "mutualctr.data.synth",
                             "version": VERSION, "rows": rows, "seed": seed,
                             "click_rate": rate, "ceiling_auc": ceiling,
                             "ceiling_logloss": ceiling_logloss,
                             "ceiling_auc_rows": len(acc.probs)})
    return SynthResult(out, rows, ceiling, rate, seconds, meta)
