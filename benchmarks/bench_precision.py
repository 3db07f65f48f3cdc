"""Does bf16 training cost test AUC? fp32 vs ``train.precision: bf16`` over several seeds.

    python -m benchmarks.bench_precision --store bench_out/store_1000000_0 [--models deepfm,dcn,pnn]
        [--seeds 0,1,2] [--epochs 1] [--max-steps N] [--threads 1] [--tag NAME]

For each model and seed, two trainers (the shipped criteo config, the same initial weights and
batches; one fp32, one bf16) train ``--epochs`` epochs through ``Trainer.step``, alternating
step by step; then each is scored on the test split in its own precision. Reported per model:
the test AUC of each seed in both precisions, the mean paired difference (bf16 - fp32) with its
standard deviation, the seed-to-seed standard deviation of the fp32 AUC (the noise floor a
difference must be compared with), and the median step times. Issue 7's quality condition is
|mean difference| <= 0.001. ``--max-steps`` stops each run early (FiBiNET's epoch of the 1M
store is hours on one core); the report says so. Results go to OUT/precision[-TAG].json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import build_trainer, header, header_line, load, median, step, write_report


def run(store: str, model: str, seed: int, epochs: int, work: Path, max_steps: int = 0) -> dict:
    from mutualctr.training.inference import predict_logits, scores

    trainers = {m: build_trainer(store, [model], work / f"{model}-{seed}-{m}", seed=seed, mode=m)
                for m in ("fast", "bf16")}
    times = {m: [] for m in trainers}
    first = trainers["fast"]
    first.loader.seed = seed  # the batch order follows the seed too
    k = 0
    for epoch in range(epochs):
        for ids, labels in first.loader.epoch(epoch):
            if max_steps and k >= max_steps:
                break
            for m, tr in trainers.items():
                times[m].append(step(tr, ids, labels, k))
            k += 1
    X, y = first.test
    Xm = np.ascontiguousarray(X)
    out = {}
    for m, tr in trainers.items():
        logits = predict_logits(tr.members[0].model, Xm, 0, tr.device, tr.train_cfg.precision)
        out[m] = {"test_auc": scores(np.asarray(y), logits)["auc"], "step_ms": median(times[m][3:]) * 1e3}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--models", default="lr,fm,deepfm,dcn,dcnv2,pnn,fibinet")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=0, help="stop each run after this many steps (0: whole epochs)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--tag", default="", help="write OUT/precision-TAG.json")
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    h = header()
    print(header_line(h), flush=True)
    res = {"header": h, "args": vars(a) | {"out": str(a.out)}, "models": {}}
    seeds = [int(s) for s in a.seeds.split(",")]
    with tempfile.TemporaryDirectory() as work:
        for model in a.models.split(","):
            per_seed = {}
            for seed in seeds:
                per_seed[seed] = run(a.store, model, seed, a.epochs, Path(work), a.max_steps)
                r = per_seed[seed]
                print(f"  {model} seed {seed}: fp32 {r['fast']['test_auc']:.5f} bf16 {r['bf16']['test_auc']:.5f} "
                      f"(step {r['fast']['step_ms']:.0f} / {r['bf16']['step_ms']:.0f} ms, load {load():.1f})", flush=True)
            fp32 = [per_seed[s]["fast"]["test_auc"] for s in seeds]
            diff = [per_seed[s]["bf16"]["test_auc"] - per_seed[s]["fast"]["test_auc"] for s in seeds]
            sd = statistics.stdev if len(seeds) > 1 else (lambda xs: float("nan"))
            res["models"][model] = {
                "seeds": {str(s): v for s, v in per_seed.items()},
                "mean_diff": statistics.mean(diff), "sd_diff": sd(diff), "sd_fp32_over_seeds": sd(fp32),
                "step_ms_fp32": median([per_seed[s]["fast"]["step_ms"] for s in seeds]),
                "step_ms_bf16": median([per_seed[s]["bf16"]["step_ms"] for s in seeds]),
            }
    steps = f", at most {a.max_steps} steps" if a.max_steps else ""
    lines = [header_line(h), f"# store {a.store}; {a.epochs} epoch(s) per run{steps}; seeds {a.seeds}",
             f"{'model':7s} {'fp32 AUC (mean)':>16s} {'bf16 - fp32':>18s} {'fp32 sd (seeds)':>16s} "
             f"{'step fp32':>10s} {'step bf16':>10s}"]
    for model, r in res["models"].items():
        mean_fp32 = statistics.mean(v["fast"]["test_auc"] for v in r["seeds"].values())
        lines.append(f"{model:7s} {mean_fp32:>16.5f} {r['mean_diff']:>+10.5f} +- {r['sd_diff']:.5f} "
                     f"{r['sd_fp32_over_seeds']:>16.5f} {r['step_ms_fp32']:>8.1f}ms {r['step_ms_bf16']:>8.1f}ms")
    write_report(a.out, f"precision-{a.tag}" if a.tag else "precision", res, lines)
    return res


if __name__ == "__main__":
    main()
