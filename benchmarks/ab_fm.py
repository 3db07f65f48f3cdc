"""A/B of DeepFM's FM term: the fused backward (models.layers._FMTerm) vs autograd's.

    python -m benchmarks.ab_fm --store bench_out/store_1000000_0 [--steps 40] [--modes fast,bf16]

Two DeepFM trainers (same initial weights, shipped criteo config) in one process, one with the
FM term's former forward (``0.5 * ((sum_f v)^2 - sum_f v^2)`` through autograd) patched in,
stepping alternately on the same batches; median step time after 5 warm-up steps.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import build_trainer, header, header_line, step


def autograd_fm(emb):
    return 0.5 * (emb.sum(dim=1).pow(2) - emb.pow(2).sum(dim=1)).sum(dim=1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--modes", default="fast,bf16")
    a = ap.parse_args(argv)
    print(header_line(header()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for mode in a.modes.split(","):
            trs = {k: build_trainer(a.store, ["deepfm"], Path(tmp) / f"{k}-{mode}", mode=mode)
                   for k in ("autograd", "fused")}
            trs["autograd"].members[0].model.fm.forward = autograd_fm
            batches = trs["fused"].loader.epoch(0)
            ts = {k: [] for k in trs}
            for i in range(a.steps):
                ids, labels = next(batches)
                for k, tr in trs.items():
                    ts[k].append(step(tr, ids, labels, i))
            old, new = (statistics.median(ts[k][5:]) * 1e3 for k in ("autograd", "fused"))
            print(f"{mode}: DeepFM step autograd FM {old:.1f} ms, fused FM {new:.1f} ms -> {old / new:.2f}x "
                  f"({4000 / old * 1e3:,.0f} -> {4000 / new * 1e3:,.0f} samples/s)", flush=True)


if __name__ == "__main__":
    main()
