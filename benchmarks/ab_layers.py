"""A/B of the shipped layers against autograd of their formula: DeepFM's FM term, DCN's cross network.

    python -m benchmarks.ab_layers --store bench_out/store_1000000_0 [--models deepfm,dcn]
        [--steps 40] [--modes fast,bf16]

Per model, two trainers (same initial weights, shipped criteo config) in one process: one with
the formula through autograd patched in (DeepFM: the FM term; DCN: the cross layers one after the
other, concatenated with the MLP's output, one Linear), one as shipped (``models.layers._FMTerm``;
the closed-form ``CrossNet.project``), stepping alternately on the same batches; median step time
after 5 warm-up steps.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import types
from pathlib import Path

import torch

from benchmarks.common import build_trainer, header, header_line, step


def autograd_fm(self, emb):
    return 0.5 * (emb.sum(dim=1).pow(2) - emb.pow(2).sum(dim=1)).sum(dim=1)


def autograd_dcn(self, ids):
    x0 = self.embedding(ids).flatten(1)
    return self.out(torch.cat([self.cross.formula(x0), self.mlp(x0)], dim=1)).squeeze(-1)


LAYERS = {"deepfm": ("fm", autograd_fm), "dcn": (None, autograd_dcn)}  # None: the model's forward


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--models", default="deepfm,dcn")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--modes", default="fast,bf16")
    a = ap.parse_args(argv)
    print(header_line(header()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models.split(","):
            attr, formula = LAYERS[model]
            for mode in a.modes.split(","):
                trs = {k: build_trainer(a.store, [model], Path(tmp) / f"{model}-{k}-{mode}", mode=mode)
                       for k in ("autograd", "fused")}
                model_ = trs["autograd"].members[0].model
                layer = getattr(model_, attr) if attr else model_
                layer.forward = types.MethodType(formula, layer)
                batches = trs["fused"].loader.epoch(0)
                ts = {k: [] for k in trs}
                for i in range(a.steps):
                    ids, labels = next(batches)
                    for k, tr in trs.items():
                        ts[k].append(step(tr, ids, labels, i))
                old, new = (statistics.median(ts[k][5:]) * 1e3 for k in ("autograd", "fused"))
                print(f"{model} {mode}: step with autograd {attr or 'cross'} {old:.1f} ms, shipped {new:.1f} ms -> "
                      f"{old / new:.2f}x ({4000 / old * 1e3:,.0f} -> {4000 / new * 1e3:,.0f} samples/s)", flush=True)


if __name__ == "__main__":
    main()
