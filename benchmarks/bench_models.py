"""Forward+backward samples/s per model, fast vs plain embedding path.

    python -m benchmarks.bench_models [--batch 4000] [--fields 39] [--vocab 1000000]
        [--reps 5] [--models deepfm,dcn] [--json out.json]

One step = forward, BCE + l2_penalty, backward (no optimizer step), on random global ids
(uniform within each field's share of the vocabulary). Paper sizes: batch 4000, emb 16,
MLP [400, 200, 100], embedding L2 on. Modes per model:

* ``plain``: ``F.embedding`` + explicit differentiable batch-local penalty, dense grad;
* ``fast``: custom lookup (index_add_ backward, L2 gradient folded in), dense grad;
* ``fast-sparse``: the same with a coalesced sparse gradient of the touched rows.

Prints the median and the best of ``--reps`` timed steps per mode after one warm-up step;
the modes alternate step by step so that a busy shared machine slows them alike (on a busy
machine the best step is the better estimate of the unloaded speed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.common import header, header_line
from mutualctr.models import MODELS, build_model, l2_penalty, set_plain

MODES = ("plain", "fast", "fast-sparse")


def step(model, ids, labels) -> None:
    model.zero_grad(set_to_none=True)
    loss = F.binary_cross_entropy_with_logits(model(ids), labels) + l2_penalty(model, ids)
    loss.backward()


def mode_models(name: str, num_features: int, num_fields: int, config: dict) -> dict:
    """One model per mode, with the same weights: the gradient layout is fixed at construction."""
    models = {}
    for mode in MODES:
        torch.manual_seed(0)
        models[mode] = build_model(name, num_features, num_fields, config, sparse_grad=mode == "fast-sparse")
        set_plain(models[mode], mode == "plain")
    return models


def time_modes(models: dict, ids, labels, reps: int) -> dict[str, dict[str, float]]:
    """Samples/s per mode; the modes alternate within each repetition, so that load from
    other processes on a shared machine hits all of them alike."""

    def timed(mode: str) -> float:
        start = time.perf_counter()
        step(models[mode], ids, labels)
        return time.perf_counter() - start

    for mode in MODES:  # warm-up
        timed(mode)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(reps):
        for mode in MODES:
            times[mode].append(timed(mode))
    batch = ids.shape[0]
    return {
        mode: {"median": batch / statistics.median(t), "best": batch / min(t)}
        for mode, t in times.items()
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4000)
    ap.add_argument("--fields", type=int, default=39)
    ap.add_argument("--vocab", type=int, default=1_000_000)
    ap.add_argument("--embed-dim", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    per_field = args.vocab // args.fields
    ids = torch.randint(0, per_field, (args.batch, args.fields)) + torch.arange(args.fields) * per_field
    labels = torch.randint(0, 2, (args.batch,)).float()
    config = {"embed_dim": args.embed_dim, "embedding_l2": 1e-5, "mlp": {"hidden": [400, 200, 100]}}
    h = header()
    print(header_line(h))
    print(f"# batch {args.batch}, {args.fields} fields, vocab {per_field * args.fields}, emb {args.embed_dim}, "
          f"MLP [400, 200, 100], median of {args.reps}")
    print("samples/s, median (best) of the timed steps")
    print(f"{'model':10s}" + "".join(f"{m:>24s}" for m in MODES) + f"{'fast/plain':>12s}")
    results = {}
    for name in args.models.split(","):
        models = mode_models(name, per_field * args.fields, args.fields, config)
        row = time_modes(models, ids, labels, args.reps)
        results[name] = row
        cells = "".join(f"{row[m]['median']:>12,.0f} ({row[m]['best']:>9,.0f})" for m in MODES)
        ratio = row["fast"]["median"] / row["plain"]["median"]
        print(f"{name:10s}{cells}{ratio:>11.2f}x", flush=True)
        del models
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": h, "args": vars(args), "samples_per_s": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
