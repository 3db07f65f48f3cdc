"""torch threads on a CPU shared with other busy processes: the step time by thread count.

    python -m benchmarks.bench_threads --store STORE [--models deepfm,dcn] [--threads 1,2]
        [--busy 0,1] [--busy-kind spin|torch] [--steps 12] [--warmup 3] [--out bench_out]

For each number of busy processes (``--busy``, standing in for other jobs: ``spin``, a
pure-Python loop on one core each; ``torch``, a torch matmul loop with torch's default threads,
i.e. another training started with the defaults) and each torch thread count, one trainer (the shipped criteo config) runs
``--warmup`` + ``--steps`` steps; reported: the median step time, and what mutualctr's
contention check (``training.device.others_cpu_load``, ``contention_advice``) measured and
would say at that point. Results go to OUT/threads.json. Not run by CI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import build_trainer, header, header_line, median, step, write_report


BUSY = {"spin": "while True: pass",
        "torch": "import torch\na = torch.randn(512, 512)\nwhile True: a @ a"}


def spinners(n: int, kind: str = "spin") -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", BUSY[kind]]) for _ in range(n)]
    time.sleep(1.0 if n else 0.0)  # started and spinning
    return procs


def measure(store: str, model: str, threads: int, steps: int, warmup: int, work: Path) -> float:
    torch.set_num_threads(threads)
    trainer = build_trainer(store, [model], work / f"{model}-{threads}")
    times = []
    for k, (ids, labels) in enumerate(trainer.loader.epoch(0)):
        if k >= warmup + steps:
            break
        times.append(step(trainer, ids, labels, k))
    return median(times[warmup:]) * 1e3


def main(argv=None) -> dict:
    from mutualctr.training.device import contention_advice, others_cpu_load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--models", default="deepfm,dcn")
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    ap.add_argument("--busy", default="0,1")
    ap.add_argument("--busy-kind", choices=sorted(BUSY), default="spin")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    a = ap.parse_args(argv)
    h = header()
    cores = len(os.sched_getaffinity(0))
    res = {"header": h, "busy_kind": a.busy_kind, "rows": []}
    lines = [header_line(h), f"# busy processes: {a.busy_kind}", "", "| busy processes | others' load measured | model | threads | median step ms | "
             "vs 1 thread | mutualctr warns |", "| ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for busy in [int(b) for b in a.busy.split(",")]:
            procs = spinners(busy, a.busy_kind)
            try:
                others = others_cpu_load(0.5)
                for model in a.models.split(","):
                    base = None
                    for threads in [int(t) for t in a.threads.split(",")]:
                        ms = measure(a.store, model, threads, a.steps, a.warmup, Path(tmp))
                        base = base or ms
                        warns = contention_advice(threads, cores, others) is not None
                        res["rows"].append({"busy": busy, "others_load": others, "model": model, "threads": threads,
                                            "step_ms": ms, "warns": warns})
                        lines.append(f"| {busy} | {others:.2f} | {model} | {threads} | {ms:.1f} | "
                                     f"{ms / base:.2f}x | {'yes' if warns else 'no'} |")
                        print(lines[-1], flush=True)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    write_report(a.out, "threads", res, lines)
    return res


if __name__ == "__main__":
    main()
