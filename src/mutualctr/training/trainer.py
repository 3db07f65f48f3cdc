"""The trainer: 1..N members on one batch stream.

N = 1 is independent training. N >= 2 is deep mutual learning: member i minimises
BCE(p_i, y) + L2_i + alpha * mean_{j != i} D(p_i, sg(p_j))  (SPEC.md equation 3).
With frozen ``teachers`` the peers of every member are the teachers instead: distillation.
All members see the same batch, read and moved to the device once per step; each has its own
optimizers, schedule, best checkpoint and metrics; the group shares one resumable checkpoint.

This file is the loop. The files it writes are :mod:`mutualctr.training.rundir`'s, the state
it carries is :class:`~mutualctr.training.state.LoopState`, scoring is
:mod:`mutualctr.training.inference`, the device and compile set-up :mod:`.device`.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from mutualctr.data.loader import BatchLoader, inputs_and_labels
from mutualctr.distributed.context import Local
from mutualctr.distributed.shard import ShardedBatches
from mutualctr.errors import CheckpointError, TrainingError
from mutualctr.models import Features, RowCache, l2_penalty, use_row_cache
from mutualctr.progress import Bar
from mutualctr.results import Evaluation, RunResult
from mutualctr.runtime import RuntimeOptions, options_of
from mutualctr.training.config import MutualConfig, TrainConfig, run_config_to_dict, train_with_runtime
from mutualctr.training.device import (
    autocast, compile_models, keep_freed_memory, resolve_compile, resolve_device, resolve_precision, warn_if_cpu_contended,
)
from mutualctr.training.group import VectorisedGroup
from mutualctr.training.inference import predict_logits, scores
from mutualctr.training.losses import bce, peer_term
from mutualctr.training.member import Member
from mutualctr.training.rundir import Checkpointer, ModelCheckpoint
from mutualctr.training.state import LoopState, seed_everything, set_rng_state
from mutualctr.training.tblog import TensorBoardLog

__all__ = ["Member", "Trainer"]


class Trainer:
    def __init__(self, store, members: list[Member], out: Path, train: TrainConfig,
                 mutual: MutualConfig | None = None, teachers: list[nn.Module] = (), parallel=None,
                 start_is_candidate: bool = False, options: RuntimeOptions | None = None,
                 title: str | None = None, **values):
        """``parallel``: this process's place among torchrun workers (see
        :mod:`mutualctr.distributed`); ``members`` are then only the members this process holds.
        The default is one process holding every member. ``start_is_candidate`` (finetuning):
        each member is evaluated on dev before the first step and that point competes for
        best-on-dev, so no member ends below its start. ``options`` (``values`` replace single
        ones): how it runs (:class:`~mutualctr.runtime.RuntimeOptions`): the device, precision
        and compile replace ``train``'s; ``vectorize`` runs this process's members (one
        architecture) as one vmapped forward (:mod:`mutualctr.training.group`); ``tensorboard``
        also writes each evaluation as TensorBoard scalars into that directory. ``title``: a
        line printed above the progress when training starts (the alpha of a search)."""
        if not members:
            raise ValueError("a trainer needs at least one member")
        self.par = parallel if parallel is not None else Local(len(members))
        if len(self.par.member_ids) != len(members):
            raise ValueError(f"this process holds members {self.par.member_ids}, got {len(members)} members")
        self.options = opts = options_of(options, **values)
        self.store, self.members, self.out = store, members, Path(out)
        self.train_cfg = train = train_with_runtime(train, opts)
        self.mutual = mutual or MutualConfig(alpha=0.0)
        self.is_group, self.title = mutual is not None, title
        self.teachers = list(teachers)
        self.quiet = opts.quiet
        self.start_is_candidate = start_is_candidate
        self.device = resolve_device(train.device)
        self.precision = resolve_precision(train.precision, self.device, resuming=opts.resume)
        threads = train.threads if opts.threads is None else opts.threads
        if threads > 0:
            torch.set_num_threads(threads)
        if self.device.type == "cpu":
            keep_freed_memory()  # process-wide, like the threads: a step's tensors reuse their pages
        store.require_both_classes("train", "dev")  # no gradient signal, or no model selection, otherwise
        self.loader, self.batches = self._batch_source()
        self.steps_per_epoch = len(self.loader)
        compiles = resolve_compile(train.compile, self.steps_per_epoch * train.epochs, self.device, opts.vectorize)
        # chosen once: the run records fp32 or bf16 and true or false (config.yaml, summary.json),
        # so a resume, even on another machine, continues as it started
        self.train_cfg = train = replace(train, precision=self.precision, compile=compiles)
        for m in members:
            m.config.train = replace(m.config.train, precision=self.precision, compile=compiles)
        self.dev, self.test = store.split("dev"), store.split("test")
        self.row_cache = RowCache()  # the batch's distinct rows, shared by every table
        for m in self.members:
            m.prepare(self.device, self.steps_per_epoch)
            use_row_cache(m.model, self.row_cache)
        for t in self.teachers:
            t.to(self.device).eval().requires_grad_(False)
        if train.compile:
            compile_models([m.model for m in self.members], self.device, opts.vectorize)
        self.vectorised = None
        if opts.vectorize:  # after the moves to the device: it holds the models' constant buffers
            self.vectorised = VectorisedGroup([m.model for m in self.members])
        self.checkpoints = Checkpointer(self.out, self.par, store.fingerprint)
        self.eval_points = self._eval_points()
        self._ckpt_t0, self._ckpt_interval = None, None  # see _checkpoint_due
        self.tensorboard = None
        if opts.tensorboard is not None and self.par.is_writer:
            self.tensorboard = TensorBoardLog(opts.tensorboard)
        self._weight = 1.0  # this worker's share of the global batch (data parallelism)

    def _batch_source(self):
        X, y = self.store.split("train")
        cfg = self.train_cfg
        lo, hi = (round(len(y) * f) for f in cfg.row_range)
        X, y = X[lo:hi], y[lo:hi]
        loader = BatchLoader(X, y, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, prefetch=cfg.prefetch)
        if len(loader) == 0:
            raise TrainingError(f"{self.store.path}: the train split is empty")
        if self.par.data_size == 1:
            return loader, None
        return loader, ShardedBatches(loader, self.par.data_rank, self.par.data_size)

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

    def step(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimisation step of every member on a batch; returns the (N,) detached losses.

        Data parallelism: this worker's batch is a shard of the global batch; ``par.sync`` sums
        the replicas' gradients weighted by this worker's share of the global batch and returns
        the global losses.
        """
        for m in self.members:
            for opt in m.optimizers:
                opt.zero_grad(set_to_none=True)
        if len(labels) == 0:  # a global batch smaller than the number of data workers
            local = torch.zeros(len(self.members), device=self.device)
        else:
            with autocast(self.precision, self.device):
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

    def logits(self, model: nn.Module, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, logits) of ``split``, every row, in order (data workers score a shard each)."""
        X, y = self.dev if split == "dev" else self.test
        lo, hi = self.par.shard(len(y))
        # scored in fp32 whatever the training precision: summary.json then agrees with
        # `evaluate`, `predict` and the fp32 export of the same weights
        logits = predict_logits(model, X[lo:hi], self.train_cfg.eval_batch_size, self.device)
        return np.asarray(y), self.par.gather_rows(logits, len(y))

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        return scores(*self.logits(model, split))

    # ---- the loop -----------------------------------------------------------------------
    def fit(self, resume: bool = False) -> list[RunResult]:
        """Train until the epochs are done or patience runs out; returns each member's summary."""
        cfg = self.train_cfg
        seed_everything(cfg.seed)
        state = self._resume() if resume else None
        for m in self.members if self.par.is_writer else ():
            m.files.write_start_files(run_config_to_dict(m.config), self.store)
        if self.device.type == "cpu" and self.par.is_main:  # one warning, not one per worker
            warn_if_cpu_contended(torch.get_num_threads())
        progress = _TrainProgress(cfg.epochs * self.steps_per_epoch, state.step if state else 0,
                                  self.quiet or not self.par.is_main)
        if self.title:
            progress.log(self.title)
        try:
            if state is None:
                state = LoopState()
                if self.start_is_candidate:
                    self._evaluate_all(state, [None] * len(self.members), None, progress)
            window = _Window(len(self.members), self.device, state)
            watch = _Divergence(cfg.divergence_factor, state, self.device)
            while not state.done:
                for ids, labels, global_rows in self._epoch(state):
                    losses = self._advance(state, ids, labels, global_rows)
                    window.add(losses, global_rows)
                    at_eval = state.batch_in_epoch in self.eval_points
                    due = not at_eval and self._checkpoint_due(state)
                    # checked before any checkpoint: none is written of a diverged model
                    watch.check(state.step, losses, self.members, self.checkpoints, force=at_eval or due)
                    progress.advance(losses, len(labels))
                    if at_eval:
                        self._eval_point(state, window, progress)
                        if state.done:
                            break
                    elif due:
                        window.keep(state)
                        self.checkpoints.save(state, [m.state() for m in self.members])
        finally:
            progress.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
        return self._finish(state)

    def _checkpoint_due(self, state: LoopState) -> bool:
        """A mid-epoch checkpoint every ``train.checkpoint_every`` seconds, as a step interval
        fixed after the first steps (the same on every worker and across resumes: rank 0's)."""
        every = self.train_cfg.checkpoint_every
        if every <= 0:
            return False
        if self._ckpt_interval is None:
            if self._ckpt_t0 is None:
                self._ckpt_t0 = (time.perf_counter(), state.step)
                return False
            t0, s0 = self._ckpt_t0
            if state.step - s0 < 10:
                return False
            per_step = (time.perf_counter() - t0) / (state.step - s0)
            self._ckpt_interval = int(self.par.all_gather_object(max(1, round(every / max(per_step, 1e-9))))[0])
        return state.step % self._ckpt_interval == 0

    def _resume(self) -> LoopState | None:
        """The loop state of the last checkpoint, loaded into the members; None (a fresh start)
        when the run was stopped before its first checkpoint."""
        if not self.checkpoints.exists():
            done = [p for m in self.members for p in (m.files.path / "summary.json", m.files.best) if p.exists()]
            if done:  # never start again over a run's results (issue 28)
                raise CheckpointError(f"{self.out}: cannot resume: its checkpoint {self.checkpoints.last} is missing "
                                      f"but the run has results ({done[0]}); nothing was changed (train into "
                                      "another --out to start again)")
            if self.par.is_main:
                print(f"nothing to resume in {self.out} (no checkpoint yet): starting from the beginning",
                      file=sys.stderr)
            return None
        loop, states, rng = self.checkpoints.load(self.store)
        for m, s in zip(self.members, states):
            m.restore(s, self.checkpoints.last)
        set_rng_state(rng)
        return loop

    def _epoch(self, state: LoopState):
        """(ids, labels, global batch rows): this worker's part of each global batch, from the
        batch the loop stands at."""
        if self.batches is not None:
            return self.batches.epoch(state.epoch, start_batch=state.batch_in_epoch)
        pairs = (inputs_and_labels(b) for b in self.loader.epoch(state.epoch, start_batch=state.batch_in_epoch))
        return ((inputs, labels, len(labels)) for inputs, labels in pairs)

    def _advance(self, state: LoopState, ids: torch.Tensor, labels: torch.Tensor, global_rows: int) -> torch.Tensor:
        ids = ids.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        for m in self.members:
            m.schedule.set_step(state.step)
        self.par.step = state.step
        self._weight = len(labels) / global_rows
        losses = self.step(ids, labels)
        state.step += 1
        state.batch_in_epoch += 1
        # reading the losses waits for the device: on a GPU only every 50 steps
        if (self.device.type == "cpu" or state.step % 50 == 0) and not bool(torch.isfinite(losses).all()):
            bad = [m.name for m, l in zip(self.members, losses.tolist()) if not math.isfinite(l)]
            raise TrainingError(f"non-finite loss at step {state.step} (member {', '.join(bad)}); stopped; "
                                f"the last good checkpoint is {self.checkpoints.describe_last()}")
        return losses

    def _eval_point(self, state: LoopState, window: "_Window", progress: "_TrainProgress") -> None:
        """Evaluate every member on dev, decide early stopping, checkpoint the group."""
        cfg = self.train_cfg
        train_losses, sps, seconds = window.close(state)
        state.elapsed += seconds
        improved = self._evaluate_all(state, train_losses, sps, progress)
        state.bad_evals = 0 if improved else state.bad_evals + 1
        if state.batch_in_epoch == self.steps_per_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        state.done = state.epoch >= cfg.epochs or bool(cfg.patience and state.bad_evals >= cfg.patience)
        window.reset(state)
        self.checkpoints.save(state, [m.state() for m in self.members])
        window.restart_clock()

    def _evaluate_all(self, state: LoopState, train_losses: list[float | None], sps: float | None,
                      progress) -> bool:
        """Each member's dev metrics, recorded and kept when best; True when any improved.
        Before the first step (the start as a candidate) there are no losses nor speed."""
        par = self.par
        epoch = state.epoch + state.batch_in_epoch / self.steps_per_epoch
        improved, lines = False, []
        for i, (m, tl) in enumerate(zip(self.members, train_losses)):
            dev = self.evaluate(m.model, "dev")
            m.schedule.observe(dev["auc"])
            ev = Evaluation(step=state.step, epoch=round(epoch, 4), lr=m.schedule.lr, train_loss=tl,
                            dev_auc=dev["auc"], dev_logloss=dev["logloss"],
                            samples_per_s=None if sps is None else round(sps, 1))
            m.history.append(ev.to_dict())
            if ev.beats(m.best):
                improved = True
                m.keep_best(ev.best_point())
                if par.is_writer:
                    self._best_checkpoint(m, state.step, epoch, dev).save(m.files.best)
            if par.is_writer:
                m.files.write_metrics(m.history)
            if self.tensorboard is not None:
                self.tensorboard.evaluation(m.run_dir.name, m.history[-1])
            trained = "the start" if tl is None else f"train loss {tl:.5f}, {sps:,.0f} samples/s"
            lines.append(f"step {state.step} epoch {epoch:.2f} {self._label(m, par.member_ids[i])}: dev AUC {dev['auc']:.5f} "
                         f"logloss {dev['logloss']:.5f} ({trained})")
        if par.sharded_members:
            # the group's decisions (patience) need every member; rank 0 logs every member
            every = par.all_gather_object((improved, par.member_ids, lines) if par.is_writer else None)
            improved = any(e[0] for e in every if e is not None)
            by_id = {gi: line for e in every if e is not None for gi, line in zip(e[1], e[2])}
            lines = [by_id[gi] for gi in sorted(by_id)]
        for line in lines:
            progress.log(line)
        return improved

    def _label(self, m: Member, index: int) -> str:
        """How progress lines name a member: its model, and in a group its index and seed."""
        if not self.is_group:
            return m.name
        return f"m{index} {m.name} s{m.config.train.seed if m.seed is None else m.seed}"

    def _best_checkpoint(self, m: Member, step: int, epoch: float, dev: dict[str, float]) -> ModelCheckpoint:
        fm = self.store.feature_map
        return ModelCheckpoint(model=m.name, config=run_config_to_dict(m.config), state_dict=m.best_state,
                               fingerprint=self.store.fingerprint, store_path=str(Path(self.store.path).resolve()),
                               num_features=fm.num_features, num_fields=fm.num_fields, step=step, epoch=epoch,
                               dev={"auc": dev["auc"], "logloss": dev["logloss"]}, init_from=m.init_from,
                               vocab_fingerprint=self.store.vocab_fingerprint, features=Features.of(fm).to_dict(),
                               layout=getattr(m.model, "layout", None) and m.model.layout.to_dict())

    def _finish(self, state: LoopState) -> list[RunResult]:
        """Each member's best-on-dev weights scored on dev and test: the run's summary."""
        results = []
        problem = self.store.split_problem("test")
        for m in self.members:
            current = {k: v.detach().clone() for k, v in m.model.state_dict().items()}
            m.model.load_state_dict(m.best_state)
            dev = self.evaluate(m.model, "dev")
            labels, m.test_logits = self.logits(m.model, "test")
            test = scores(labels, m.test_logits)
            m.model.load_state_dict(current)
            summary = RunResult(
                model=m.name, run_dir=str(m.run_dir), init_from=m.init_from, seed=self.train_cfg.seed,
                best_step=m.best["step"], best_epoch=m.best["epoch"],
                dev_auc=dev["auc"], dev_logloss=dev["logloss"], test_auc=test["auc"], test_logloss=test["logloss"],
                steps=state.step, train_time_s=round(state.elapsed, 2),
                samples_per_s=(round(state.step * self.train_cfg.batch_size / state.elapsed, 1)
                               if state.elapsed > 0 else None),
                start=m.start, fingerprint=self.store.fingerprint, precision=self.precision,
                kept_start=m.best["step"] == 0 if self.start_is_candidate else None,
                warnings=[problem] if problem else None)
            if self.par.is_writer:
                m.files.write_summary(summary)
            results.append(summary)
        return results


class _Window:
    """The training losses and throughput since the last evaluation. Its sums live in the loop
    state too (:meth:`keep`), so that a run resumed from a mid-epoch checkpoint reports the
    same mean losses at its next evaluation as the uninterrupted run."""

    def __init__(self, n_members: int, device: torch.device, state: LoopState):
        kept = state.window
        self.loss_sum = torch.tensor(kept["loss_sum"] if kept else [0.0] * n_members, dtype=torch.float32,
                                     device=device)
        self.steps, self.rows = (kept["steps"], kept["rows"]) if kept else (0, 0)
        self.seconds = kept["seconds"] if kept else 0.0
        self.t0 = time.perf_counter()

    def keep(self, state: LoopState) -> None:
        state.window = {"loss_sum": self.loss_sum.tolist(), "steps": self.steps, "rows": self.rows,
                        "seconds": self.seconds + time.perf_counter() - self.t0}

    def reset(self, state: LoopState) -> None:
        self.loss_sum.zero_()
        self.steps, self.rows, self.seconds = 0, 0, 0.0
        state.window = None

    def restart_clock(self) -> None:
        self.t0 = time.perf_counter()

    def add(self, losses: torch.Tensor, rows: int) -> None:
        self.loss_sum += losses
        self.steps += 1
        self.rows += rows

    def close(self, state: LoopState) -> tuple[list[float], float, float]:
        """(mean loss per member, samples/s, seconds) of the window."""
        seconds = self.seconds + time.perf_counter() - self.t0
        return (self.loss_sum / max(self.steps, 1)).tolist(), self.rows / max(seconds, 1e-9), seconds


class _Divergence:
    """Stops a run whose training loss runs away (a learning rate far too large), from the
    first steps on: the mean loss of the last ``WINDOW`` steps (fewer at the start: those after
    the first) above ``factor`` times the larger of the member's first-step loss and ln 2 (the
    loss of a coin flip, so a member that starts near-perfect, a finetuning, keeps room), or a
    non-finite loss. Read back every step on a CPU; on a GPU every ``GPU_EVERY`` steps and
    before every evaluation and checkpoint, so no checkpoint is written of a diverged model.
    docs/training.md justifies the rule."""

    WINDOW, GPU_EVERY = 5, 10

    def __init__(self, factor: float, state: LoopState, device: torch.device):
        self.factor = factor
        self.recent: list[torch.Tensor] = []
        self.pending = 0
        self.base = None if state.loss_base is None else torch.tensor(state.loss_base)
        self.state, self.every = state, 1 if device.type == "cpu" else self.GPU_EVERY

    def check(self, step: int, losses: torch.Tensor, members, checkpoints, force: bool = False) -> None:
        if not self.factor:
            return
        if self.base is None:
            self.base = losses.detach().float().cpu()
            self.state.loss_base = self.base.tolist()
            return
        self.recent = [*self.recent[-(self.WINDOW - 1):], losses.detach().float()]
        self.pending += 1
        if self.pending < self.every and not force:
            return
        self.pending = 0
        mean = torch.stack(self.recent).mean(0).cpu()
        limit = self.factor * torch.clamp(self.base, min=math.log(2))
        far = ~(mean <= limit)  # nan counts
        if bool(far.any()):
            raise TrainingError(self._message(step, mean, limit, far, members, checkpoints))

    def _message(self, step: int, mean, limit, far, members, checkpoints) -> str:
        last = f"; the last good checkpoint is {checkpoints.describe_last()}"
        if not bool(torch.isfinite(mean).all()):
            bad = [m.name for m, x in zip(members, mean.tolist()) if not math.isfinite(x)]
            return f"non-finite loss at step {step} (member {', '.join(bad)}); stopped{last}"
        bad = ", ".join(f"{m.name} {float(b):.4g} -> {float(x):.4g}"
                        for m, b, x, f in zip(members, self.base, mean, far) if f)
        n = len(self.recent)
        what = "the last step's loss" if n == 1 else f"the mean loss of the last {n} steps"
        return (f"the training loss ran away at step {step} ({bad}: {what} is over {self.factor:g}x the first "
                "step's (at least ln 2); a learning rate too large? train.divergence_factor: 0 turns this check "
                f"off); stopped{last}")


class _TrainProgress:
    """The training bar: steps, loss, samples/s, ETA; refreshed every 20 steps (reading the
    loss waits for the device)."""

    def __init__(self, total: int, done: int, quiet: bool):
        self.bar = Bar("[bold]train", "<bar>", "<n/total>", "loss {task.fields[loss]}",
                       "{task.fields[sps]} samples/s", "<elapsed>", "ETA", "<remaining>", quiet=quiet)
        self.task = self.bar.add("train", total, completed=done, loss="-", sps="-")
        self.t0, self.steps, self.rows, self.pending = time.perf_counter(), 0, 0, 0

    def advance(self, losses: torch.Tensor, rows: int) -> None:
        if self.bar.quiet:
            return
        self.steps += 1
        self.rows += rows
        self.pending += 1
        if self.steps % 20 == 0:
            sps = self.rows / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, advance=self.pending, loss=f"{float(losses.mean()):.4f}", sps=f"{sps:,.0f}")
            self.pending = 0

    def log(self, msg: str) -> None:
        """Print ``msg`` as it is (rich markup escaped: a path or a label may hold brackets)."""
        if self.bar.quiet:
            return
        self.bar.log(escape(msg))

    def close(self) -> None:
        self.bar.update(self.task, advance=self.pending)
        self.bar.close()
