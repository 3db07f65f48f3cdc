"""A/B of FiBiNET's step before and after issue 29, fp32 and bf16, in one process.

    python -m benchmarks.ab_bilinear [--steps 5] [--threads 1]

Four copies of one FiBiNET (4000 rows, 39 fields, 45,000 features, emb 16, the default MLP), each
with its own Adam, step alternately on the same batch: the former forward (the bilinear pairs
gathered pair-major into ``(P, B, D)`` slabs, one bmm, and the embeddings left in fp32 under bf16
autocast) and the shipped one (:meth:`mutualctr.models.layers.Bilinear.by_field`, the embeddings
cast once by :func:`~mutualctr.models.layers.autocast_input`), each in fp32 and in bf16 autocast.
Prints the median step (forward, backward, optimizer) after the first, and the last loss of each
(the two forwards compute the same function, so the losses agree).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from benchmarks.common import header, header_line
from mutualctr.models.config import FiBiNETConfig
from mutualctr.models.fibinet import FiBiNET
from mutualctr.models.layers import field_pairs

F, V, B = 39, 45_000, 4000


def _former_bilinear(layer, emb):
    rows, cols = field_pairs(emb.shape[1])
    fields_first = emb.transpose(0, 1)
    p = fields_first.index_select(0, rows)
    q = fields_first.index_select(0, cols)
    return (torch.bmm(p, layer.weight) * q).transpose(0, 1)


def former_forward(model, ids):
    emb = model.embedding(ids)
    pq = torch.cat([_former_bilinear(model.bilinear, emb), _former_bilinear(model.bilinear_senet, model.senet(emb))], dim=1)
    return model.linear(ids) + model.mlp(pq.flatten(1))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(header_line(header()), flush=True)
    torch.manual_seed(0)
    base = FiBiNET(V, F, FiBiNETConfig(embed_dim=16))
    ids, y = torch.randint(0, V, (B, F)), torch.randint(0, 2, (B,)).float()
    arms = {}
    for precision in ("fp32", "bf16"):
        for name, forward in (("before", former_forward), ("after", FiBiNET.forward)):
            model = copy.deepcopy(base)
            arms[f"{precision} {name}"] = (model, forward, precision == "bf16", torch.optim.Adam(model.parameters(), 1e-3))
    times = {k: [] for k in arms}
    losses = {}
    for r in range(a.steps):
        for k, (model, forward, bf16, opt) in arms.items():
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = forward(model, ids)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if r:
                times[k].append(time.perf_counter() - t)
            losses[k] = loss.item()
    out = {}
    for k, ts in times.items():
        ts.sort()
        out[k] = {"step_s": ts[len(ts) // 2], "loss": losses[k]}
        print(f"{k:12s} median step {out[k]['step_s']:.2f} s   last loss {losses[k]:.6f}")
    return out


if __name__ == "__main__":
    main()
