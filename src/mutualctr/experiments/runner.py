"""RQ1-RQ4 orchestration on top of :mod:`mutualctr.training.jobs`, with a run cache.

Every training job lives in ``OUT/runs/<kind>-<key>`` where ``key`` hashes the job kind, the
members' full run configs (model, optimizer, loop, seed), the job settings (alpha, lr, ...,
the keys of the runs it starts from) and the store fingerprint. A job whose ``summary.json``
(single run) or ``group.json`` (group) exists is not run again; one with
``checkpoints/last.pt`` but no result is resumed; anything else in its directory (an
interruption before the first checkpoint) is discarded and the job starts over. So questions
share runs (RQ2 starts from RQ1's independent runs, RQ3/RQ4 from the same), a rerun skips
finished work, and an interrupted experiment resumes where it stopped.

An experiment is planned, then run: :meth:`Experiment.plan` enumerates the jobs of the questions
as :class:`~mutualctr.experiments.plan.JobSpec` (each shared job once, done or to run, nothing
trained or written); :meth:`Experiment.run` runs the first job still to run and plans again,
since a result may decide the jobs after it (see :mod:`mutualctr.experiments.plan`); the rows
are then read from the complete plan (:meth:`Experiment.collect`).

The questions (SPEC.md, issue 6):

- RQ1: per model, ``instances`` independent runs (seeds) and one mutual-from-scratch group of
  ``instances`` members with the same seeds.
- RQ2: the independent runs as pretrained members, mutually finetuned (the group settings of the
  model's config, ``mutual:``; by default one epoch, alpha chosen on dev from a log grid extended
  past an end that wins, see :func:`mutualctr.training.jobs.search_alphas`), for every (alpha,
  finetune lr) tried; the setting with the best mean dev AUC is reported. Each member's start is a
  candidate for its best-on-dev point, so no member reports a dev AUC below its start. Controls
  at the chosen lr: alpha = 0 (continued training, same budget), the ensemble average of the
  pretrained members, and distillation from the best-on-dev pretrained member (the teacher,
  frozen) into each *other* pretrained member, finetuned with the same epoch, lr and
  beta = the chosen alpha, so only the peer differs from DML (a frozen best model instead of
  live peers).
- RQ3: the best-on-dev pretrained instance of each model, finetuned as one mixed group (grid
  chosen on dev) vs the same instance in its RQ2 same-model group.
- RQ4: for one model, 5 pretrained instances (extra seeds trained when ``instances`` < 5),
  ranked on dev; groups of the top 5, 4, 3, 2, finetuned with the setting RQ2 chose for it.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from mutualctr import atomic, outdir
from mutualctr.config import ConfigError, check_seeds, to_dict
from mutualctr.experiments import report
from mutualctr.experiments.plan import JOB_DIRS, MARKERS, Job, JobSpec, Plan, Rq1Jobs, Rq2Jobs, Rq3Jobs, Rq4Jobs
from mutualctr.experiments.progress import ExperimentProgress
from mutualctr.experiments.stats import bootstrap_auc_diff
from mutualctr.models import MODELS, canonical_model_name
from mutualctr.runtime import PRECISIONS
from mutualctr.training import jobs as jobs_api
from mutualctr.training.config import run_config_to_dict, with_group_overrides, with_overrides
from mutualctr.training.device import resolve_device, resolve_precision
from mutualctr.training.inference import predict_logits
from mutualctr.training.jobs import choose_alpha, search_alphas

QUESTIONS = ("rq1", "rq2", "rq3", "rq4")
RQ4_SIZES = (5, 4, 3, 2)
# Paper: Table 3 is FiBiNET on Avazu, Table 4 DCN on Criteo.
RQ4_DEFAULT = {"avazu": "fibinet", "criteo": "dcn"}


def parse_questions(question: str | Sequence[str]) -> list[str]:
    qs = [question] if isinstance(question, str) else list(question)
    out: list[str] = []
    for q in qs:
        for part in str(q).lower().split(","):
            part = part.strip()
            if part == "all":
                out.extend(QUESTIONS)
            elif part in QUESTIONS:
                out.append(part)
            elif part:
                raise ConfigError(f"unknown question {part!r} (rq1, rq2, rq3, rq4, all)")
    if not out:
        raise ConfigError("no question given (rq1, rq2, rq3, rq4, all)")
    return [q for q in QUESTIONS if q in out]


@dataclass
class Settings:
    questions: list[str]
    models: list[str]
    instances: int = 4
    seeds: list[int] = field(default_factory=list)
    config_dir: Optional[Path] = None
    epochs: Optional[int] = None
    alphas: Optional[list[float]] = None  # None: auto (the group config's alpha_grid, extended)
    finetune_lrs: Optional[list[float]] = None  # None: the group config's lr
    finetune_split: float = 0.0  # > 0: pretrain on the first 1 - F of the train split, finetune on the rest
    scope: Optional[str] = None  # the group config's unless given (all | dense)
    embedding_lr_scale: Optional[float] = None
    runs_dir: Optional[Path] = None  # the run cache (default OUT/runs); experiments may share one
    precision: Optional[str] = None  # fp32 | bf16 | auto for every run; None: the configs' (auto)
    rq4_model: Optional[str] = None
    reference: Optional[bool] = None  # paper numbers beside ours; None = when Criteo/Avazu
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0

    def __post_init__(self):
        if self.instances < 2:
            raise ConfigError("--instances must be >= 2 (mutual learning needs at least two members)")
        if not self.models:
            raise ConfigError("--models: give at least one model")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"--models lists a model twice: {','.join(self.models)}")
        self.seeds = check_seeds("--seeds", self.seeds) or list(range(1, self.instances + 1))
        if len(self.seeds) != self.instances:
            raise ConfigError(f"--seeds has {len(self.seeds)} values for --instances {self.instances}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("--seeds: seeds must differ")
        if self.alphas is not None and (not self.alphas or any(not a >= 0 for a in self.alphas)):
            raise ConfigError("--alpha: give auto or numbers >= 0")
        if self.finetune_lrs is not None and (not self.finetune_lrs or any(not lr > 0 for lr in self.finetune_lrs)):
            raise ConfigError("--finetune-lr: give numbers > 0")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError("--epochs must be >= 1")
        if not 0.0 <= self.finetune_split < 1.0:
            raise ConfigError(f"--finetune-split must be in [0, 1), got {self.finetune_split}")
        if self.scope not in (None, "all", "dense"):
            raise ConfigError(f"--scope: expected all or dense, got {self.scope!r}")
        if self.embedding_lr_scale is not None and not self.embedding_lr_scale > 0:
            raise ConfigError(f"--embedding-lr-scale must be > 0, got {self.embedding_lr_scale}")
        if self.precision not in (None, *PRECISIONS):
            raise ConfigError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def rq4_seeds(self) -> list[int]:
        seeds = list(self.seeds)
        nxt = max(seeds) + 1
        while len(seeds) < max(RQ4_SIZES):
            seeds.append(nxt)
            nxt += 1
        return seeds

    def to_json(self) -> dict[str, Any]:
        return {"questions": self.questions, "models": self.models, "instances": self.instances,
                "seeds": self.seeds, "config_dir": str(self.config_dir) if self.config_dir else None,
                "epochs": self.epochs, "alphas": self.alphas or "auto", "finetune_lrs": self.finetune_lrs,
                "finetune_split": self.finetune_split, "scope": self.scope,
                "embedding_lr_scale": self.embedding_lr_scale, "rq4_model": self.rq4_model, "bootstrap_resamples": self.bootstrap_resamples,
                "bootstrap_seed": self.bootstrap_seed} | ({"precision": self.precision} if self.precision else {})


# train settings that change how fast a run goes, not what it computes: not part of a run's key,
# so changing them (or their defaults) reuses the finished runs
_SPEED_ONLY = ("eval_batch_size", "threads", "prefetch")


def _key_config(cfg) -> dict[str, Any]:
    """The part of a run config that identifies its result (the cache key's config)."""
    d = run_config_to_dict(cfg)
    d["train"] = {k: v for k, v in d["train"].items() if k not in _SPEED_ONLY}
    # what the run will compute in: auto (the default) is fp32 or bf16 by the machine, so a cache
    # of fp32 runs made before auto was the default is reused where auto means fp32
    d["train"]["precision"] = resolve_precision(cfg.train.precision, resolve_device(cfg.train.device))
    d.pop("mutual", None)  # how the run would be finetuned is not part of what it is
    return d


def _as_dict(result) -> dict[str, Any]:
    """A job's typed result (:mod:`mutualctr.results`) as its file's JSON (a test's stand-in
    for the jobs may return the JSON itself)."""
    return result if isinstance(result, dict) else result.to_dict()


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Undecided(Exception):
    """An alpha search reached an alpha whose group has not run: what follows is not decided."""


@dataclass
class _Walk:
    """The state of one planning walk over the questions."""

    jobs: dict[str, JobSpec] = field(default_factory=dict)  # key -> job, in the order first needed
    question: str = ""
    provisional: bool = False  # the jobs needed now follow from results not known yet
    grids: dict[str, tuple[dict[tuple[float, float], Job], bool]] = field(default_factory=dict)


class Experiment:
    """Plans and runs the questions for one store and collects result rows."""

    def __init__(self, data: Path, out: Path, settings: Settings, quiet: bool = False,
                 progress=None, api_module=None):
        self.api = api_module or jobs_api
        self.data = Path(data)
        self.out = Path(out)
        self.settings = settings
        self.quiet = quiet
        self.store = self.api.open_store(self.data)
        self.fingerprint = self.store.fingerprint
        self.dataset = self.store.feature_map.dataset
        self.runs_dir = Path(settings.runs_dir) if settings.runs_dir else self.out / "runs"
        self.rows: list[dict[str, Any]] = []
        self.bootstrap: list[dict[str, Any]] = []
        self.choices: dict[str, Any] = {}
        self.progress = progress
        self._walk: Optional[_Walk] = None
        self._results: dict[str, dict[str, Any]] = {}  # job key -> result, once read or run
        self._configs: dict[str, Any] = {}
        self._seed_configs: dict[tuple[str, int], Any] = {}
        if settings.rq4_model is None:
            d = RQ4_DEFAULT.get(str(self.dataset))
            settings.rq4_model = d if d in settings.models else settings.models[0]

    # ---- configs ----------------------------------------------------------------------------
    def config(self, model: str, seed: int):
        """The model's config (read once per experiment, so an edit of configs/ while it runs
        cannot mix settings) with this seed, the --epochs override and, with --finetune-split F,
        the first 1 - F of the train split."""
        if (model, seed) not in self._seed_configs:
            if model not in self._configs:
                self._configs[model] = self.api.default_config(model, self.dataset, self.settings.config_dir)
            cfg = with_overrides(self._configs[model], seed=seed, epochs=self.settings.epochs,
                                 precision=self.settings.precision)
            if self.settings.finetune_split > 0:
                cfg.train = replace(cfg.train, row_range=(0.0, 1.0 - self.settings.finetune_split))
            self._seed_configs[(model, seed)] = (cfg, _key_config(cfg))
        return self._seed_configs[(model, seed)][0]

    def _config_key(self, model: str, seed: int) -> dict[str, Any]:
        self.config(model, seed)
        return self._seed_configs[(model, seed)][1]

    def group(self, model: str, alpha: float, lr: Optional[float]):
        """The group settings of a finetuning of ``model`` (its config's ``mutual:`` section with
        the experiment's options) at this alpha and learning rate."""
        st = self.settings
        return with_group_overrides(self.config(model, st.seeds[0]).mutual, alpha=alpha, lr=lr, scope=st.scope,
                                    embedding_lr_scale=st.embedding_lr_scale,
                                    finetune_split=st.finetune_split or None)

    # ---- the plan -----------------------------------------------------------------------------
    def plan(self) -> Plan:
        """The jobs the questions need (each shared job once, in the order they run) with their
        cached state, and per question the jobs its rows come from; nothing trains, nothing is
        written. Decisions on results not known yet are provisional (see :mod:`.plan`)."""
        self._walk = _Walk()
        plan = Plan([])
        try:
            for q in self.settings.questions:
                self._walk.question = q
                getattr(self, f"_plan_{q}")(plan)
            plan.jobs = list(self._walk.jobs.values())
            return plan
        finally:
            self._walk = None

    def _need(self, kind: str, model: str, payload: dict[str, Any], label: str, cost: float,
              fn: Callable[[Path, bool], dict[str, Any]]) -> Job:
        """Add a job to the plan being walked (once); its handle, with its result when done."""
        key = f"{kind}-{_hash({'kind': kind, 'fingerprint': self.fingerprint, **payload})}"
        d = self.runs_dir / key
        w = self._walk
        spec = w.jobs.get(key)
        if spec is None:
            spec = JobSpec(kind, key, d, label, model, w.question, cost, payload, fn,
                           done=key in self._results or (d / MARKERS[kind]).is_file(), provisional=w.provisional)
            w.jobs[key] = spec
        elif spec.provisional and not w.provisional:
            w.jobs[key] = replace(spec, provisional=False)
        if spec.done and key not in self._results:
            self._results[key] = json.loads((d / MARKERS[kind]).read_text())
        return Job(key, d, self._results.get(key))

    @contextmanager
    def _assuming(self, unknown: bool) -> Iterator[None]:
        """Jobs needed inside follow from a decision on results not known yet when ``unknown``."""
        before = self._walk.provisional
        self._walk.provisional = before or unknown
        try:
            yield
        finally:
            self._walk.provisional = before

    # ---- jobs -----------------------------------------------------------------------------
    def independent(self, model: str, seed: int) -> Job:
        cfg = self.config(model, seed)
        payload = {"configs": [self._config_key(model, seed)], "seeds": [seed], "settings": {}}

        def fn(d: Path, resume: bool):
            return self.api.train(self.data, d, cfg, resume=resume, quiet=self._trainer_quiet)

        return self._need("train", model, payload, f"independent {model} seed {seed}", cfg.train.epochs, fn)

    def scratch(self, model: str, seeds: Sequence[int]) -> Job:
        """RQ1's group from scratch, at the paper's setting alpha = 1 (RQ1 searches nothing)."""
        cfgs = [self.config(model, s) for s in seeds]
        group = replace(cfgs[0].mutual, alpha=1.0)
        settings = {"alpha": 1.0, "loss": group.loss, "epochs": self.settings.epochs}
        payload = {"configs": [self._config_key(model, s) for s in seeds], "seeds": list(seeds), "settings": settings}

        def fn(d: Path, resume: bool):
            return self.api.mutual(self.data, d, configs=cfgs, seeds=list(seeds), group=group, resume=resume,
                                   quiet=self._trainer_quiet)

        return self._need("scratch", model, payload, f"mutual from scratch {len(seeds)} x {model}",
                          len(seeds) * cfgs[0].train.epochs, fn)

    def finetune(self, model: str, init: Sequence[Job], alpha: float, lr: float, label: str) -> Job:
        group = self.group(model, alpha, lr)
        payload = {"init": [j.key for j in init], "settings": to_dict(group)}

        def fn(d: Path, resume: bool):
            return self.api.mutual(self.data, d, init=[j.dir for j in init], group=group, resume=resume,
                                   quiet=self._trainer_quiet)

        return self._need("finetune", model, payload, label, len(init) * group.epochs, fn)

    def distill(self, model: str, teacher: Job, students: Sequence[Job], beta: float, lr: float, label: str) -> Job:
        group = self.group(model, beta, lr)
        payload = {"teacher": teacher.key, "init": [j.key for j in students], "settings": to_dict(group)}

        def fn(d: Path, resume: bool):
            # One group whose peers are the frozen teacher only: each student is distilled
            # independently (no student sees another), in one pass over the data.
            return self.api.mutual(self.data, d, init=[j.dir for j in students], group=group,
                                   teachers=[teacher.dir], resume=resume, quiet=self._trainer_quiet)

        return self._need("distill", model, payload, label, len(students) * group.epochs + 0.5, fn)

    def ensemble(self, model: str, runs: Sequence[Job], label: str) -> Job:
        payload = {"runs": [j.key for j in runs], "settings": {}}

        def fn(d: Path, resume: bool):
            test = _as_dict(self.api.ensemble([j.dir for j in runs], self.data, "test"))
            dev = _as_dict(self.api.ensemble([j.dir for j in runs], self.data, "dev"))
            res = {"dev_auc": dev["auc"], "dev_logloss": dev["logloss"], "test_auc": test["auc"],
                   "test_logloss": test["logloss"], "members": test["members"], "churn": test.get("churn")}
            atomic.write_json(d / "ensemble.json", res)
            return res

        return self._need("ensemble", model, payload, label, 0.1 * len(runs), fn)

    @property
    def _trainer_quiet(self) -> bool:
        # rich allows one live display: the experiment's own progress replaces the trainer's.
        return self.quiet or self.progress is not None

    # ---- building blocks shared by the questions, and the decisions on results -------------------
    def pretrained(self, model: str, seeds: Optional[Sequence[int]] = None) -> list[Job]:
        return [self.independent(model, s) for s in (seeds or self.settings.seeds)]

    def grid(self, model: str, init: Sequence[Job], tag: str) -> tuple[dict[tuple[float, float], Job], bool]:
        """Finetunings of ``init`` for every (alpha, lr) tried: the --alpha list, or (auto) the
        group config's alpha grid extended past an end that wins on dev, per learning rate; and
        whether the grid is decided (every group in it done, no extension left to decide)."""
        st = self.settings
        grid: dict[tuple[float, float], Job] = {}
        decided = True
        for lr in st.finetune_lrs or [self.group(model, 0.0, None).lr]:
            def job(a: float, lr: float = lr) -> Job:
                if (a, lr) not in grid:
                    grid[(a, lr)] = self.finetune(model, init, a, lr, f"mutual finetune {tag} alpha {a:g} lr {lr:g}")
                return grid[(a, lr)]

            if st.alphas is not None:
                decided = all([job(a).result is not None for a in st.alphas]) and decided
            else:
                decided = _search(job, self.group(model, 1.0, lr).alpha_grid) and decided
        return grid, decided

    def rq2_grid(self, model: str) -> tuple[dict[tuple[float, float], Job], bool]:
        w = self._walk
        if model not in w.grids:
            pre = self.pretrained(model)
            w.grids[model] = self.grid(model, pre, f"{len(pre)} x {model}")
        return w.grids[model]

    def rq2_choice(self, model: str) -> tuple[tuple[float, float], Job, bool]:
        """RQ2's chosen (alpha, lr), its group, and whether the choice is decided."""
        grid, decided = self.rq2_grid(model)
        choice = _choose(grid, decided)
        return choice, grid[choice], decided

    def ranking(self, model: str, seeds: Optional[Sequence[int]] = None) -> tuple[list[int], bool]:
        """Instances (0-based, in seed order) ranked by dev AUC, best first, and whether that is
        known (seed order until every run is done)."""
        pre = self.pretrained(model, seeds)
        if any(j.result is None for j in pre):
            return list(range(len(pre))), False
        return sorted(range(len(pre)), key=lambda i: -pre[i].result["dev_auc"]), True

    # ---- the questions: their jobs ------------------------------------------------------------
    def _plan_rq1(self, plan: Plan) -> None:
        for model in self.settings.models:
            pre = self.pretrained(model)
            plan.rq1[model] = Rq1Jobs(pre, self.scratch(model, self.settings.seeds))

    def _plan_rq2(self, plan: Plan) -> None:
        for model in self.settings.models:
            pre = self.pretrained(model)
            grid, _ = self.rq2_grid(model)
            (alpha, lr), _, chosen = self.rq2_choice(model)
            with self._assuming(not chosen):
                ctrl = grid.get((0.0, lr)) or self.finetune(model, pre, 0.0, lr,
                                                            f"control alpha 0 {len(pre)} x {model} lr {lr:g}")
            ens = self.ensemble(model, pre, f"ensemble of {len(pre)} x {model}")
            ranked, ranked_known = self.ranking(model)
            t = ranked[0]
            students = [j for i, j in enumerate(pre) if i != t]
            beta = alpha if alpha > 0 else 1.0
            with self._assuming(not (chosen and ranked_known)):
                dist = self.distill(model, pre[t], students, beta, lr,
                                    f"distill {model} #{t + 1} -> {len(students)} others beta {beta:g} lr {lr:g}")
            plan.rq2[model] = Rq2Jobs(pre, grid, (alpha, lr), ctrl, ens, t, beta, dist)

    def _plan_rq3(self, plan: Plan) -> None:
        st = self.settings
        best, known = {}, True
        for m in st.models:
            ranked, k = self.ranking(m)
            best[m], known = ranked[0], known and k
        pre = {m: self.pretrained(m) for m in st.models}
        same = {m: self.rq2_choice(m)[1] for m in st.models}
        mixed = choice = None
        if len(st.models) >= 2:
            with self._assuming(not known):
                mixed, decided = self.grid(st.models[0], [pre[m][best[m]] for m in st.models],
                                           f"mixed {'+'.join(st.models)}")
            choice = _choose(mixed, decided)
        plan.rq3 = Rq3Jobs(best, pre, same, mixed, choice)

    def _plan_rq4(self, plan: Plan) -> None:
        model, seeds = self.settings.rq4_model, self.settings.rq4_seeds()
        pre = self.pretrained(model, seeds)
        (alpha, lr), _, chosen = self.rq2_choice(model)
        ranked, ranked_known = self.ranking(model, seeds)
        groups = []
        with self._assuming(not (chosen and ranked_known)):
            for k in RQ4_SIZES:
                if k > len(pre):
                    continue
                members = sorted(ranked[:k])  # seed order, so the group of all RQ2 instances is shared
                g = self.finetune(model, [pre[i] for i in members], alpha, lr,
                                  f"mutual finetune top-{k} {model} alpha {alpha:g} lr {lr:g}")
                groups.append((k, members, g))
        plan.rq4 = Rq4Jobs(model, seeds, pre, (alpha, lr), groups)

    # ---- running the plan -------------------------------------------------------------------
    def run(self, plan: Optional[Plan] = None) -> Plan:
        """Run the first job of the plan still to run, then plan again (its result may decide
        the jobs after it: an alpha extension, the chosen setting, the teacher, RQ4's ranking),
        until every job is done; returns that complete plan."""
        plan = plan or self.plan()
        shown = _Shown(self.progress, list(self.settings.questions))
        while True:
            job = plan.next()
            shown.done_before(plan, job)
            if job is None:
                return plan
            if job.provisional:
                raise RuntimeError(f"internal error: {job.label} would run on results not known yet")
            self._execute(job)
            shown.keys.add(job.key)
            plan = self.plan()
            if self.progress:
                self.progress.set_total(plan.total)

    def _execute(self, job: JobSpec) -> None:
        d = job.dir
        resume = (d / "checkpoints" / "last.pt").is_file()
        what = JOB_DIRS[job.kind]
        if d.exists() and not resume:
            outdir.remove(d, what)  # interrupted before its first checkpoint: start over
        d.mkdir(parents=True, exist_ok=True)
        outdir.write_marker(d, what)
        atomic.write_json(d / "job.json", {"kind": job.kind, "label": job.label, "fingerprint": self.fingerprint,
                                           "store": str(self.data), **job.payload})
        if self.progress:
            self.progress.start(job.label, job.cost, watch=[d], resumed=resume)
        result = _as_dict(job.run(d, resume))
        self._results[job.key] = result
        if self.progress:
            self.progress.finish(f"done {job.label}: {_brief(result)}")

    # ---- rows -------------------------------------------------------------------------------
    def collect(self, plan: Plan) -> None:
        """The result rows, bootstrap and choices of a complete plan (every job done)."""
        self.rows, self.bootstrap, self.choices = [], [], {}
        for q in self.settings.questions:
            getattr(self, f"_rows_{q}")(plan)

    def _row(self, question: str, model: str, setting: str, instance, r: dict[str, Any], run: Path | str,
             **extra) -> None:
        row = {"question": question, "model": model, "setting": setting, "n_models": extra.pop("n_models", ""),
               "instance": instance, "seed": extra.pop("seed", r.get("seed", "")),
               "alpha": extra.pop("alpha", ""), "lr": extra.pop("lr", ""),
               "dev_auc": r.get("dev_auc"), "dev_logloss": r.get("dev_logloss"),
               "test_auc": r.get("test_auc"), "test_logloss": r.get("test_logloss"),
               "start_test_auc": (r.get("start") or {}).get("test_auc", ""),
               "relaimp_vs_start": r.get("relaimp_test", ""),
               "selected": extra.pop("selected", ""), "run": str(run),
               "train_time_s": r.get("train_time_s", ""),
               "kept_start": int(r["kept_start"]) if "kept_start" in r else "",
               "test_ece": (r.get("calibration") or {}).get("ece", ""),
               "test_calibration": (r.get("calibration") or {}).get("ratio", "")}
        row.update(extra)
        self.rows.append(row)

    def _member_rows(self, question: str, setting: str, group: Job, instances: Sequence[int],
                     seeds: Sequence[int], **extra) -> None:
        churn = group.result.get("churn") or {}
        extra.update(churn=_abs_diff(churn.get("after")), churn_before=_abs_diff(churn.get("before")))
        for m, inst, seed in zip(group.result["members"], instances, seeds):
            self._row(question, m["model"], setting, inst, m, m.get("run_dir", group.dir), seed=seed, **extra)

    def _indep_rows(self, model: str, jobs: Sequence[Job], seeds: Sequence[int]) -> None:
        done = {(r["model"], r["setting"], r["instance"]) for r in self.rows}
        for i, (j, s) in enumerate(zip(jobs, seeds), 1):
            if (model, "independent", i) not in done:
                self._row("rq1", model, "independent", i, j.result, j.dir, seed=s,
                          lr=j.result.get("lr", ""))

    def _rows_rq1(self, plan: Plan) -> None:
        st = self.settings
        for model in st.models:
            r = plan.rq1[model]
            self._indep_rows(model, r.pretrained, st.seeds)
            self._member_rows("rq1", "mutual_scratch", r.scratch, range(1, st.instances + 1), st.seeds, alpha=1.0)

    def _rows_rq2(self, plan: Plan) -> None:
        st = self.settings
        inst = range(1, st.instances + 1)
        for model in st.models:
            r = plan.rq2[model]
            self._indep_rows(model, r.pretrained, st.seeds)
            alpha, lr = r.choice
            for (a, l), g in r.grid.items():
                self._member_rows("rq2", "mutual_pretrained", g, inst, st.seeds, alpha=a, lr=l,
                                  selected=int((a, l) == r.choice))
            self._member_rows("rq2", "alpha0_control", r.control, inst, st.seeds, alpha=0.0, lr=lr)
            self._row("rq2", model, "ensemble", "", r.ensemble.result, r.ensemble.dir, seed="",
                      churn=_abs_diff(r.ensemble.result.get("churn")))
            t = r.teacher
            others = [i + 1 for i in range(len(r.pretrained)) if i != t]
            self._member_rows("rq2", "distill", r.distill, others, [st.seeds[i - 1] for i in others],
                              alpha=r.beta, lr=lr, teacher=t + 1)
            self.choices[model] = {"alpha": alpha, "lr": lr, "teacher_instance": t + 1}
            self._bootstrap(model, t, r.pretrained[t], r.grid[r.choice], r.control)

    def _rows_rq3(self, plan: Plan) -> None:
        st, r = self.settings, plan.rq3
        for m in st.models:
            self._indep_rows(m, r.pretrained[m], st.seeds)
            i = r.best[m]
            pre, same = r.pretrained[m][i], r.same[m].result
            self._row("rq3", m, "pretrained_best", i + 1, pre.result, pre.dir, seed=st.seeds[i])
            self._row("rq3", m, "dml_same", i + 1, same["members"][i], same["members"][i]["run_dir"],
                      seed=st.seeds[i], alpha=same["settings"]["alpha"], lr=same["settings"]["lr"])
        if r.mixed is None:
            self.choices["rq3"] = "skipped: RQ3 needs at least two models"
            return
        self.choices["rq3_mixed"] = {"alpha": r.choice[0], "lr": r.choice[1]}
        for (a, lr), g in r.mixed.items():
            for m, mem in zip(st.models, g.result["members"]):
                i = r.best[m]
                self._row("rq3", m, "dml_different", i + 1, mem, mem["run_dir"], seed=st.seeds[i], alpha=a, lr=lr,
                          selected=int((a, lr) == r.choice))

    def _rows_rq4(self, plan: Plan) -> None:
        st, r = self.settings, plan.rq4
        self._indep_rows(r.model, r.pretrained[:st.instances], st.seeds)
        alpha, lr = r.choice
        for k, members, g in r.groups:
            for i in members:
                self._row("rq4", r.model, "pretrained", i + 1, r.pretrained[i].result, r.pretrained[i].dir,
                          seed=r.seeds[i], n_models=k)
            self._member_rows("rq4", "mutual_pretrained", g, [i + 1 for i in members], [r.seeds[i] for i in members],
                              n_models=k, alpha=alpha, lr=lr)
        self.choices["rq4"] = {"model": r.model, "alpha": alpha, "lr": lr, "seeds": r.seeds}

    # ---- bootstrap of the test-AUC difference ---------------------------------------------------
    def _bootstrap(self, model: str, t: int, pre: Job, finetuned: Job, control: Job) -> None:
        """Paired bootstrap over test rows for the best-on-dev instance: finetuned vs its own
        pretrained start, and finetuned vs the alpha-0 control of the same instance."""
        X, y = self.store.split("test")
        y = np.asarray(y)
        dev = resolve_device("auto")
        cache: dict[str, np.ndarray] = {}

        def logits(run) -> np.ndarray:
            run = str(run)
            if run not in cache:
                m, _, _ = self.api.load_run(run, self.store)
                m.to(dev)
                cache[run] = predict_logits(m, X, 0, dev)
            return cache[run]

        ft_run = finetuned.result["members"][t]["run_dir"]
        ctrl_run = control.result["members"][t]["run_dir"]
        for name, a, b in (("finetuned - pretrained", pre.dir, ft_run),
                           ("finetuned - alpha0 control", ctrl_run, ft_run)):
            ci = bootstrap_auc_diff(y, logits(a), logits(b), resamples=self.settings.bootstrap_resamples,
                                    seed=self.settings.bootstrap_seed)
            self.bootstrap.append({"model": model, "instance": t + 1, "comparison": name, "a": str(a), "b": str(b),
                                   **ci.as_dict()})


class _Shown:
    """What the progress display has shown: the done jobs it counted (a cached job once, in
    plan order, before the next job that runs) and the question headers."""

    def __init__(self, progress, questions: list[str]):
        self.progress = progress
        self.questions = questions  # whose header is still to show
        self.keys: set[str] = set()

    def done_before(self, plan: Plan, upto: Optional[JobSpec]) -> None:
        if self.progress is None:
            return
        for j in plan.jobs:
            if j is upto:
                break
            if j.done and j.key not in self.keys:
                self._phase(j.question)
                self.progress.skip(j.label, j.cost)
                self.keys.add(j.key)
        self._phase(upto.question if upto else None)

    def _phase(self, question: Optional[str]) -> None:
        """Headers of the questions up to ``question`` (None: all the rest)."""
        while self.questions and (question is None or question in self.questions):
            q = self.questions.pop(0)
            self.progress.phase = q.upper()
            self.progress.log(f"[bold]{q.upper()}[/bold]")
            if q == question:
                break


def _search(job: Callable[[float], Job], alpha_grid: Sequence[float]) -> bool:
    """One lr's alpha search (:func:`mutualctr.training.jobs.search_alphas`) on the results
    known, its groups added to the plan by ``job(alpha)``: True when it is decided (every group
    it needs done). The grid is needed up front; an extension once the groups before it decide it."""
    base = [job(a) for a in sorted(set(alpha_grid))]
    if any(j.result is None for j in base):
        return False

    def dev_of(alpha: float) -> float:
        r = job(alpha).result
        if r is None:
            raise _Undecided
        return r["mean"]["dev_auc"]

    try:
        search_alphas(dev_of, alpha_grid)
    except _Undecided:
        return False
    return True


def _choose(grid: dict[tuple[float, float], Job], decided: bool) -> tuple[float, float]:
    """:func:`_best_on_dev` once the grid is decided; until then the choice with no results
    (the smallest alpha > 0, then lr), which is what the plan assumes."""
    if decided:
        return _best_on_dev(grid)
    return min([k for k in grid if k[0] > 0] or list(grid))


def _best_on_dev(grid: dict[tuple[float, float], Job]) -> tuple[float, float]:
    """The (alpha, lr) whose group has the best mean dev AUC, by the tie rule of alpha auto
    (:func:`mutualctr.training.jobs.choose_alpha`: the smaller alpha, then lr, within
    ``ALPHA_TIE``); alpha = 0 (no mutual term, the control) is only chosen when the grid has
    nothing else."""
    cands = [k for k in grid if k[0] > 0] or list(grid)
    return choose_alpha({k: grid[k].result["mean"]["dev_auc"] for k in cands})


def _abs_diff(churn: Optional[dict]) -> Any:
    return "" if not churn else churn["mean_abs_diff"]


def _brief(result: dict[str, Any]) -> str:
    if "members" in result and "mean" in result:
        m = result["mean"]
        return f"mean dev {m.get('dev_auc', float('nan')):.5f} test {m.get('test_auc', float('nan')):.5f}"
    return f"dev {result.get('dev_auc', float('nan')):.5f} test {result.get('test_auc', float('nan')):.5f}"


def _model_key(name: str) -> str:
    """A built-in name in lower case (``DeepFM`` -> ``deepfm``); a user model's name as given."""
    name = name.strip()
    return name.lower() if name.lower() in MODELS else name


def run_experiment(question: str | Sequence[str], data: str | Path, out: str | Path, models: Sequence[str],
                   instances: int = 4, seeds: Optional[Sequence[int]] = None, config_dir: Optional[Path] = None,
                   epochs: Optional[int] = None, alphas: Optional[Sequence[float]] = None,
                   finetune_lrs: Optional[Sequence[float]] = None, finetune_split: float = 0.0,
                   scope: Optional[str] = None, embedding_lr_scale: Optional[float] = None,
                   runs_dir: Optional[Path] = None, rq4_model: Optional[str] = None, quiet: bool = False,
                   reference: Optional[bool] = None,
                   progress: bool = True, bootstrap_resamples: int = 1000,
                   threads: Optional[int] = None, precision: Optional[str] = None) -> dict[str, Any]:
    """Run RQ1-RQ4 (or a subset) and write results.csv, tables.md, stats.json and the plots.

    Returns {"rows", "bootstrap", "choices", "paths": {...}, "seconds"}. ``quiet`` silences
    every display; ``progress=False`` keeps the trainers' own bars instead of the experiment's.
    ``threads`` sets torch's intra-op threads for the whole process (1 is much faster on a CPU
    shared with other jobs); a performance knob only, so it is not part of the run keys.
    """
    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    st = Settings(questions=parse_questions(question), models=[_model_key(m) for m in models],
                  instances=instances, seeds=list(seeds or []),
                  config_dir=Path(config_dir) if config_dir else None, epochs=epochs,
                  alphas=None if alphas is None else [float(a) for a in alphas],
                  finetune_lrs=None if finetune_lrs is None else [float(x) for x in finetune_lrs],
                  finetune_split=float(finetune_split), scope=scope, embedding_lr_scale=embedding_lr_scale,
                  runs_dir=Path(runs_dir) if runs_dir else None,
                  rq4_model=_model_key(rq4_model) if rq4_model else None, reference=reference,
                  bootstrap_resamples=bootstrap_resamples, precision=precision)
    for m in st.models + ([st.rq4_model] if st.rq4_model else []):
        canonical_model_name(m)  # an unknown model or a user model that does not import: refused here
    if "rq4" in st.questions and st.rq4_model and st.rq4_model not in st.models:
        raise ConfigError(f"--rq4-model {st.rq4_model} is not among --models")
    jobs_api.open_store(data)  # a bad --data is refused before anything is written
    shown, out = out, outdir.resolve(out)
    with outdir.locked(out, shown=shown):
        outdir.clean_stale(out)
        outdir.check_replaceable(out, "experiment", shown=shown)
        runs = outdir.claim_cache(st.runs_dir or out / "runs", "runs", shown=st.runs_dir or f"{shown}/runs")
        out.mkdir(parents=True, exist_ok=True)
        outdir.write_marker(out, "experiment")
        outdir.mark_cache(runs, "runs")
        return _run(st, Path(data), out, quiet, progress, t0)


def _run(st: Settings, data: Path, out: Path, quiet: bool, progress: bool, t0: float) -> dict[str, Any]:
    exp = Experiment(data, out, st, quiet=quiet)
    if st.rq4_model not in st.models and "rq4" in st.questions:
        raise ConfigError(f"--rq4-model {st.rq4_model} is not among --models")
    plan = exp.plan()
    prog = None
    if not quiet and progress:
        prog = ExperimentProgress(plan.total)
        exp.progress = prog
    try:
        plan = exp.run(plan)
    finally:
        if prog:
            prog.close()
    exp.collect(plan)
    use_ref = st.reference if st.reference is not None else exp.dataset in ("criteo", "avazu")
    meta = {"dataset": exp.dataset, "store": str(Path(data).resolve()), "fingerprint": exp.fingerprint,
            "settings": st.to_json(), "choices": exp.choices, "bootstrap": exp.bootstrap,
            "reference": bool(use_ref), "seconds": round(time.perf_counter() - t0, 1)}
    paths = report.write_report(out, exp.rows, meta)
    return {"rows": exp.rows, "bootstrap": exp.bootstrap, "choices": exp.choices, "paths": paths,
            "seconds": meta["seconds"], "dataset": exp.dataset}
