"""Full-size rehearsal: synthetic file -> prepare -> 1 epoch DeepFM -> mutual finetune -> evaluate.

    python -m benchmarks.scale --rows 45840617 --threads 1      # the Kaggle train.txt size
    python -m benchmarks.scale --rows 200000 --out bench_out/scale_smoke

Each stage is the CLI a user runs, started as a child process and timed from here; its peak
RSS is the child's ``ru_maxrss`` from ``os.wait4`` (this parent imports neither torch nor
mutualctr, so a child's high-water mark is its own, not the parent's it was forked from):

1. ``synth``    ``mutualctr data synth --rows N`` (Criteo-format TSV, seed 0)
2. ``prepare``  ``mutualctr prepare --dataset criteo`` (the seeded 80/10/10 split); the text
                file is deleted afterwards unless ``--keep-text`` (its meta file stays)
3. ``train``    ``mutualctr train --model deepfm --epochs 1`` (shipped criteo config: batch 4000,
                embedding 16, MLP 400-200-100; one dev evaluation and the test score of best.pt)
4. ``mutual``   ``mutualctr mutual --init RUN RUN --alpha 1 --finetune-split 0.1 --epochs 1
                --evals-per-epoch 1``: two members, both started from the trained run, over the last
                tenth of the train split (a tenth of an epoch per member). Both members start equal,
                which changes no cost: each still runs its own forward, backward, optimizer step and
                evaluations (the start on dev, one dev evaluation, churn before/after on test).
                One explicit alpha, not ``auto``'s grid (which runs 4 to 7 such finetunings).
5. ``evaluate`` ``mutualctr evaluate --split test`` of the first mutual member
6. ``plan``     the planned cost of ``mutualctr experiment all`` on this store with its defaults
                (``Experiment.plan().total``, member-epochs; nothing trains), for the extrapolation.

Every child gets ``OMP_NUM_THREADS=MKL_NUM_THREADS=T`` (torch's intra-op threads and Arrow's
CPU pool). Results go to ``OUT/scale.json`` after every stage, with the machine header of
benchmarks/common.py and torch's CPU capability; each stage's output is in ``OUT/STAGE.log``.
Resumable: a stage recorded in scale.json as done is skipped (run the same command again to
continue); an interrupted ``train`` or ``mutual`` continues from its last checkpoint (``--resume``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("synth", "prepare", "train", "mutual", "evaluate", "plan")

HEADER_CHILD = """
import json, torch
from benchmarks.common import header
h = header()
h["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
print(json.dumps(h))
"""

PLAN_CHILD = """
import json, sys, tempfile
from collections import defaultdict
from mutualctr.experiments.runner import Experiment, Settings, parse_questions

with tempfile.TemporaryDirectory() as out:
    st = Settings(questions=parse_questions("all"), models=["deepfm", "dcn", "pnn", "fibinet"])
    plan = Experiment(sys.argv[1], out, st, quiet=True).plan()
    total = plan.total
    by = defaultdict(float)
    for job in plan.jobs:  # each job once, a job shared by questions too
        by[(job.model, job.kind)] += job.cost
    print(json.dumps({"member_epochs": total, "questions": st.questions, "models": st.models,
                      "instances": st.instances,
                      "member_epochs_by": {f"{m}/{k}": round(v, 2) for (m, k), v in sorted(by.items())}}))
"""


def _env(threads: int) -> dict:
    pp = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": pp, "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads)}


def run_stage(argv: list[str], log: Path, env: dict) -> dict:
    """Run ``argv`` (stdout and stderr to ``log``); its wall and CPU seconds, peak RSS, loads."""
    load0 = os.getloadavg()
    t = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"stage failed (exit {rc}): {' '.join(argv)}\n  " + "\n  ".join(tail))
    return {"seconds": round(seconds, 2), "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_rss_mib": round(ru.ru_maxrss / 1024.0, 1),
            "load_start": round(load0[0], 2), "load_end": round(os.getloadavg()[0], 2)}


def _last_json(log: Path) -> dict:
    """The last line of ``log`` that is a JSON object (the CLIs' ``--json`` output)."""
    for line in reversed(log.read_text().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise SystemExit(f"{log}: no JSON line")


def split_rows(store: Path, split: str) -> int:
    """Rows of a store split, from the header of its ``SPLIT.y.npy`` (no numpy in this process)."""
    import ast

    with open(store / f"{split}.y.npy", "rb") as f:
        major = f.read(8)[6]
        n = int.from_bytes(f.read(2 if major == 1 else 4), "little")
        return int(ast.literal_eval(f.read(n).decode("latin1"))["shape"][0])


def _du_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", type=Path, default=None, help="default: bench_out/scale_ROWS")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    ap.add_argument("--keep-text", action="store_true", help="keep the synthetic text after prepare")
    ap.add_argument("--stop-after", choices=STAGES, default=None, help="stop after this stage")
    a = ap.parse_args(argv)
    out = (a.out or ROOT / "bench_out" / f"scale_{a.rows}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "scale.json"
    env = _env(a.threads)
    py = [sys.executable, "-m", "mutualctr"]
    res = json.loads(res_path.read_text()) if res_path.is_file() else {}
    if res and (res.get("rows") != a.rows or res.get("threads") != a.threads):
        raise SystemExit(f"{res_path} is of --rows {res.get('rows')} --threads {res.get('threads')}; "
                         "use another --out")
    h = json.loads(subprocess.run([sys.executable, "-c", HEADER_CHILD], env=env, cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout)
    res.setdefault("rows", a.rows)
    res.setdefault("threads", a.threads)
    res.setdefault("command", "python -m benchmarks.scale " + " ".join(argv if argv is not None else sys.argv[1:]))
    res.setdefault("headers", []).append(h)  # one per sitting (a resumed run has several)
    stages = res.setdefault("stages", {})

    def save() -> None:
        tmp = res_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1) + "\n")
        tmp.replace(res_path)

    raw, store, run, group = out / "synth.txt", out / "store", out / "train", out / "mutual"

    for stage in STAGES:
        if stages.get(stage, {}).get("done"):
            print(f"{stage}: done before ({stages[stage]['seconds']:.0f} s), skipped", flush=True)
        else:
            print(f"{stage}: running (log {out / (stage + '.log')})", flush=True)
            log = out / f"{stage}.log"
            if stage == "synth":
                r = run_stage(py + ["data", "synth", "--rows", str(a.rows), "--out", str(raw),
                                    "--seed", str(a.seed), "--quiet"], log, env)
                meta = json.loads(raw.with_name(raw.name + ".meta.json").read_text())
                r.update(rows=a.rows, rows_per_s=round(a.rows / r["seconds"]), text_mib=round(raw.stat().st_size / 2**20, 1),
                         ceiling_auc=meta["ceiling_auc"], click_rate=meta["click_rate"])
            elif stage == "prepare":
                r = run_stage(py + ["prepare", "--dataset", "criteo", "--input", str(raw), "--out", str(store),
                                    "--quiet", "--overwrite"], log, env)
                r.update(rows=a.rows, rows_per_s=round(a.rows / r["seconds"]), store_mib=_du_mib(store))
                fm = json.loads((store / "feature_map.json").read_text())
                r["num_features"] = fm.get("num_features")
                if not a.keep_text:
                    raw.unlink()
                    r["text_deleted"] = True
            elif stage == "train":
                resume = ["--resume"] if (run / "checkpoints" / "last.pt").is_file() else []
                if run.exists() and not resume:
                    shutil.rmtree(run)  # interrupted before its first checkpoint
                r = run_stage(py + ["train", "--data", str(store), "--out", str(run), "--model", "deepfm",
                                    "--epochs", "1", "--quiet", "--json", *resume], log, env)
                s = json.loads((run / "summary.json").read_text())
                rows = split_rows(store, "train")
                r.update(rows=rows, rows_per_s=round(rows / r["seconds"]))
                r["summary"] = {k: s[k] for k in ("samples_per_s", "seconds", "test_auc", "test_logloss",
                                                   "best_dev_auc", "steps") if k in s}
            elif stage == "mutual":
                resume = ["--resume"] if group.exists() and any(group.rglob("last.pt")) else []
                if group.exists() and not resume:
                    shutil.rmtree(group)
                r = run_stage(py + ["mutual", "--data", str(store), "--out", str(group), "--init", str(run), str(run),
                                    "--alpha", "1", "--finetune-split", "0.1", "--epochs", "1",
                                    "--evals-per-epoch", "1", "--quiet", "--json", *resume], log, env)
                g = json.loads((group / "group.json").read_text())
                n = split_rows(store, "train")
                rows = 2 * (n - round(n * 0.9))  # two members over the last tenth (train.row_range)
                r.update(rows=rows, rows_per_s=round(rows / r["seconds"]))
                r["group"] = {k: g[k] for k in ("members", "churn", "seconds") if k in g}
            elif stage == "evaluate":
                member = sorted(p.parent for p in group.glob("*/summary.json"))[0]
                r = run_stage(py + ["evaluate", "--run", str(member), "--data", str(store), "--split", "test",
                                    "--json"], log, env)
                e = _last_json(log)
                r.update(run=str(member.relative_to(out)), auc=e.get("auc"), logloss=e.get("logloss"),
                         rows=e.get("rows"), rows_per_s=round(e["rows"] / r["seconds"]) if e.get("rows") else None)
            else:  # plan
                r = run_stage([sys.executable, "-c", PLAN_CHILD, str(store)], log, env)
                r.update(_last_json(log))
            r["done"] = True
            stages[stage] = r
            save()
            print(f"{stage}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
        if stage == a.stop_after:
            break
    save()
    print(table(res))


def table(res: dict) -> str:
    """The stages as a markdown table (seconds, rows/s, peak RSS)."""
    st = res["stages"]
    lines = ["| stage | seconds | rows | rows/s | peak RSS (MiB) | load start/end |", "|---|---|---|---|---|---|"]
    # rows: generated/read (synth, prepare), train-split rows (train), member-rows (mutual), test rows
    # (evaluate); rows/s over the stage's whole wall time, start-up and evaluations included
    for name in STAGES:
        r = st.get(name)
        if not r:
            continue
        rows, rps = r.get("rows"), r.get("rows_per_s")
        lines.append(f"| {name} | {r['seconds']:.1f} | {rows if rows is not None else '-'} | "
                     f"{rps if rps is not None else '-'} | {r['peak_rss_mib']:.0f} | "
                     f"{r['load_start']:.2f} / {r['load_end']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
