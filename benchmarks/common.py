"""Shared pieces of the benchmark suite: machine header, trainer construction, path modes."""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

# Modes of the training path, all on the same Trainer step:
#   fast       the defaults: mark-based unique rows shared by the tables, fused Adam/RowAdam
#   reference  the previous path: torch.unique (sort) per table, elementwise RowAdam, unfused Adam
#   bf16       fast + train.precision bf16 (bf16 autocast of the forward, and of evaluation)
#   compile    fast + train.compile (each member's forward through torch.compile)
#   bf16-compile  bf16 + train.compile
#   plain      F.embedding (PyTorch's embedding backward) with a dense table gradient and
#              torch's dense Adam on the whole table: what a plain PyTorch CTR model does
# default: the shipped config untouched, what a user gets without flags (precision auto: bf16
# where the CPU has it natively; evaluation in fp32, as the trainer scores); the others pin
# their precision and compile switch
MODES = ("default", "fast", "reference", "bf16", "compile", "bf16-compile", "plain")


def eval_precision(trainer, mode: str) -> str:
    """The precision a benchmark scores ``trainer``'s model in: the trainer's own choice (fp32)
    on the default path, else the training precision of the mode."""
    return "fp32" if mode == "default" else trainer.train_cfg.precision


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """torch's CPU capability: the ATen kernel level it dispatches to (DEFAULT, AVX2, AVX512, ...)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # older torch
        return "unknown"


def header() -> dict:
    """The machine every figure was measured on: CPU model (lscpu's model name), torch's CPU
    capability, native bf16 flags, versions, threads and the load average at start."""
    flags = ""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": platform.machine(), "cpu": cpu_name(), "cpu_capability": cpu_capability(),
        "cores": os.cpu_count(),
        "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(), "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "gpu": "not measured (no GPU on this machine)" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
    }


def header_line(h: dict) -> str:
    """One line for the top of every table: the CPU model and torch's CPU capability beside the figures."""

    def yes(key: str) -> str:
        return "yes" if h.get(key) else "no"

    gpu = h.get("gpu", "")
    gpu = "" if not gpu or gpu.startswith("not measured") else f", GPU {gpu}"
    return (f"# {h['date_utc']} UTC, {h['cpu']} ({h['cores']} cores, torch CPU capability "
            f"{h.get('cpu_capability', 'unknown')}, AVX512-BF16 {yes('avx512_bf16')}, AMX-BF16 {yes('amx_bf16')}){gpu}, "
            f"Python {h['python']}, torch {h['torch']} ({h['torch_threads']} threads), numpy {h['numpy']}; "
            f"load average {h['load_avg_start'][0]:.1f} {h['load_avg_start'][1]:.1f} {h['load_avg_start'][2]:.1f} at start")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def median(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def mode_train(train, mode: str):
    """``train`` (a TrainConfig) with the precision and the compile switch of path ``mode``."""
    if mode == "default":
        return train
    return replace(train, precision="bf16" if mode.startswith("bf16") else "fp32", compile="compile" in mode)


def mode_config(cfg, mode: str):
    """``cfg`` (a RunConfig) for path ``mode``: its optimizers, precision and compile switch."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    optim = cfg.optim
    if mode == "reference":
        optim = replace(optim, fused=False)
    elif mode == "plain":
        optim = replace(optim, embedding_optimizer="dense", fused=False)
    return replace(cfg, optim=optim, train=mode_train(cfg.train, mode))


def activate(trainer) -> None:
    """Before a step of ``trainer``: forget the distinct rows its cache remembers. The cache is
    keyed on the ids tensor, so of several trainers stepping on the same batch only the first
    would pay for them (1-2 ms of a 20-60 ms step) if they shared it: an A/B of modes would
    credit that to whichever mode steps second."""
    trainer.row_cache.clear()


def build_trainer(store, models: list[str], out, seed: int = 0, mode: str = "fast", alpha: float = 1.0,
                  batch_size: int | None = None, quiet: bool = True, vectorize: bool = False,
                  device: str = "cpu"):
    """A Trainer on ``store`` (a Store or a path) with the shipped criteo config of each model
    (batch 4000, emb 16, MLP [400, 200, 100], row-wise Adam), 1 epoch, on ``device`` (the CPU
    unless told), no prefetch thread, on the path of ``mode``."""
    from mutualctr.models import set_plain
    from mutualctr.training.jobs import build, default_config, open_store
    from mutualctr.training.config import MutualConfig
    from mutualctr.training.trainer import Member, Trainer

    if isinstance(store, (str, Path)):
        store = open_store(store)
    members = []
    for i, name in enumerate(models):
        cfg = default_config(name, "criteo")
        cfg.train = replace(cfg.train, epochs=1, device=device, prefetch=0,
                            batch_size=batch_size or cfg.train.batch_size)
        cfg = mode_config(cfg, mode)
        model = build(cfg, store, seed=seed + i)
        set_plain(model, mode == "plain")
        members.append(Member(config=cfg, model=model, run_dir=Path(out) / f"m{i}-{name}"))
    mutual = MutualConfig(alpha=alpha) if len(members) > 1 else None
    trainer = Trainer(store, members, Path(out), members[0].config.train, mutual=mutual, quiet=quiet,
                      vectorize=vectorize)
    if mode in ("reference", "plain"):
        trainer.row_cache.method = "sort"  # torch.unique, the previous path
    return trainer


def step(trainer, ids, labels, step_no: int) -> float:
    """One ``Trainer.step`` (schedules set as the trainer's loop does); returns seconds."""
    activate(trainer)
    for m in trainer.members:
        m.schedule.set_step(step_no)
    t = time.perf_counter()
    losses = trainer.step(ids, labels)
    float(losses.sum())  # the loop's finiteness check reads the losses every CPU step
    return time.perf_counter() - t


def write_report(out: Path, stem: str, res: dict, lines: list[str]) -> None:
    """Print the table and write OUT/STEM.json (the results) and OUT/STEM.txt (the table)."""
    import json

    text = "\n".join(lines)
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / f"{stem}.txt").write_text(text + "\n")
