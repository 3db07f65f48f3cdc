"""The trainer: 1..N members on one batch stream.

N = 1 is independent training. N >= 2 is deep mutual learning: member i minimises
BCE(p_i, y) + L2_i + alpha * mean_{j != i} D(p_i, sg(p_j))  (SPEC.md equation 3).
With frozen ``teachers`` the peers of every member are the teachers instead: distillation.
All members see the same batch, read and moved to the device once per step; each has its own
optimizers, schedule, best checkpoint and metrics; the group shares one resumable checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mutualctr import atomic
from mutualctr.errors import CheckpointError, TrainingError
from mutualctr.training import checkpoint
from mutualctr.training.config import PRECISIONS, MutualConfig, RunConfig, TrainConfig, run_config_to_dict
from mutualctr.training.losses import bce, peer_term
from mutualctr.training.metrics import auc, logloss
from mutualctr.training.optim import Schedule, build_optimizers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def eval_batch(batch_size: int, device: torch.device) -> int:
    """Rows per evaluation forward; ``0`` picks one for the device.

    On CPU small batches are fastest: the (B, F*D) activations of 2048 rows stay in the L2
    cache, and DeepFM/DCN/PNN score ~1.5-3x faster than at 32768 rows (measured, 2-core Xeon).
    On a GPU large batches amortise the launches.
    """
    if batch_size > 0:
        return batch_size
    return 2048 if torch.device(device).type == "cpu" else 65536


def autocast(precision: str, device: torch.device):
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} ({' or '.join(PRECISIONS)})")
    return contextlib.nullcontext()


@torch.inference_mode()
def predict_logits(model: nn.Module, X: np.ndarray, batch_size: int, device: torch.device,
                   precision: str = "fp32") -> np.ndarray:
    """Logits for every row of a (rows, F) id matrix, in order (``batch_size`` 0: auto)."""
    was_training = model.training
    model.eval()
    batch_size = eval_batch(batch_size, device)
    out = np.empty(len(X), dtype=np.float32)
    with autocast(precision, device):
        for start in range(0, len(X), batch_size):
            ids = torch.from_numpy(np.asarray(X[start:start + batch_size], dtype=np.int64)).to(device)
            out[start:start + len(ids)] = model(ids).float().cpu().numpy()
    model.train(was_training)
    return out


def scores(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return {"auc": auc(labels, logits), "logloss": logloss(labels, probs), "rows": int(len(labels))}


@dataclass
class Member:
    """One trainable model of the group, with its own config and run directory."""

    config: RunConfig
    model: nn.Module
    run_dir: Path
    init_from: str | None = None  # the run it started from (finetuning)
    start: dict[str, Any] | None = None  # dev/test metrics before training (finetuning)
    # filled by the trainer
    optimizers: list = field(default_factory=list)
    schedule: Schedule | None = None
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.model_name


def model_payload(member: Member, store, step: int, epoch: float, dev: dict | None) -> dict[str, Any]:
    """What a best.pt holds: enough to evaluate, predict or finetune without the group."""
    return {
        "kind": "model",
        "model": member.config.model_name,
        "config": run_config_to_dict(member.config),
        "state_dict": member.best_state if member.best_state is not None else member.model.state_dict(),
        "fingerprint": store.fingerprint,
        "store_path": str(Path(store.path).resolve()),
        "num_features": store.feature_map.num_features,
        "num_fields": store.feature_map.num_fields,
        "step": step,
        "epoch": epoch,
        "dev": dev,
        "init_from": member.init_from,
    }


class Trainer:
    def __init__(self, store, members: list[Member], out: Path, train: TrainConfig,
                 mutual: MutualConfig | None = None, teachers: list[nn.Module] = (),
                 quiet: bool = False, finetune: bool = False, parallel=None, vectorize: bool = False):
        """``parallel``: this process's place among torchrun workers (see
        :mod:`mutualctr.distributed`); ``members`` are then only the members this process holds.
        The default is one process holding every member. ``vectorize``: run this process's
        members (one architecture) as one vmapped forward (:mod:`mutualctr.training.group`)."""
        from mutualctr.distributed.context import Local

        if not members:
            raise ValueError("a trainer needs at least one member")
        self.par = parallel if parallel is not None else Local(len(members))
        if len(self.par.member_ids) != len(members):
            raise ValueError(f"this process holds members {self.par.member_ids}, got {len(members)} members")
        self.store = store
        self.members = members
        self.out = Path(out)
        self.train_cfg = train
        self.mutual = mutual or MutualConfig(alpha=0.0)
        self.teachers = list(teachers)
        self.quiet = quiet
        self.finetune = finetune
        self.device = resolve_device(train.device)
        if train.threads > 0:
            torch.set_num_threads(train.threads)
        from mutualctr.data.loader import BatchLoader

        X, y = store.split("train")
        self.loader = BatchLoader(X, y, batch_size=train.batch_size, shuffle=True, seed=train.seed,
                                  prefetch=train.prefetch)
        self.batches = None
        if self.par.data_size > 1:
            from mutualctr.distributed.shard import ShardedBatches

            self.batches = ShardedBatches(self.loader, self.par.data_rank, self.par.data_size)
        self._weight = 1.0  # this worker's share of the global batch (data parallelism)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise TrainingError(f"{store.path}: the train split is empty")
        self.dev = store.split("dev")
        self.test = store.split("test")
        for m in self.members:
            m.model.to(self.device)
            m.optimizers = build_optimizers(m.model, m.config.optim)
            m.schedule = Schedule(m.config.optim, m.optimizers, self.steps_per_epoch)
        for t in self.teachers:
            t.to(self.device).eval()
            for p in t.parameters():
                p.requires_grad_(False)
        if train.compile:
            if vectorize:
                raise TrainingError("train.compile and --vectorize do not combine: the vectorised group calls "
                                    "the members' layers functionally, around their compiled forward; use one")
            if self.device.type == "cpu":
                cxx = os.environ.get("CXX", "g++")  # what inductor's CPU backend runs
                if shutil.which(cxx) is None:
                    raise TrainingError(f"train.compile needs a C++ compiler for torch.compile on CPU: {cxx!r} "
                                        "is not on PATH (install g++ or set CXX), or train without --compile")
            for m in self.members:
                m.model.compile()  # in place: state_dict keys and checkpoints stay those of the plain model
        self.vectorised = None
        if vectorize:  # after the moves to the device: it holds the models' constant buffers
            from mutualctr.training.group import VectorisedGroup

            self.vectorised = VectorisedGroup([m.model for m in self.members])
        self.ckpt_path = self.out / "checkpoints" / "last.pt"
        self.eval_points = self._eval_points()

    # ---- schedule of evaluations ------------------------------------------------------
    def _eval_points(self) -> set[int]:
        """Within-epoch batch counts after which dev is evaluated (the last is the epoch end)."""
        n = self.steps_per_epoch
        if self.train_cfg.eval_every > 0:
            pts = set(range(self.train_cfg.eval_every, n + 1, self.train_cfg.eval_every))
        else:
            k = min(self.train_cfg.evals_per_epoch, n)
            pts = {round(n * (i + 1) / k) for i in range(k)}
        pts.add(n)
        return pts

    # ---- one step -----------------------------------------------------------------------
    def group_losses(self, ids: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """Each member's loss L_i = BCE + L2 + alpha * peer term, peers detached."""
        from mutualctr.models import l2_penalty

        if self.vectorised is not None:
            logits = [z.float() for z in self.vectorised(ids)]
        else:
            logits = [m.model(ids).float() for m in self.members]  # fp32 losses under bf16 autocast
        alpha = self.mutual.alpha
        if self.teachers and alpha != 0.0:
            with torch.no_grad():
                teacher_logits = [t(ids).float() for t in self.teachers]
        every = logits
        if alpha != 0.0 and not self.teachers:
            every = self.par.exchange(logits)  # all N members' logits, the remote ones detached
        losses = []
        for i, (m, z) in enumerate(zip(self.members, logits)):
            gi = self.par.member_ids[i]
            loss = bce(z, labels) + l2_penalty(m.model, ids)
            if alpha != 0.0:
                peers = teacher_logits if self.teachers else [q.detach() for j, q in enumerate(every) if j != gi]
                loss = loss + alpha * peer_term(self.mutual.loss, z, peers)
            losses.append(loss)
        return losses

    def _step(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimisation step of every member; returns the (N,) detached losses.

        Data parallelism: this worker's batch is a shard of the global batch; ``par.sync`` sums
        the replicas' gradients weighted by ``self._weight`` (shard rows / global rows) and
        returns the global losses.
        """
        for m in self.members:
            for opt in m.optimizers:
                opt.zero_grad(set_to_none=True)
        if len(labels) == 0:  # a global batch smaller than the number of data workers
            local = torch.zeros(len(self.members), device=self.device)
        else:
            with autocast(self.train_cfg.precision, self.device):
                losses = self.group_losses(ids, labels)
            # Members share no parameters and peers are detached, so one backward of the sum gives
            # each member exactly the gradient of its own loss.
            torch.stack(losses).sum().backward()
            local = torch.stack([l.detach() for l in losses])
        losses = self.par.sync(self.members, local, self._weight)
        for m in self.members:
            for opt in m.optimizers:
                opt.step()
        return losses

    # ---- evaluation ---------------------------------------------------------------------
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        X, y = self.dev if split == "dev" else self.test
        lo, hi = self.par.shard(len(y))  # data workers score a shard each; the AUC is exact
        logits = predict_logits(model, X[lo:hi], self.train_cfg.eval_batch_size, self.device,
                                self.train_cfg.precision)
        return scores(np.asarray(y), self.par.gather_rows(logits, len(y)))

    # ---- checkpoints --------------------------------------------------------------------
    @staticmethod
    def _member_state(m: Member) -> dict[str, Any]:
        return {
            "model": m.model.state_dict(),
            "optimizers": [o.state_dict() for o in m.optimizers],
            "schedule": m.schedule.state_dict(),
            "best": m.best,
            "best_state": m.best_state,
            "history": m.history,
            "config": run_config_to_dict(m.config),
        }

    @staticmethod
    def _rng_state() -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }

    def _member_file(self, gi: int, step: int) -> Path:
        return self.ckpt_path.parent / "members" / f"m{gi}.step{step}.pt"

    def _save_group(self, state: dict[str, Any]) -> None:
        par = self.par
        if not par.sharded_members:
            # this process holds every member (data-parallel replicas hold identical copies)
            if par.is_main:
                checkpoint.save(self.ckpt_path, {"kind": "group", "fingerprint": self.store.fingerprint,
                                                 "members": [self._member_state(m) for m in self.members],
                                                 "rng": self._rng_state(), **state})
            return
        # Members live in several processes: a two-phase commit. Each member's writer saves its
        # member at this step; when all have, rank 0 replaces last.pt (naming those files) in one
        # rename; only then are older member files removed. A crash at any point leaves last.pt
        # naming a complete set of files, all at the same step.
        step = state["step"]
        if par.is_writer:
            for m, gi in zip(self.members, par.member_ids):
                checkpoint.save(self._member_file(gi, step), {
                    "kind": "member", "index": gi, "step": step, "fingerprint": self.store.fingerprint,
                    "member": self._member_state(m), "rng": self._rng_state()})
        par.barrier("the checkpoint commit (member files)")
        if par.is_main:
            names = [str(self._member_file(gi, step).relative_to(self.ckpt_path.parent))
                     for gi in range(par.num_members)]
            checkpoint.save(self.ckpt_path, {"kind": "group", "fingerprint": self.store.fingerprint,
                                             "members": None, "member_files": names,
                                             "rng": self._rng_state(), **state})
        par.barrier("the checkpoint commit (group file)")
        if par.is_writer:
            for gi in par.member_ids:
                keep = self._member_file(gi, step).name
                for old in self._member_file(gi, step).parent.glob(f"m{gi}.step*.pt"):
                    if old.name != keep:
                        old.unlink(missing_ok=True)

    def _load_group(self) -> dict[str, Any]:
        """Load last.pt into this process's members; either layout (one file, or member files)
        resumes in any mode: one process, data-parallel, or members spread over workers."""
        ck = checkpoint.load(self.ckpt_path)
        checkpoint.check_store(ck, self.store, self.ckpt_path)
        files = ck.get("member_files")
        held = len(files) if files else len(ck.get("members") or [])
        if ck.get("kind") != "group" or held != self.par.num_members:
            raise CheckpointError(f"{self.ckpt_path}: holds {held} members, "
                                  f"this run has {self.par.num_members}")
        rng = ck["rng"]
        for m, gi in zip(self.members, self.par.member_ids):
            if files:
                path = self.ckpt_path.parent / files[gi]
                mf = checkpoint.load(path)
                if mf.get("index") != gi or mf.get("step") != ck["step"]:
                    raise CheckpointError(f"{path}: member {mf.get('index')} at step {mf.get('step')}, but "
                                          f"{self.ckpt_path} expects member {gi} at step {ck['step']}")
                s, rng = mf["member"], mf["rng"]
            else:
                s = ck["members"][gi]
            if s["config"]["model"] != run_config_to_dict(m.config)["model"]:
                raise CheckpointError(f"{self.ckpt_path}: member {m.name} was saved with another model config")
            m.model.load_state_dict(s["model"])
            for o, os_ in zip(m.optimizers, s["optimizers"]):
                o.load_state_dict(os_)
            m.schedule.load_state_dict(s["schedule"])
            m.best, m.best_state, m.history = s["best"], s["best_state"], s["history"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        steps = self.par.all_gather_object(int(ck["step"]))
        if len(set(steps)) != 1:
            raise CheckpointError(f"{self.ckpt_path}: the workers would resume at different steps {steps}; "
                                  f"every worker must see the same --out directory (a shared filesystem)")
        return ck

    def _write_member_files(self, m: Member) -> None:
        m.run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(m.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in m.history))

    # ---- the loop -----------------------------------------------------------------------
    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        cfg = self.train_cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        step, epoch, batch_in_epoch, bad_evals, elapsed = 0, 0, 0, 0, 0.0
        done = False
        if resume:
            if not self.ckpt_path.is_file():
                raise CheckpointError(f"{self.ckpt_path}: nothing to resume (no checkpoint yet); run without --resume")
            ck = self._load_group()
            step, epoch, batch_in_epoch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
            bad_evals, elapsed, done = ck["bad_evals"], ck["elapsed"], ck["done"]
        par = self.par
        for m in self.members if par.is_writer else ():
            m.run_dir.mkdir(parents=True, exist_ok=True)
            atomic.write_text(m.run_dir / "config.yaml", _yaml(run_config_to_dict(m.config)))
            atomic.write_json(m.run_dir / "store.json", {"path": str(Path(self.store.path).resolve()),
                                                           "fingerprint": self.store.fingerprint})
        total_steps = cfg.epochs * self.steps_per_epoch
        progress = _Progress(total_steps, step, self.quiet or not par.is_main, len(self.members))
        loss_sum = torch.zeros(len(self.members), device=self.device)
        loss_n = 0
        t_window, rows_window = time.perf_counter(), 0
        try:
            while not done and epoch < cfg.epochs:
                for batch in self._epoch(epoch, batch_in_epoch):
                    ids, labels, global_rows = batch
                    ids = ids.to(self.device, non_blocking=True)
                    labels = labels.to(self.device, non_blocking=True)
                    for m in self.members:
                        m.schedule.set_step(step)
                    par.step = step
                    self._weight = len(labels) / global_rows
                    losses = self._step(ids, labels)
                    step += 1
                    batch_in_epoch += 1
                    rows_window += global_rows
                    loss_sum += losses
                    loss_n += 1
                    if self.device.type == "cpu" or step % 50 == 0:
                        if not bool(torch.isfinite(losses).all()):
                            bad = [m.name for m, l in zip(self.members, losses.tolist()) if not math.isfinite(l)]
                            last = f"{self.ckpt_path} (step {self._ckpt_step()})" if self.ckpt_path.is_file() else "none yet"
                            raise TrainingError(f"non-finite loss at step {step} (member {', '.join(bad)}); "
                                                f"stopped; the last good checkpoint is {last}")
                    progress.advance(losses, len(labels))
                    if batch_in_epoch in self.eval_points:
                        now = time.perf_counter()
                        sps = rows_window / max(now - t_window, 1e-9)
                        elapsed += now - t_window
                        improved = self._evaluate_all(step, epoch + batch_in_epoch / self.steps_per_epoch,
                                                      (loss_sum / max(loss_n, 1)).tolist(), sps, progress)
                        loss_sum.zero_()
                        loss_n = 0
                        bad_evals = 0 if improved else bad_evals + 1
                        if batch_in_epoch == self.steps_per_epoch:
                            epoch, batch_in_epoch = epoch + 1, 0
                        if cfg.patience and bad_evals >= cfg.patience:
                            done = True
                        if epoch >= cfg.epochs:
                            done = True
                        self._save_group(dict(step=step, epoch=epoch, batch_in_epoch=batch_in_epoch,
                                              bad_evals=bad_evals, elapsed=elapsed, done=done))
                        t_window, rows_window = time.perf_counter(), 0
                        if done:
                            break
                else:
                    continue
                break
        finally:
            progress.close()
        return self._finish(elapsed, step)

    def _epoch(self, epoch: int, start_batch: int):
        """(ids, labels, global batch rows): this worker's part of each global batch."""
        if self.batches is not None:
            return self.batches.epoch(epoch, start_batch=start_batch)
        return ((ids, labels, len(labels)) for ids, labels in self.loader.epoch(epoch, start_batch=start_batch))

    def _ckpt_step(self) -> int:
        try:
            return int(checkpoint.load(self.ckpt_path)["step"])
        except CheckpointError:
            return -1

    def _evaluate_all(self, step: int, epoch: float, train_losses: list[float], sps: float, progress) -> bool:
        par = self.par
        improved = False
        lines = []
        for m, tl in zip(self.members, train_losses):
            dev = self.evaluate(m.model, "dev")
            m.schedule.observe(dev["auc"])
            rec = {"step": step, "epoch": round(epoch, 4), "lr": m.schedule.lr, "train_loss": tl,
                   "dev_auc": dev["auc"], "dev_logloss": dev["logloss"], "samples_per_s": round(sps, 1)}
            m.history.append(rec)
            if m.best is None or dev["auc"] > m.best["dev_auc"]:
                improved = True
                m.best = {"step": step, "epoch": round(epoch, 4), "dev_auc": dev["auc"], "dev_logloss": dev["logloss"]}
                m.best_state = {k: v.detach().to("cpu", copy=True) for k, v in m.model.state_dict().items()}
                if par.is_writer:
                    checkpoint.save(m.run_dir / "checkpoints" / "best.pt",
                                    model_payload(m, self.store, step, epoch,
                                                  {"auc": dev["auc"], "logloss": dev["logloss"]}))
            if par.is_writer:
                self._write_member_files(m)
            lines.append(f"step {step} epoch {epoch:.2f} {m.name}: dev AUC {dev['auc']:.5f} "
                         f"logloss {dev['logloss']:.5f} (train loss {tl:.5f}, {sps:,.0f} samples/s)")
        if par.sharded_members:
            # the group's decisions (patience) need every member; rank 0 logs every member
            every = par.all_gather_object((improved, par.member_ids, lines) if par.is_writer else None)
            improved = any(e[0] for e in every if e is not None)
            by_id = {gi: line for e in every if e is not None for gi, line in zip(e[1], e[2])}
            lines = [by_id[gi] for gi in sorted(by_id)]
        for line in lines:
            progress.log(line)
        return improved

    def _finish(self, elapsed: float, step: int) -> list[dict[str, Any]]:
        results = []
        for m in self.members:
            current = copy.deepcopy(m.model.state_dict())
            m.model.load_state_dict(m.best_state)
            dev = self.evaluate(m.model, "dev")
            test = self.evaluate(m.model, "test")
            m.model.load_state_dict(current)
            summary = {
                "model": m.name,
                "run_dir": str(m.run_dir),
                "init_from": m.init_from,
                "seed": self.train_cfg.seed,
                "best_step": m.best["step"],
                "best_epoch": m.best["epoch"],
                "dev_auc": dev["auc"], "dev_logloss": dev["logloss"],
                "test_auc": test["auc"], "test_logloss": test["logloss"],
                "steps": step,
                "train_time_s": round(elapsed, 2),
                "samples_per_s": round(step * self.train_cfg.batch_size / elapsed, 1) if elapsed > 0 else None,
                "start": m.start,
                "fingerprint": self.store.fingerprint,
            }
            if self.par.is_writer:
                atomic.write_json(m.run_dir / "summary.json", summary)
            results.append(summary)
        return results


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


class _Progress:
    """A rich progress bar with loss, samples/s and ETA; silent in quiet mode."""

    def __init__(self, total: int, done: int, quiet: bool, n_members: int):
        self.quiet = quiet
        self.n = 0
        self.loss = float("nan")
        self._pending = 0
        if quiet:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[sps]} samples/s"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)
        self.task = self.bar.add_task("train", total=total, completed=done, loss="-", sps="-")
        self.t0 = time.perf_counter()
        self.rows = 0
        self.bar.start()

    def advance(self, losses: torch.Tensor, rows: int) -> None:
        if self.quiet:
            return
        self.n += 1
        self.rows += rows
        self._pending += 1
        if self.n % 20 == 0:
            sps = self.rows / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, advance=self._pending, loss=f"{float(losses.mean()):.4f}", sps=f"{sps:,.0f}")
            self._pending = 0

    def log(self, msg: str) -> None:
        if not self.quiet:
            self.bar.console.print(msg)

    def close(self) -> None:
        if not self.quiet:
            self.bar.update(self.task, advance=self._pending)
            self.bar.stop()
