"""The benchmark suite: prepare, train, evaluate, mutual groups and growth, as one table + JSON.

    python -m benchmarks.run [--quick] [--out bench_out/] [--rows N] [--models deepfm,dcn,pnn,fibinet]
        [--modes fast,reference,bf16] [--sections prepare,train,mutual,growth] [--prepare-reps 3]
    make bench ARGS="--quick"

1. data: a synthetic Criteo-format file from ``mutualctr.data.synth.generate`` (1M rows; 200k
   with ``--quick``), cached under OUT/data.
2. prepare: ``mutualctr.data.prepare.prepare`` in a fresh child process per repetition; rows/s
   (median) and the child's peak RSS (its own VmHWM, see benchmarks/bench_prepare.py; the
   maximum over the repetitions). The last store is kept for the other sections.
3. train: 1 epoch per model on the store's train split with the shipped criteo config (batch
   4000, emb 16, MLP [400, 200, 100], embedding L2 1e-5, row-wise Adam, exp decay), through
   ``Trainer.step``. Each mode (see benchmarks/common.py) has its own trainer and model (same
   initial weights) and the modes alternate step by step on the same batches, so that other
   load on a shared machine hits them alike. Train samples/s = batch / median step time over the
   steps after the first 3; eval samples/s = test rows / median time of 3 full passes of
   ``predict_logits`` over the test split; test AUC of the model just timed (weights after the
   epoch, no dev selection).
4. mutual: step time of a 4-member group (4 x deepfm, the same vectorised with ``--vectorize``,
   and the mixed {deepfm, dcn, pnn, fibinet}) with alpha 1, divided by the sum of the 4 members'
   single step times, the group's and the singles' steps alternating on the same batches
   (``--mutual-steps`` timed steps).
5. growth: train samples/s of DeepFM (fast path, the Trainer's step) on id matrices
   synthesised directly for a 200k- and a 10M-row table (39 fields, each field's ids
   log-uniform over its share of the table), the two alternating step by step; plus the 10M
   table fed the 200k table's id pattern (as many distinct rows per batch as the small table),
   which separates the cost of a larger table from that of touching more rows.

The header records the machine, the library versions and the load average; every row records
the load average when it finished. Results go to OUT/results.json (and the table to
OUT/results.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_prepare import run_child
from benchmarks.common import (
    MODES, ROOT, activate, build_trainer, eval_precision, header, header_line, load, median, step,
)

def log(msg: str) -> None:
    print(msg, flush=True)


# ---- data and prepare -------------------------------------------------------------------

def synth_file(out: Path, rows: int, seed: int) -> Path:
    from mutualctr.data.synth import generate

    raw = out / "data" / f"synth_criteo_{rows}_{seed}.txt"
    meta = raw.with_name(raw.name + ".meta.json")
    if not (raw.is_file() and meta.is_file() and json.loads(meta.read_text()).get("rows") == rows):
        raw.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        generate(rows, raw, seed=seed, progress=False)
        log(f"generated {raw} ({rows:,} rows, {time.perf_counter() - t:.1f} s)")
    return raw


def bench_prepare(raw: Path, store: Path, reps: int) -> dict:
    runs = []
    for _ in range(reps):
        shutil.rmtree(store, ignore_errors=True)
        res, rss, _ = run_child([str(raw), str(store)])
        runs.append({"seconds": round(res["seconds"], 2), "peak_rss_mib": round(rss, 1), "load": load()})
        log(f"  prepare: {res['seconds']:.1f} s, peak RSS {rss:,.0f} MiB (load {load():.1f})")
    secs = median([r["seconds"] for r in runs])
    return {"rows": res["rows"], "num_features": res["num_features"], "seconds": round(secs, 2),
            "rows_per_s": round(res["rows"] / secs), "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "file_mib": round(raw.stat().st_size / 2**20, 1), "runs": runs, "load_end": load()}


# ---- train / eval -------------------------------------------------------------------------

def eval_pass(trainer, mode: str, reps: int = 3) -> tuple[float, float]:
    """(test samples/s, test AUC) of the first member."""
    from mutualctr.training.inference import predict_logits, scores

    X, y = trainer.test
    Xm = np.ascontiguousarray(X)  # read the memory map once: time the model, not the disk
    model = trainer.members[0].model
    times, logits = [], None
    activate(trainer)
    for _ in range(reps):
        t = time.perf_counter()
        logits = predict_logits(model, Xm, trainer.train_cfg.eval_batch_size, trainer.device,
                                eval_precision(trainer, mode))
        times.append(time.perf_counter() - t)
    return len(y) / median(times), scores(np.asarray(y), logits)["auc"]


def bench_train(store, models: list[str], modes: list[str], warmup: int, max_steps: int | None,
                workdir: Path) -> dict:
    results = {}
    for name in models:
        trainers = {mode: build_trainer(store, [name], workdir / f"{name}-{mode}", mode=mode) for mode in modes}
        first = trainers[modes[0]]
        n = first.steps_per_epoch if not max_steps else min(max_steps, first.steps_per_epoch)
        times = {mode: [] for mode in modes}
        t0 = time.perf_counter()
        for k, (ids, labels) in enumerate(first.loader.epoch(0)):
            if k >= n:
                break
            for mode in modes:
                times[mode].append(step(trainers[mode], ids, labels, k))
            if (k + 1) % 25 == 0:
                log(f"  {name}: step {k + 1}/{n} ({time.perf_counter() - t0:.0f} s, load {load():.1f})")
        batch = first.train_cfg.batch_size
        res = {}
        for mode in modes:
            ev_sps, auc = eval_pass(trainers[mode], mode)
            st = times[mode][warmup:] or times[mode]
            res[mode] = {"train_samples_per_s": round(batch / median(st)), "step_ms_median": round(median(st) * 1e3, 1),
                         "step_ms_best": round(min(st) * 1e3, 1), "steps": len(times[mode]),
                         "eval_samples_per_s": round(ev_sps), "test_auc": round(auc, 5)}
        res["load_end"] = load()
        results[name] = res
        log(f"  {name}: " + ", ".join(f"{m} {res[m]['train_samples_per_s']:,}/s AUC {res[m]['test_auc']:.4f}" for m in modes))
        del trainers
    return results


# ---- mutual group ratio -------------------------------------------------------------------

def bench_mutual(store, groups: dict[str, tuple[list[str], bool]], steps: int, warmup: int, workdir: Path) -> dict:
    """``groups``: name -> (member model names, vectorised)."""
    out = {}
    for gname, (models, vectorize) in groups.items():
        group = build_trainer(store, models, workdir / f"group-{gname}", mode="fast", alpha=1.0,
                              vectorize=vectorize)
        singles = [build_trainer(store, [m], workdir / f"single-{gname}-{i}", mode="fast", seed=i)
                   for i, m in enumerate(models)]
        tg, ts = [], [[] for _ in singles]
        for k, (ids, labels) in enumerate(group.loader.epoch(0)):
            if k >= steps + warmup:
                break
            tg.append(step(group, ids, labels, k))
            for i, s in enumerate(singles):
                ts[i].append(step(s, ids, labels, k))
        g = median(tg[warmup:])
        singles_ms = [median(t[warmup:]) for t in ts]
        out[gname] = {"members": models, "vectorised": vectorize, "group_step_ms": round(g * 1e3, 1),
                      "single_step_ms": [round(s * 1e3, 1) for s in singles_ms],
                      "ratio": round(g / sum(singles_ms), 3), "steps": steps, "load_end": load()}
        log(f"  mutual {gname}: group {g * 1e3:.0f} ms / sum of singles {sum(singles_ms) * 1e3:.0f} ms "
            f"= {g / sum(singles_ms):.2f} (load {load():.1f})")
        del group, singles
    return out


# ---- growth -------------------------------------------------------------------------------

def synth_ids(vocab: int, rows: int, fields: int, seed: int, pattern: int | None = None) -> np.ndarray:
    """(rows, fields) global ids: field f owns [f*V/F, (f+1)*V/F); within it ids are log-uniform
    (a heavy head and a long tail, like hashed categorical values). ``pattern``: draw the
    within-field ids as for a table of ``pattern`` rows (so the batch touches as many distinct
    rows as it would there), spread over the fields of the ``vocab``-row table."""
    rng = np.random.default_rng(seed)
    per = vocab // fields
    draw = (pattern or vocab) // fields
    local = np.exp(rng.random((rows, fields)) * np.log(draw)).astype(np.int64) - 1
    return np.clip(local, 0, draw - 1) + np.arange(fields, dtype=np.int64) * per


def bench_growth(vocabs: list[int], steps: int, warmup: int, batch: int = 4000, fields: int = 39) -> dict:
    from mutualctr.models import build_model, l2_penalty
    from mutualctr.training.jobs import default_config
    from mutualctr.training.losses import bce
    from mutualctr.training.optim import build_optimizers

    cfg = default_config("deepfm", "criteo")
    # the tables; the largest is also fed the smallest's id pattern ("same touched rows"), which
    # separates the cost of a bigger table from that of more distinct rows per batch
    small, large = min(vocabs), max(vocabs)
    cases = {str(v): (v, None) for v in vocabs}
    if small != large:
        cases["same_touched"] = (large, small)
    setups = {}
    for key, (v, _) in cases.items():
        if key == "same_touched":
            setups[key] = setups[str(large)]  # the same model and optimizer state
            continue
        torch.manual_seed(0)
        model = build_model("deepfm", v, fields, cfg.model_params())
        setups[key] = (model, build_optimizers(model, cfg.optim))
    rng = np.random.default_rng(1)
    times = {key: [] for key in cases}
    uniq = {key: [] for key in cases}
    for k in range(steps + warmup):
        labels = torch.from_numpy((rng.random(batch) < 0.25).astype(np.float32))
        for key, (model, opts) in setups.items():
            v, pattern = cases[key]
            ids = torch.from_numpy(synth_ids(v, batch, fields, seed=k, pattern=pattern))
            t = time.perf_counter()
            for o in opts:  # the body of Trainer.step for one member
                o.zero_grad(set_to_none=True)
            loss = bce(model(ids), labels) + l2_penalty(model, ids)
            loss.backward()
            for o in opts:
                o.step()
            float(loss)
            times[key].append(time.perf_counter() - t)
            uniq[key].append(int(torch.unique(ids).numel()))
    res = {key: {"train_samples_per_s": round(batch / median(times[key][warmup:])),
                 "unique_ids_per_batch": int(median(uniq[key])), "table_rows": cases[key][0]} for key in cases}
    a, b = str(small), str(large)
    res["ratio_large_to_small"] = round(res[b]["train_samples_per_s"] / res[a]["train_samples_per_s"], 3)
    if "same_touched" in res:
        res["ratio_same_touched"] = round(res["same_touched"]["train_samples_per_s"] / res[a]["train_samples_per_s"], 3)
    res["load_end"] = load()
    return res


# ---- report -------------------------------------------------------------------------------

def table(r: dict) -> str:
    lines = [header_line(r["header"])]
    a = r["args"]
    lines.append(f"# {a['rows']:,}-row synthetic Criteo-format file; batch 4000, emb 16, MLP [400, 200, 100]; "
                 f"medians; figures taken with the load average shown (2 cores shared with other jobs)")
    if "prepare" in r:
        p = r["prepare"]
        lines.append(f"\nprepare: {p['rows']:,} rows in {p['seconds']:.1f} s = {p['rows_per_s']:,} rows/s, "
                     f"peak RSS {p['peak_rss_mib']:,.0f} MiB ({p['num_features']:,} features; "
                     f"{len(p['runs'])} runs; load {p['load_end']:.1f})")
    if "train" in r:
        modes = r["args"]["modes"]
        steps = sorted({x["steps"] for res in r["train"].values() for x in res.values() if isinstance(x, dict)})
        span = "1 epoch" if not r["args"].get("max_steps") else f"{'/'.join(map(str, steps))} steps (--max-steps)"
        lines.append(f"\ntrain ({span}) and evaluate, per model and path mode")
        lines.append(f"{'model':9s} {'mode':10s} {'train/s':>9s} {'step ms':>9s} {'eval/s':>9s} {'test AUC':>9s} {'load':>5s}")
        for name, res in r["train"].items():
            for mode in modes:
                x = res[mode]
                lines.append(f"{name:9s} {mode:10s} {x['train_samples_per_s']:>9,} {x['step_ms_median']:>9.1f} "
                             f"{x['eval_samples_per_s']:>9,} {x['test_auc']:>9.4f} {res['load_end']:>5.1f}")
            if "fast" in modes and "reference" in modes:
                lines.append(f"{'':9s} fast/reference train speed-up {res['fast']['train_samples_per_s'] / res['reference']['train_samples_per_s']:.2f}x")
            if "fast" in modes and "bf16" in modes:
                lines.append(f"{'':9s} bf16 AUC - fp32 AUC {res['bf16']['test_auc'] - res['fast']['test_auc']:+.4f}")
            for a_, b_ in (("fast", "compile"), ("bf16", "bf16-compile")):
                if a_ in modes and b_ in modes:
                    lines.append(f"{'':9s} {b_}/{a_} train speed-up {res[b_]['train_samples_per_s'] / res[a_]['train_samples_per_s']:.2f}x, "
                                 f"AUC {res[b_]['test_auc'] - res[a_]['test_auc']:+.4f}")
    if "mutual" in r:
        lines.append("\nmutual group of 4 (alpha 1): group step / sum of the 4 single steps (target <= 0.8)")
        for g, x in r["mutual"].items():
            lines.append(f"{g:14s} group {x['group_step_ms']:.0f} ms, singles {' + '.join(f'{s:.0f}' for s in x['single_step_ms'])} ms"
                         f" -> ratio {x['ratio']:.2f} (load {x['load_end']:.1f})")
    if "growth" in r:
        g = r["growth"]
        lines.append("\ngrowth (DeepFM, fast path): train samples/s by table size (target: within 20%)")
        for k, x in g.items():
            if isinstance(x, dict):
                rows = x.get("table_rows", int(k) if k.isdigit() else 0)
                note = ", the smallest table's id pattern" if k == "same_touched" else ""
                lines.append(f"{rows:>11,} rows  {x['train_samples_per_s']:>9,}/s  "
                             f"({x['unique_ids_per_batch']:,} unique ids per batch{note})")
        lines.append(f"  large/small = {g['ratio_large_to_small']:.2f}"
                     + (f"; with the same touched rows {g['ratio_same_touched']:.2f}" if "ratio_same_touched" in g else "")
                     + f" (load {g['load_end']:.1f})")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="200k rows, 1 prepare run, fewer timed steps")
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out")
    ap.add_argument("--rows", type=int, default=None, help="synthetic rows (default 1M, 200k with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="deepfm,dcn,pnn,fibinet")
    ap.add_argument("--modes", default="fast,reference,bf16", help=f"path modes to time side by side ({', '.join(MODES)})")
    ap.add_argument("--sections", default="prepare,train,mutual,growth")
    ap.add_argument("--prepare-reps", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--max-steps", type=int, default=0, help="cap the train steps per model (0: 1 epoch)")
    ap.add_argument("--mutual-steps", type=int, default=None, help="timed group steps (default 10, 4 with --quick)")
    ap.add_argument("--growth-steps", type=int, default=None, help="timed steps per table (default 10, 5 with --quick)")
    ap.add_argument("--growth-vocabs", default="200000,10000000")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--tag", default="", help="write OUT/results-TAG.json (several partial runs side by side)")
    a = ap.parse_args(argv)
    rows = a.rows or (200_000 if a.quick else 1_000_000)
    modes = [m for m in a.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r} (known: {', '.join(MODES)})")
    sections = set(a.sections.split(","))
    if a.threads:
        torch.set_num_threads(a.threads)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    r: dict = {"header": header(), "args": {"rows": rows, "quick": a.quick, "max_steps": a.max_steps, "models": a.models.split(","),
                                             "modes": modes, "seed": a.seed, "threads": torch.get_num_threads()}}
    log(header_line(r["header"]))
    raw = synth_file(out, rows, a.seed)
    store_path = out / f"store_{rows}_{a.seed}"
    if "prepare" in sections or not (store_path / "feature_map.json").is_file():
        log("prepare ...")
        r["prepare"] = bench_prepare(raw, store_path, a.prepare_reps or (1 if a.quick else 3))
    from mutualctr.data.store import Store

    store = Store.open(store_path)
    with tempfile.TemporaryDirectory(dir=out) as work:
        work = Path(work)
        if "train" in sections:
            log("train ...")
            r["train"] = bench_train(store, a.models.split(","), modes, warmup=3, max_steps=a.max_steps, workdir=work)
        if "mutual" in sections:
            log("mutual ...")
            r["mutual"] = bench_mutual(store, {"deepfm x4": (["deepfm"] * 4, False),
                                               "deepfm x4 vmap": (["deepfm"] * 4, True),
                                               "mixed": (["deepfm", "dcn", "pnn", "fibinet"], False)},
                                       a.mutual_steps or (4 if a.quick else 10), 2, work)
    if "growth" in sections:
        log("growth ...")
        r["growth"] = bench_growth([int(v) for v in a.growth_vocabs.split(",")],
                                   a.growth_steps or (5 if a.quick else 10), 2)
    r["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = table(r)
    print("\n" + text)
    stem = f"results-{a.tag}" if a.tag else "results"
    (out / f"{stem}.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / f"{stem}.txt").write_text(text + "\n")
    log(f"\nwrote {out / (stem + '.json')} and {out / (stem + '.txt')}")
    return r


if __name__ == "__main__":
    main()
