"""Side by side: mutualctr vs FuxiCTR 2.3.10 and DeepCTR-Torch 0.3.0, DeepFM, DCN, PNN and FiBiNET, same data.

    bash benchmarks/peers/setup.sh                 # once: bench_out/peers-venv
    python -m benchmarks.peers.run --store bench_out/store_200000_0 [--rounds 3] [--steps 5]
        [--models deepfm,dcn,pnn,fibinet] [--peers-python bench_out/peers-venv/bin/python] [--threads 1]

The store is one prepared by ``python -m benchmarks.run`` (or ``mutualctr prepare``). Each peer
runs in its own process in its own venv (benchmarks/peers/worker.py) on the same encoded rows
(batch 4000, emb 16, MLP [400, 200, 100], embedding L2 1e-5 in each system's own form, Adam
lr 1e-3); mutualctr runs in this process through ``Trainer.step`` (fast path). After 2 warm-up
steps each, the systems alternate in blocks of ``--steps`` steps for ``--rounds`` rounds, so
load from other jobs hits all of them alike. Reported: train samples/s (batch / median step
time), eval samples/s over the test split (fastest of --eval-passes passes at --eval-batch rows per forward, the same for all, after the timed steps), the ratios
mutualctr / peer, and the load average. Peers' preprocessing is not run here (their models are
fed the same encoded ids). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import ROOT, build_trainer, eval_precision, header, header_line, load, median, step

PEERS = ("fuxictr", "deepctr")


class Peer:
    def __init__(self, python: str, system: str, model: str, store: str, threads: int = 0):
        self.name = system
        self.p = subprocess.Popen([python, str(ROOT / "benchmarks" / "peers" / "worker.py")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.call({"cmd": "init", "store": store, "system": system, "model": model, "batch": 4000, "seed": 0,
                   "threads": threads})

    def call(self, msg: dict) -> dict:
        self.p.stdin.write(json.dumps(msg) + "\n")
        self.p.stdin.flush()
        while True:  # skip what the peers print themselves (DeepCTR-Torch's version notice)
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name}: worker exited")
            if line.startswith("{"):
                break
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"{self.name}: {out['error']}\n{out.get('trace', '')}")
        return out

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=60)


def ours_eval(tr, batch: int, passes: int, mode: str) -> tuple[float, float]:
    from mutualctr.training.inference import predict_logits, scores

    X, y = tr.test
    Xm = np.ascontiguousarray(X)
    dts = []
    for _ in range(passes):
        t = time.perf_counter()
        logits = predict_logits(tr.members[0].model, Xm, batch, tr.device, eval_precision(tr, mode))
        dts.append(time.perf_counter() - t)
    return len(y) / min(dts), scores(np.asarray(y), logits)["auc"]


def arguments(doc: str, rounds: int) -> argparse.ArgumentParser:
    """The options both side-by-side commands (this one and ``benchmarks.peers.jobs``) take."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    ap.add_argument("--store", required=True)
    ap.add_argument("--models", default="deepfm,dcn")
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--mode", default="fast", choices=("default", "fast", "bf16", "compile", "bf16-compile"),
                    help="mutualctr's settings: default (the shipped config: precision auto, evaluation "
                         "fp32), fast (fp32), bf16 (train.precision bf16), either with train.compile; the "
                         "peers run fp32")
    ap.add_argument("--peers-python", default=str(ROOT / "bench_out" / "peers-venv" / "bin" / "python"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out")
    return ap


def main(argv=None) -> dict:
    ap = arguments(__doc__, rounds=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--eval-batch", type=int, default=2048,
                    help="rows per evaluation forward, the same for every system (2048: mutualctr's CPU default)")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds of rest before each block of steps")
    ap.add_argument("--eval-passes", type=int, default=2, help="evaluation passes per system; the fastest counts")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads of every system (0: torch's default, all cores)")
    a = ap.parse_args(argv)
    if not Path(a.peers_python).exists():
        raise SystemExit(f"{a.peers_python}: no peers venv; run bash benchmarks/peers/setup.sh first")
    if a.threads:
        torch.set_num_threads(a.threads)
    h = header() | {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    print(header_line(h) + f"; torch CPU capability {h['cpu_capability']}", flush=True)
    res = {"header": h, "args": vars(a) | {"out": str(a.out)}, "models": {}}
    with tempfile.TemporaryDirectory() as work:
        for model in a.models.split(","):
            peers = [Peer(a.peers_python, s, model, a.store, a.threads) for s in PEERS]
            tr = build_trainer(a.store, [model], Path(work) / model, mode=a.mode)
            batches = tr.loader.epoch(0)
            k = 0

            def ours(n):
                nonlocal k
                ts = []
                for _ in range(n):
                    ids, labels = next(batches)
                    ts.append(step(tr, ids, labels, k))
                    k += 1
                return ts

            ours(2)
            for p in peers:
                p.call({"cmd": "steps", "n": 2})
            times = {"mutualctr": [], **{p.name: [] for p in peers}}
            for r in range(a.rounds):
                # Each block starts after a pause: the previous process's OpenMP threads spin for a
                # while after its last step and would steal the cores from whoever runs next.
                time.sleep(a.pause)
                times["mutualctr"] += ours(a.steps)
                for p in peers:
                    time.sleep(a.pause)
                    times[p.name] += p.call({"cmd": "steps", "n": a.steps})["times"]
                print(f"  {model} round {r + 1}/{a.rounds} (load {load():.1f})", flush=True)
            row = {}
            ev, auc = ours_eval(tr, a.eval_batch, a.eval_passes, a.mode)
            row["mutualctr"] = {"train_samples_per_s": round(4000 / median(times["mutualctr"])), "eval_samples_per_s": round(ev)}
            for p in peers:
                e = p.call({"cmd": "eval", "batch": a.eval_batch, "passes": a.eval_passes})
                row[p.name] = {"train_samples_per_s": round(4000 / median(times[p.name])),
                               "eval_samples_per_s": round(e["rows"] / e["seconds"])}
                p.close()
            for p in PEERS:
                row[f"train_ratio_vs_{p}"] = round(row["mutualctr"]["train_samples_per_s"] / row[p]["train_samples_per_s"], 2)
                row[f"eval_ratio_vs_{p}"] = round(row["mutualctr"]["eval_samples_per_s"] / row[p]["eval_samples_per_s"], 2)
            row["mutualctr"]["test_auc"] = round(auc, 5)
            row["load_end"] = load()
            row["timed_steps"] = a.rounds * a.steps
            res["models"][model] = row
            del tr
    lines = [header_line(h) + f"; torch CPU capability {h['cpu_capability']}", f"# store {a.store}; {a.rounds} rounds x {a.steps} steps per system, alternating; medians; "
             f"mutualctr path {a.mode} (peers fp32); eval {a.eval_batch} rows per forward, fastest of {a.eval_passes} passes",
             f"{'model':7s} {'system':10s} {'train/s':>9s} {'eval/s':>9s} {'ours/peer train':>16s} {'ours/peer eval':>15s}"]
    for model, row in res["models"].items():
        for s in ("mutualctr", *PEERS):
            rt = "" if s == "mutualctr" else f"{row[f'train_ratio_vs_{s}']:.2f}x"
            re_ = "" if s == "mutualctr" else f"{row[f'eval_ratio_vs_{s}']:.2f}x"
            lines.append(f"{model:7s} {s:10s} {row[s]['train_samples_per_s']:>9,} {row[s]['eval_samples_per_s']:>9,} {rt:>16s} {re_:>15s}")
        lines.append(f"{'':7s} (load average {row['load_end']:.1f} at the end)")
    text = "\n".join(lines)
    print("\n" + text)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = "peers" if a.mode == "fast" else f"peers-{a.mode}"
    (a.out / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    (a.out / f"{stem}.txt").write_text(text + "\n")
    return res


if __name__ == "__main__":
    main()
