"""The speed table of a GPU: training step, compile, the 4-member group, evaluation; JSON.

    python -m benchmarks.gpu_speed --part data|train|compile|group|eval --out DIR [--dry-run]
        [--models deepfm,dcn,pnn,fibinet] [--seconds S]
    python -m benchmarks.gpu_speed --merge DIR      # print every part's results as one JSON

Run by benchmarks/gpu_check.sh, one process per part under its own time limit, so that a part
that hangs or runs long (a first torch.compile) costs only its own rows. Each part rewrites
DIR/gpu_speed.<part>.json after every row, so what it measured survives a timeout; a row that
fails records its error and the part goes on. ``--seconds``: the part starts no new row after
that many seconds.

* data: a synthetic Criteo-format file (1M rows) prepared into DIR/store, once.
* train: each model's ``Trainer.step`` (shipped criteo config: batch 4000, emb 16, MLP
  [400, 200, 100], row-wise Adam) in fp32 (the default path) and bf16 autocast; samples/s over
  the timed steps, batches already on the device, the device synchronised before and after.
* compile: the same with ``train.compile`` (fp32); the warm-up seconds include compiling.
* group: a 4-member group of one model (alpha 1), the members looped (``Trainer.step``'s
  default) and vectorised (``vectorize=True``, one vmapped forward); samples/s of the group.
* eval: ``predict_logits`` over the train split (read into memory first; the batches go to the
  device as in training runs), fp32 and bf16; rows/s.

``--dry-run``: the same code on the CPU with tiny sizes (6,000 rows, batch 256, 2 timed steps,
one thread), to check the script where there is no GPU; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import activate, build_trainer, header, header_line

MODELS = ("deepfm", "dcn", "pnn", "fibinet")
PARTS = ("data", "train", "compile", "group", "eval")
REAL = {"rows": 1_000_000, "batch": 4000, "warmup": 5, "steps": 50, "group_steps": 20, "eval_rows": 1_000_000,
        "eval_reps": 3}
DRY = {"rows": 6000, "batch": 256, "warmup": 1, "steps": 2, "group_steps": 2, "eval_rows": 2000, "eval_reps": 1}


def device_header(device: torch.device) -> dict:
    h = header()
    h["device"] = str(device)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        h.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                 compute_capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported(),
                 tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return h


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Part:
    """Rows of one part, rewritten to DIR/gpu_speed.<part>.json after each one."""

    def __init__(self, out: Path, name: str, device: torch.device, args: dict, seconds: float):
        self.path = out / f"gpu_speed.{name}.json"
        self.t0 = time.perf_counter()
        self.seconds = seconds
        self.res = {"part": name, "header": device_header(device), "args": args, "rows": {}, "done": False}
        print(header_line(self.res["header"]), flush=True)
        self.save()

    def time_left(self) -> bool:
        return time.perf_counter() - self.t0 < self.seconds

    def row(self, key: str, fn) -> None:
        if not self.time_left():
            self.res["rows"][key] = {"skipped": f"the part's {self.seconds:.0f} s were spent"}
        else:
            t = time.perf_counter()
            try:
                r = fn()
            except Exception as e:  # one failing row (out of memory, no triton) leaves the others
                r = {"error": f"{type(e).__name__}: {e}"[:500], "trace": traceback.format_exc()[-1500:]}
            r["wall_s"] = round(time.perf_counter() - t, 2)
            self.res["rows"][key] = r
        print(f"  {key}: {json.dumps(self.res['rows'][key])[:300]}", flush=True)
        self.save()

    def save(self, done: bool = False) -> None:
        self.res["done"] = done
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.res, indent=1) + "\n")
        tmp.replace(self.path)


def staged_batches(trainer, n: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` training batches on the device (the epoch repeated when it is shorter)."""
    out = []
    while len(out) < n:
        for ids, labels in trainer.loader.epoch(len(out)):
            out.append((ids.to(device), labels.to(device)))
            if len(out) == n:
                break
    return out


def timed_steps(trainer, batches, warmup: int) -> dict:
    """Warm-up steps, then the rest timed as one block (no per-step device read)."""
    device = trainer.device
    losses = None

    def run(k, ids, labels):
        activate(trainer)  # the row cache is keyed on the ids tensor: repeated batches must not hit it
        for m in trainer.members:
            m.schedule.set_step(k)
        return trainer.step(ids, labels)

    sync(device)
    t = time.perf_counter()
    for k, (ids, labels) in enumerate(batches[:warmup]):
        losses = run(k, ids, labels)
    sync(device)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    for k, (ids, labels) in enumerate(batches[warmup:], start=warmup):
        losses = run(k, ids, labels)
    sync(device)
    dt = time.perf_counter() - t
    n = len(batches) - warmup
    rows = sum(len(b[1]) for b in batches[warmup:])
    return {"samples_per_s": round(rows / dt), "step_ms": round(dt / n * 1e3, 3), "steps": n,
            "warmup_s": round(warm, 2), "losses_finite": bool(torch.isfinite(losses).all()),
            "max_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None}


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def part_data(out: Path, size: dict, part: Part) -> None:
    from mutualctr.data.prepare import prepare
    from mutualctr.data.store import SPLITS, Store
    from mutualctr.data.synth import generate

    def make():
        store = out / "store"
        try:  # a store of this size from an earlier run
            if sum(Store.open(store).rows(s) for s in SPLITS) == size["rows"]:
                return {"store": str(store), "rows": size["rows"], "reused": True}
        except Exception:
            pass
        raw = out / f"synth_{size['rows']}.txt"
        t = time.perf_counter()
        generate(size["rows"], raw, seed=0, progress=False)
        ts = time.perf_counter() - t
        t = time.perf_counter()
        prepare("criteo", [raw], store, split="random", seed=0, progress=False, overwrite=True)
        tp = time.perf_counter() - t
        raw.unlink()
        return {"store": str(store), "rows": size["rows"], "synth_s": round(ts, 1), "prepare_s": round(tp, 1)}

    part.row("store", make)


def trainer_row(store: Path, models: list[str], work: Path, size: dict, device: torch.device, steps: int,
                **kw) -> dict:
    """Build a trainer of ``models`` (``build_trainer``'s ``kw``), time its steps, free it."""
    tr = build_trainer(store, models, work, batch_size=size["batch"], device=device.type, **kw)
    try:
        r = timed_steps(tr, staged_batches(tr, size["warmup"] + steps, device), size["warmup"])
        r.update(members=len(models), precision=tr.precision, compile=tr.train_cfg.compile,
                 vectorised=tr.vectorised is not None)
        return r
    finally:
        del tr  # before emptying the device's cache
        release(device)


def part_train(store: Path, models, modes, size: dict, device: torch.device, part: Part, work: Path) -> None:
    for model in models:
        for mode in modes:
            part.row(f"{model}/{'fp32' if mode == 'fast' else mode}",
                     lambda model=model, mode=mode: trainer_row(store, [model], work / f"{model}-{mode}", size,
                                                                device, size["steps"], mode=mode))


def part_group(store: Path, models, size: dict, device: torch.device, part: Part, work: Path) -> None:
    for model in models:
        for vectorize in (False, True):
            part.row(f"{model}x4/{'vectorised' if vectorize else 'looped'}",
                     lambda model=model, vectorize=vectorize: trainer_row(
                         store, [model] * 4, work / f"group-{model}-{vectorize}", size, device, size["group_steps"],
                         mode="fast", alpha=1.0, vectorize=vectorize))


def part_eval(store: Path, models, size: dict, device: torch.device, part: Part, work: Path) -> None:
    from mutualctr.data.store import Store
    from mutualctr.training.inference import predict_logits

    X, _ = Store.open(store).split("train")
    X = np.ascontiguousarray(X[: size["eval_rows"]])  # in memory: time the model and the copies, not the disk
    for model in models:
        for mode in ("fast", "bf16"):
            def one(model=model, mode=mode):
                tr = build_trainer(store, [model], work / f"eval-{model}-{mode}", mode=mode, device=device.type)
                m = tr.members[0].model
                try:
                    predict_logits(m, X[: min(len(X), 100_000)], tr.train_cfg.eval_batch_size, tr.device, tr.precision)
                    times = []
                    for _ in range(size["eval_reps"]):
                        sync(device)
                        t = time.perf_counter()
                        z = predict_logits(m, X, tr.train_cfg.eval_batch_size, tr.device, tr.precision)
                        times.append(time.perf_counter() - t)  # predict_logits ends on a copy to the host
                    best = min(times)
                    return {"rows_per_s": round(len(X) / best), "rows": len(X), "seconds": round(best, 3),
                            "precision": tr.precision, "finite": bool(np.isfinite(z).all())}
                finally:
                    del tr, m
                    release(device)
            part.row(f"{model}/{'fp32' if mode == 'fast' else mode}", one)


def merge(out: Path) -> dict:
    """What benchmarks/gpu_check.sh left under DIR as one result: each step's exit status and
    seconds, the tests' summary, every part's rows, and a summary of one figure per row."""
    res: dict = {"steps": {}, "tests": None, "summary": {}, "parts": {},
                 "summary_units": "train, compile, group: training samples/s; eval: rows/s scored; "
                                  "data: the store was made"}
    status = out / "gpu_check.status.tsv"
    if status.is_file():
        for line in status.read_text().splitlines():
            name, rc, seconds, limit = line.split("\t")
            res["steps"][name] = {"exit": int(rc) if rc.lstrip("-").isdigit() else rc, "seconds": int(seconds),
                                  "limit_s": int(limit) if limit.isdigit() else None,
                                  "timed_out": rc in ("124", "137")}
    log = out / "tests.log"
    if log.is_file():
        text = log.read_text(errors="replace").rstrip()
        lines = text.splitlines()
        res["tests"] = {"summary": lines[-1] if lines else "", "exit": res["steps"].get("tests", {}).get("exit")}
        if res["tests"]["exit"] != 0:
            res["tests"]["tail"] = text[-3000:]
    for name in PARTS:
        p = out / f"gpu_speed.{name}.json"
        if not p.is_file():
            res["parts"][name] = {"missing": f"no {p.name}: the part did not run, or failed before it began"}
            continue
        try:
            part = json.loads(p.read_text())
        except ValueError as e:
            res["parts"][name] = {"error": f"unreadable {p.name}: {e}"}
            continue
        res["parts"][name] = part
        for key, row in part.get("rows", {}).items():
            figure = next((row[k] for k in ("samples_per_s", "rows_per_s") if k in row), None)
            res["summary"][f"{name}/{key}"] = (figure if figure is not None else
                                               row.get("error") or row.get("skipped") or "done")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=PARTS)
    ap.add_argument("--merge", type=Path, default=None, help="print the parts' results under this folder")
    ap.add_argument("--out", type=Path, default=Path("bench_out/gpu_check"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--dry-run", action="store_true", help="on the CPU with tiny sizes (checks the script)")
    a = ap.parse_args(argv)
    if a.merge is not None:
        print(json.dumps(merge(a.merge), indent=1))
        return
    if a.part is None:
        ap.error("--part or --merge is required")
    if a.dry_run:
        torch.set_num_threads(1)
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        sys.exit("gpu_speed: torch sees no CUDA device (use --dry-run to rehearse on the CPU)")
    else:
        device = torch.device("cuda")
    size = DRY if a.dry_run else REAL
    a.out.mkdir(parents=True, exist_ok=True)
    models = a.models.split(",")
    part = Part(a.out, a.part, device, {"models": models, "dry_run": a.dry_run, "seconds": a.seconds, **size},
                a.seconds)
    store = a.out / "store"
    if a.part == "data":
        part_data(a.out, size, part)
    else:
        if not store.is_dir():
            sys.exit(f"gpu_speed: no store at {store}; run --part data first")
        with tempfile.TemporaryDirectory(prefix="gpu_speed_") as work:
            work = Path(work)
            if a.part == "train":
                part_train(store, models, ("fast", "bf16"), size, device, part, work)
            elif a.part == "compile":
                part_train(store, models, ("compile",), size, device, part, work)
            elif a.part == "group":
                part_group(store, models, size, device, part, work)
            else:
                part_eval(store, models, size, device, part, work)
    part.save(done=True)


if __name__ == "__main__":
    main()
