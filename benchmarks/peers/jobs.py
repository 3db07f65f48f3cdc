"""Side by side, as users run them: a whole training job and test scoring through each system's own API.

    bash benchmarks/peers/setup.sh                 # once: bench_out/peers-venv
    python -m benchmarks.peers.jobs --store bench_out/store_1000000_0 [--models deepfm,dcn] [--rounds 2]
        [--mode fast|bf16|compile|bf16-compile] [--fuxictr-format parquet|npz]

``benchmarks.peers.run`` times one training step and one forward pass of each system's model on
the same in-memory batches: the models and optimizers alone. This one times what a user waits
for, loaders, loops and metrics included:

- **fit**: (mutualctr's job in a fresh process each time, like the command) one epoch over the store's train split with validation on its dev split at the end
  of the epoch, through the system's own loop: mutualctr ``Trainer.fit`` (what ``mutualctr
  train`` runs: the array loader with its prefetch thread, checkpoints, and at the end the best
  state's dev *and test* scores), FuxiCTR ``RankDataLoader`` + ``BaseModel.fit`` (its loader for
  csv inputs is the Ray Data parquet one; ``--fuxictr-format npz`` selects its NpzDataLoader),
  DeepCTR-Torch ``BaseModel.fit(x, y, validation_data=...)`` with the metrics of its README
  example (``binary_crossentropy``, ``auc``; its fit computes them on every batch).
- **score**: the test split through the system's evaluate API with a trained model: ``mutualctr
  evaluate`` (``api.evaluate``: loads the run's best checkpoint, scores at the default CPU batch
  of 2,048 rows, AUC + logloss), FuxiCTR ``BaseModel.evaluate(test_gen)`` (logloss + AUC, batch
  4,000), DeepCTR-Torch ``evaluate(x, y, batch_size=4000)`` (its default is 256; 4,000 is kinder).

Every system gets the same encoded rows (mutualctr's store; the peers' per-field indices are the
global ids minus the field offsets) and the same sizes (batch 4,000, emb 16, MLP [400, 200, 100],
embedding L2 1e-5, Adam 1e-3). The peers' preprocessing and the writing of their input files
are not timed (the issue measured their preprocessing separately); building their loaders
(FuxiCTR: Ray start-up on the first job) is reported as ``build`` and kept out of the ratios.
The systems alternate job by job for ``--rounds`` rounds after a pause each; the fastest round of
each system counts (the same rule for all). Not part of CI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import ROOT, header, header_line, load, mode_train, write_report
from benchmarks.peers.run import PEERS, Peer, arguments


def ours_job(store_path: str, model: str, out: str | Path, mode: str) -> dict:
    from mutualctr.training import jobs as api
    from mutualctr.training.trainer import Member, Trainer

    cfg = api.default_config(model, "criteo")
    cfg.train = mode_train(replace(cfg.train, epochs=1, device="cpu"), mode)
    out = Path(out)
    t0 = time.perf_counter()
    store = api.open_store(store_path)
    member = Member(config=cfg, model=api.build(cfg, store), run_dir=out)
    trainer = Trainer(store, [member], out, cfg.train, quiet=True)
    t1 = time.perf_counter()
    summary = trainer.fit()[0]
    t2 = time.perf_counter()
    test = api.evaluate(out, store_path)  # a fresh model from the checkpoint: fp32, not compiled
    t3 = time.perf_counter()
    if abs(test["auc"] - summary["test_auc"]) > 1e-6 and mode == "fast":
        raise RuntimeError(f"evaluate's AUC {test['auc']} != the run's {summary['test_auc']}")
    return {"build_s": t1 - t0, "fit_s": t2 - t1, "score_s": t3 - t2, "train_rows": len(store.split("train")[1]),
            "test_rows": len(store.split("test")[1]), "test_auc": float(test["auc"])}


def ours_job_in_child(store_path: str, model: str, out: Path, mode: str) -> dict:
    """``ours_job`` in a fresh process, as ``mutualctr train`` runs: nothing compiled or cached
    in memory by an earlier job (with ``train.compile`` each job pays its compile; inductor's
    on-disk cache is warm after the first job, as it is for a user's second run)."""
    code = "import json, sys; from benchmarks.peers.jobs import ours_job; print(json.dumps(ours_job(*sys.argv[1:])))"
    p = subprocess.run([sys.executable, "-c", code, store_path, model, str(out), mode], cwd=ROOT,
                       capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"mutualctr job failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = arguments(__doc__, rounds=2)
    ap.add_argument("--fuxictr-format", default="parquet", choices=("parquet", "npz"))
    ap.add_argument("--pause", type=float, default=2.0, help="seconds of rest before each job")
    a = ap.parse_args(argv)
    if not Path(a.peers_python).exists():
        raise SystemExit(f"{a.peers_python}: no peers venv; run bash benchmarks/peers/setup.sh first")
    store = str(Path(a.store).resolve())
    h = header()
    print(header_line(h), flush=True)
    res = {"header": h, "args": vars(a) | {"out": str(a.out)}, "models": {}}
    systems = ("mutualctr", *PEERS)
    with tempfile.TemporaryDirectory() as work:
        for model in a.models.split(","):
            peers = {s: Peer(a.peers_python, s, model, store) for s in PEERS}
            jobs = {s: [] for s in systems}
            for r in range(a.rounds):
                for s in systems:
                    time.sleep(a.pause)
                    if s == "mutualctr":
                        out = Path(work) / f"{model}-{r}"
                        jobs[s].append(ours_job_in_child(store, model, out, a.mode))
                        shutil.rmtree(out)
                    else:
                        jobs[s].append(peers[s].call({"cmd": "job", "store": store, "system": s, "model": model,
                                                      "batch": 4000, "seed": r, "fuxictr_format": a.fuxictr_format}))
                    j = jobs[s][-1]
                    print(f"  {model} round {r + 1}/{a.rounds} {s:9s} build {j['build_s']:6.1f} s  fit {j['fit_s']:6.1f} s  "
                          f"score {j['score_s']:5.2f} s  test AUC {j['test_auc']:.4f}  (load {load():.1f})", flush=True)
            for p in peers.values():
                p.close()
            row = {"load_end": load(), "rounds": a.rounds}
            for s in systems:
                fit = min(j["fit_s"] for j in jobs[s])
                score = min(j["score_s"] for j in jobs[s])
                j0 = jobs[s][0]
                row[s] = {"fit_s": round(fit, 2), "score_s": round(score, 3),
                          "fit_rows_per_s": round(j0["train_rows"] / fit), "score_rows_per_s": round(j0["test_rows"] / score),
                          "build_s": [round(j["build_s"], 2) for j in jobs[s]],
                          "test_auc": [round(j["test_auc"], 5) for j in jobs[s]]}
            for p in PEERS:
                row[f"fit_ratio_vs_{p}"] = round(row[p]["fit_s"] / row["mutualctr"]["fit_s"], 2)
                row[f"score_ratio_vs_{p}"] = round(row[p]["score_s"] / row["mutualctr"]["score_s"], 2)
            res["models"][model] = row
    lines = [header_line(h),
             f"# store {a.store}; whole jobs through each system's own API, fastest of {a.rounds} rounds; mutualctr "
             f"{a.mode} (peers fp32); FuxiCTR loader {a.fuxictr_format}",
             f"{'model':7s} {'system':10s} {'fit s':>7s} {'fit rows/s':>11s} {'score s':>8s} {'score rows/s':>13s} "
             f"{'ours/peer fit':>14s} {'ours/peer score':>16s}  test AUC per round"]
    for model, row in res["models"].items():
        for s in systems:
            x = row[s]
            rf = "" if s == "mutualctr" else f"{row[f'fit_ratio_vs_{s}']:.2f}x"
            rs = "" if s == "mutualctr" else f"{row[f'score_ratio_vs_{s}']:.2f}x"
            lines.append(f"{model:7s} {s:10s} {x['fit_s']:>7.1f} {x['fit_rows_per_s']:>11,} {x['score_s']:>8.2f} "
                         f"{x['score_rows_per_s']:>13,} {rf:>14s} {rs:>16s}  {', '.join(f'{v:.4f}' for v in x['test_auc'])}")
        lines.append(f"{'':7s} (load average {row['load_end']:.1f} at the end)")
    write_report(a.out, "peers-jobs" if a.mode == "fast" else f"peers-jobs-{a.mode}", res, lines)
    return res


if __name__ == "__main__":
    main()
