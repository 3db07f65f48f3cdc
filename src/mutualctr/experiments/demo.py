"""`mutualctr demo`: the main job end to end on embedded synthetic data.

1. ``data.synth`` writes Criteo-format rows from a hidden logistic model with pairwise
   interactions (so its ceiling AUC is known);
2. ``data.prepare`` turns them into a store (random 80/10/10 split);
3. RQ1 + RQ2 with the controls for DeepFM and DCN, 3 instances each, with the paper's
   architectures (embedding 16, MLP [400, 200, 100], Adam, exponential decay), the demo's
   short schedule (written to OUT/configs/, editable) and the default finetuning protocol
   (alpha chosen on dev, the start a candidate; docs/training.md);
4. prints Table 1 with the controls and churn, the alpha curve, the significance tests, where
   everything is, and last what the run found, in words (:mod:`.findings`; also in tables.md).

Every step is cached: a second `mutualctr demo` reuses the data, the store and the runs.
How long it runs is measured in one place: docs/performance.md, "The demo". Without
``--threads``, when other processes keep the cores busy (the trainer's CPU contention check),
the demo runs with one torch thread instead of only advising it, and says so.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from mutualctr import atomic
from mutualctr.data import prepare, synth
from mutualctr.experiments import findings, report, runner
from mutualctr.training import device
from mutualctr.training import jobs as api
from mutualctr.training.config import run_config_to_dict

# Sized for a few minutes on 2 idle CPU cores; the measured time is in docs/performance.md
# ("The demo"), and only there. alpha auto costs one finetuning per alpha tried, so the demo's
# grid is two decades apart (10, 1000; extended by ten past a winning end, as everywhere).
DEFAULT_ROWS = 160_000
MODELS = ("deepfm", "dcn")
INSTANCES = 3
DEMO_TRAIN = {"batch_size": 1000, "epochs": 2, "evals_per_epoch": 1, "patience": 1}
DEMO_LR = 1e-3
DEMO_ALPHA_GRID = [10.0, 1000.0]


def demo_configs(out: Path) -> Path:
    """OUT/configs/<model>.yaml: the Criteo configs with the demo's short schedule."""
    d = Path(out) / "configs"
    for m in MODELS:
        cfg = run_config_to_dict(api.default_config(m, "criteo"))
        cfg["train"].update(DEMO_TRAIN)
        cfg["optim"]["lr"] = DEMO_LR
        cfg["mutual"]["alpha_grid"] = list(DEMO_ALPHA_GRID)
        text = (f"# {m} for `mutualctr demo`: the paper's architecture, a short schedule for the small data.\n"
                + yaml.safe_dump(cfg, sort_keys=False))
        path = d / f"{m}.yaml"
        if not path.is_file() or path.read_text() != text:
            atomic.write_text(path, text)
    return d


def demo_threads(threads: Optional[int], echo=print) -> Optional[int]:
    """The demo's torch threads: ``threads`` when given (> 0); else torch's default, unless other
    processes keep the cores busy (the check of :func:`mutualctr.training.device.contention_advice`,
    off with ``MUTUALCTR_CPU_CHECK=0``): then 1, said in one line. Slower threads than cores
    stall each other (docs/performance.md, "Threads on a shared CPU"); the demo acts on that
    rather than only warn, as the results of a demo matter less than its finishing in time."""
    if threads or os.environ.get("MUTUALCTR_CPU_CHECK", "1") == "0":
        return threads
    default, cores = torch.get_num_threads(), len(os.sched_getaffinity(0))
    others = device.others_cpu_load()
    if others is None or device.contention_advice(default, cores, others) is None:
        return threads
    echo(f"other processes keep {others:.1f} of this machine's {cores} cores busy: the demo runs with 1 "
         f"torch thread instead of {default} (faster on shared cores; --threads N chooses)")
    return 1


def _name_the_data(stats_path: Path, words: str) -> dict[str, Any]:
    """stats.json with ``data`` = ``words``, and tables.md rendered again, so that its "What this
    run found" names the data as synthetic (the store alone says Criteo format)."""
    stats = json.loads(stats_path.read_text())
    if stats.get("data") != words:
        stats["data"] = words
        atomic.write_text(stats_path, json.dumps(stats, indent=2, default=float))
        report.rerender(stats_path.parent)
    return stats


def run_demo(out: str | Path = "demo_out", rows: Optional[int] = None, quiet: bool = False,
             seed: int = 0, echo=print, threads: Optional[int] = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(out)
    rows = DEFAULT_ROWS if rows is None else rows
    if rows < 1000:
        raise ValueError(f"--rows: at least 1000 rows are needed, got {rows}")
    raw = out / "data" / f"synthetic_{rows}_seed{seed}.tsv"
    meta = raw.with_name(raw.name + ".meta.json")
    if raw.is_file() and meta.is_file():
        ceiling = json.loads(meta.read_text())["ceiling_auc"]
        if not quiet:
            echo(f"[1/3] {rows:,} synthetic Criteo-format rows: cached in {raw}")
    else:
        if not quiet:
            echo(f"[1/3] generating {rows:,} synthetic Criteo-format rows -> {raw}")
        raw.parent.mkdir(parents=True, exist_ok=True)
        ceiling = synth.generate(rows, raw, seed=seed, progress=not quiet).ceiling_auc
    if not quiet:
        echo(f"[2/3] preparing the store (random 80/10/10 split) -> {out / 'store'}")
    prep = prepare.prepare("criteo", [raw], out / "store", split="random", seed=seed, progress=not quiet,
                           overwrite=True)
    cfg_dir = demo_configs(out)
    if not quiet:
        echo(f"[3/3] RQ1 + RQ2 with controls: {', '.join(MODELS)} x {INSTANCES} instances "
             f"(configs in {cfg_dir}); runs cached in {out / 'experiment' / 'runs'}")
    res = runner.run_experiment(["rq1", "rq2"], prep.store.path, out / "experiment", list(MODELS),
                                instances=INSTANCES, config_dir=cfg_dir, quiet=quiet, reference=False,
                                threads=demo_threads(threads, echo))
    parsed = report.read_results(Path(res["paths"]["results"]))
    stats = _name_the_data(Path(res["paths"]["stats"]), f"synthetic data ({rows:,} rows)")
    seconds = time.perf_counter() - t0
    text = ["", f"Synthetic data: {rows:,} rows. The generator's true click probabilities score AUC {ceiling:.4f} "
                "on all its labels: the ceiling a model can reach, up to sampling noise.", "",
            "Table 1 (test AUC; RelaImp against the mean of the independent runs; churn = mean |p_i - p_j| "
            "between the members on test, before -> after finetuning; kept start = members whose finetuning "
            "never beat their start on dev):", "",
            report.table1(parsed, None, None), "",
            report.grid_table(parsed, stats.get("choices", {})), "",
            report.significance(parsed, stats.get("bootstrap", [])), "",
            f"Tables: {res['paths']['tables']}", f"Results: {res['paths']['results']}",
            "Plots: " + ", ".join(res["paths"]["plots"]), "", f"{findings.SECTION}:", "",
            findings.render(parsed, stats, stats["data"], report.LABELS, width=100), "",
            f"Demo finished in {seconds / 60:.1f} min."]
    echo("\n".join(text))
    return {**res, "ceiling_auc": ceiling, "demo_seconds": seconds}
