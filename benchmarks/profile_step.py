"""Where a training step's time goes: torch.profiler over ``Trainer.step`` on a real store.

    python -m benchmarks.profile_step --store bench_out/suite/store [--model deepfm] [--members 1]
        [--mode fast|reference|bf16|plain] [--steps 8] [--rows 30]

Builds the shipped config of the model (src/mutualctr/configs/criteo/<model>.yaml: batch 4000, emb 16,
MLP [400, 200, 100], row-wise Adam), a Trainer on the store's train split, runs warm-up steps
and profiles ``--steps`` steps. Prints the operators by self CPU time and the share of the
forward, the backward and the optimizers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from benchmarks.common import MODES, activate, build_trainer, header, header_line


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--mode", default="fast", choices=MODES)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rows", type=int, default=30)
    a = ap.parse_args(argv)
    h = header()  # the load average at start
    from torch.profiler import ProfilerActivity, profile, record_function

    with tempfile.TemporaryDirectory() as out:
        tr = build_trainer(a.store, [a.model] * a.members, out, mode=a.mode)
        it = tr.loader.epoch(0)
        batches = [next(it) for _ in range(a.warmup + a.steps)]
        for ids, labels in batches[: a.warmup]:
            activate(tr)
            tr.step(ids, labels)
        times = []
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for ids, labels in batches[a.warmup:]:
                activate(tr)
                t = time.perf_counter()
                with record_function("step"):
                    tr.step(ids, labels)
                times.append(time.perf_counter() - t)
        times.sort()
        ka = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in ka)
        share = {}
        for e in ka:
            k = e.key
            if k.startswith("Optimizer.step"):
                share["optimizers"] = share.get("optimizers", 0) + e.cpu_time_total
            elif k.startswith("autograd::engine::evaluate_function"):
                share["backward"] = share.get("backward", 0) + e.self_cpu_time_total
        print(header_line(h))
        print(f"# {a.model} x{a.members} mode {a.mode}, load {os.getloadavg()[0]:.1f}, threads "
              f"{torch.get_num_threads()}, median step {times[len(times) // 2] * 1e3:.1f} ms (under the profiler)")
        print(ka.table(sort_by="self_cpu_time_total", row_limit=a.rows))
        print(f"optimizer steps: {share.get('optimizers', 0) / total:.0%} of the profiled CPU time")


if __name__ == "__main__":
    main()
