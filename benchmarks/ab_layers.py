"""A/B of the shipped layers against autograd of their formula (FM, cross, inner products, bilinear).

    python -m benchmarks.ab_layers --store bench_out/store_1000000_0 [--models deepfm,dcn,pnn,fibinet]
        [--steps 40] [--modes fast,default]

Per model, two trainers (same initial weights, shipped criteo config) in one process, stepping
alternately on the same batches; median step time after 5 warm-up steps. One runs the formula
through autograd (DeepFM: the FM term; DCN: the cross layers one after the other, concatenated
with the MLP's output, one Linear; PNN: the Gram matrix's pairs by index_select, the embeddings
cast by each consumer: PNN as it was before issue 29's second sitting; FiBiNET: the field-by-field
bilinear products through autograd), the other as shipped (``models.layers._FMTerm``; the
closed-form ``CrossNet.project``; ``_PairDots`` with the embeddings cast once; ``_FieldPairs``).
Fewer warm-up steps when ``--steps`` is small (FiBiNET: ``--steps 10``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import types
from pathlib import Path

import torch

from benchmarks.common import build_trainer, header, header_line, step
from mutualctr.models.layers import _field_pairs, field_pairs


def autograd_fm(self, emb):
    return 0.5 * (emb.sum(dim=1).pow(2) - emb.pow(2).sum(dim=1)).sum(dim=1)


def autograd_dcn(self, ids):
    x0 = self.embedding(ids).flatten(1)
    return self.out(torch.cat([self.cross.formula(x0), self.mlp(x0)], dim=1)).squeeze(-1)


def autograd_pnn(self, ids):  # the former IPNN: Gram matrix, index_select of the pairs, autograd
    emb = self.embedding(ids)
    rows, cols = field_pairs(emb.shape[1])
    pairs = torch.bmm(emb, emb.transpose(1, 2)).flatten(1).index_select(1, rows * emb.shape[1] + cols)
    return self.mlp(torch.cat([emb.flatten(1), pairs], dim=1))


def autograd_bilinear(self, emb):  # Bilinear.by_field's ops through autograd
    return _field_pairs(emb, self.weight, self.bilinear_type)


# model: (layers, method, formula): each layer's method is patched; no layers: the model's forward
LAYERS = {
    "deepfm": (["fm"], "forward", autograd_fm),
    "dcn": ([], "forward", autograd_dcn),
    "pnn": ([], "forward", autograd_pnn),
    "fibinet": (["bilinear", "bilinear_senet"], "by_field", autograd_bilinear),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--models", default="deepfm,dcn,pnn")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--modes", default="fast,default")
    a = ap.parse_args(argv)
    print(header_line(header()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models.split(","):
            attrs, method, formula = LAYERS[model]
            for mode in a.modes.split(","):
                trs = {k: build_trainer(a.store, [model], Path(tmp) / f"{model}-{k}-{mode}", mode=mode)
                       for k in ("autograd", "fused")}
                model_ = trs["autograd"].members[0].model
                for layer in [getattr(model_, attr) for attr in attrs] or [model_]:
                    setattr(layer, method, types.MethodType(formula, layer))
                batches = trs["fused"].loader.epoch(0)
                ts = {k: [] for k in trs}
                for i in range(a.steps):
                    ids, labels = next(batches)
                    for k, tr in trs.items():
                        ts[k].append(step(tr, ids, labels, i))
                old, new = (statistics.median(ts[k][min(5, a.steps // 3):]) * 1e3 for k in ("autograd", "fused"))
                what = "/".join(attrs) or "formula"
                print(f"{model} {mode}: step with autograd {what} {old:.1f} ms, shipped {new:.1f} ms -> "
                      f"{old / new:.2f}x ({4000 / old * 1e3:,.0f} -> {4000 / new * 1e3:,.0f} samples/s)", flush=True)


if __name__ == "__main__":
    main()
