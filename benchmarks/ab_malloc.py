"""A/B of the allocator setting the Trainer applies (``training.device.keep_freed_memory``).

    python -m benchmarks.ab_malloc --store bench_out/store_1000000_0 [--models deepfm,dcn,pnn]
        [--rounds 4] [--steps 25] [--mode default]

glibc's settings are process-wide and cannot be undone, so each round runs two fresh
processes one after the other, ``MUTUALCTR_SYSTEM_MALLOC=1`` (glibc's defaults) and without it
(the default), each building a Trainer per model (shipped criteo config) and timing
``--steps`` steps on the same batches. Prints per round and model the median step, the page
faults and the kernel's CPU time a step (less noisy than the wall time between processes), and
the process's peak RSS so far, then the median over rounds of the per-round ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

from benchmarks.common import build_trainer, header, header_line, step


def child(store: str, models: list[str], steps: int, mode: str) -> dict:
    """Per model, in this process: the median step (ms), minor page faults and system CPU time
    (ms, the kernel's share: page faults are spent there) a step, and the process's peak RSS
    (MiB) after the model."""
    out = {}
    for model in models:
        with tempfile.TemporaryDirectory() as tmp:
            tr = build_trainer(store, [model], tmp, mode=mode)
            batches = tr.loader.epoch(0)
            times, faults, system = [], [], []
            for i in range(steps):
                ids, labels = next(batches)
                before = resource.getrusage(resource.RUSAGE_SELF)
                times.append(step(tr, ids, labels, i))
                after = resource.getrusage(resource.RUSAGE_SELF)
                faults.append(after.ru_minflt - before.ru_minflt)
                system.append(after.ru_stime - before.ru_stime)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            out[model] = (statistics.median(times[5:]) * 1e3, statistics.median(faults[5:]),
                          statistics.median(system[5:]) * 1e3, peak)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--models", default="deepfm,dcn,pnn")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--mode", default="default")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    models = a.models.split(",")
    if a.child:
        print(json.dumps(child(a.store, models, a.steps, a.mode)))
        return
    print(header_line(header()), flush=True)
    cmd = [sys.executable, "-m", "benchmarks.ab_malloc", "--child", "--store", a.store, "--models", a.models,
           "--steps", str(a.steps), "--mode", a.mode]
    ratios = {m: [] for m in models}
    for r in range(a.rounds):
        res = {}
        for name, system in (("glibc defaults", "1"), ("keep_freed_memory", "")):
            env = os.environ | {"MUTUALCTR_SYSTEM_MALLOC": system}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            res[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"round {r + 1} {name:17s} " + "  ".join(
                f"{m} {ms:.1f} ms ({f:.0f} faults, {sys_ms:.1f} ms in the kernel, peak RSS {rss:,.0f} MiB)"
                for m, (ms, f, sys_ms, rss) in res[name].items()),
                flush=True)
        for m in models:
            ratios[m].append(res["glibc defaults"][m][0] / res["keep_freed_memory"][m][0])
    print("median over rounds of (glibc defaults / keep_freed_memory) step time: " + "  ".join(
        f"{m} {statistics.median(v):.2f}x ({min(v):.2f}-{max(v):.2f})" for m, v in ratios.items()))


if __name__ == "__main__":
    main()
