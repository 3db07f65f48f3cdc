"""Does bf16 cost a mutual group test AUC? The whole protocol in fp32 and in bf16, over seeds.

    python -m benchmarks.bench_precision_group --data stores/criteo137k_seq
        [--models deepfm,dcn,dcnv2,pnn] [--seeds 0,1,2] [--out bench_out/prec_group]

For each seed and precision, as a user runs it: ``mutualctr train`` of each model (the shipped
config, ``--precision P --seed S``), then ``mutualctr mutual --init`` of the four runs with
``--alpha auto`` (the alpha chosen on dev) in the same precision. Reported per member: the test
AUC after pretraining and after the group, fp32 and bf16, the mean paired difference (bf16 -
fp32) over seeds and the seed-to-seed spread of fp32; and the alpha each group chose.
Resumable: finished runs and groups (their summary.json / group.json) are kept. ``--threads 1``
is passed to every command (AUC, not speed, is measured here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import header, header_line, write_report

PRECISIONS = ("fp32", "bf16")


def cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "mutualctr", *args, "--threads", "1", "--quiet"]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")


def one(data: str, models: list[str], seed: int, precision: str, out: Path) -> dict:
    """Pretrain each model and finetune them as one group; the test AUCs and the chosen alpha."""
    runs = []
    for m in models:
        run = out / f"s{seed}-{precision}" / m
        if not (run / "summary.json").is_file():
            cli("train", "--data", data, "--model", m, "--seed", str(seed), "--precision", precision, "--out", str(run))
        runs.append(run)
    group = out / f"s{seed}-{precision}" / "group"
    if not (group / "group.json").is_file():
        cli("mutual", "--data", data, "--init", *map(str, runs), "--alpha", "auto", "--seed", str(seed),
            "--precision", precision, "--out", str(group))
    g = json.loads((group / "group.json").read_text())
    alone = [json.loads((r / "summary.json").read_text())["test_auc"] for r in runs]
    return {"alone": alone, "group": [m["test_auc"] for m in g["members"]], "alpha": g["settings"]["alpha"],
            "recorded": sorted({m.get("precision") for m in g["members"]} - {None})}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", default="deepfm,dcn,dcnv2,pnn")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("bench_out/prec_group"))
    a = ap.parse_args(argv)
    h = header()
    print(header_line(h), flush=True)
    models, seeds = a.models.split(","), [int(s) for s in a.seeds.split(",")]
    res = {s: {p: one(a.data, models, s, p, a.out) for p in PRECISIONS} for s in seeds}
    lines = [header_line(h), f"# {a.data}; group {a.models} (alpha auto); seeds {a.seeds}",
             f"{'member':8s} {'stage':6s} {'fp32 AUC (mean)':>16s} {'bf16 - fp32':>20s} {'fp32 sd (seeds)':>16s}"]
    for i, m in enumerate(models):
        for stage in ("alone", "group"):
            fp32 = [res[s]["fp32"][stage][i] for s in seeds]
            diff = [res[s]["bf16"][stage][i] - res[s]["fp32"][stage][i] for s in seeds]
            lines.append(f"{m:8s} {stage:6s} {statistics.mean(fp32):>16.5f} {statistics.mean(diff):>+11.5f} +- "
                         f"{statistics.stdev(diff):.5f} {statistics.stdev(fp32):>16.5f}")
    lines.append("alpha chosen (fp32 / bf16): " + ", ".join(
        f"seed {s} {res[s]['fp32']['alpha']} / {res[s]['bf16']['alpha']}" for s in seeds))
    write_report(a.out, "precision-group", {"header": h, "args": vars(a) | {"out": str(a.out)}, "seeds": res}, lines)
    return res


if __name__ == "__main__":
    main()
