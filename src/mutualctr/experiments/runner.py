"""RQ1-RQ4 orchestration on top of :mod:`mutualctr.training.jobs`, with a run cache.

Every training job lives in ``OUT/runs/<kind>-<key>`` where ``key`` hashes the job kind, the
members' full run configs (model, optimizer, loop, seed), the job settings (alpha, lr, ...,
the keys of the runs it starts from) and the store fingerprint. A job whose ``summary.json``
(single run) or ``group.json`` (group) exists is not run again; one with
``checkpoints/last.pt`` but no result is resumed; anything else in its directory (an
interruption before the first checkpoint) is discarded and the job starts over. So questions
share runs (RQ2 starts from RQ1's independent runs, RQ3/RQ4 from the same), a rerun skips
finished work, and an interrupted experiment resumes where it stopped.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from mutualctr import atomic, outdir
from mutualctr.config import ConfigError

QUESTIONS = ("rq1", "rq2", "rq3", "rq4")
JOB_DIRS = {"train": "run", "scratch": "group", "finetune": "group", "distill": "group", "ensemble": "ensemble"}
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
        self.seeds = list(self.seeds) or list(range(1, self.instances + 1))
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
                "bootstrap_seed": self.bootstrap_seed}


# train settings that change how fast a run goes, not what it computes: not part of a run's key,
# so changing them (or their defaults) reuses the finished runs
_SPEED_ONLY = ("eval_batch_size", "threads", "prefetch")


def _key_config(cfg) -> dict[str, Any]:
    """The part of a run config that identifies its result (the cache key's config)."""
    from mutualctr.training.config import run_config_to_dict

    d = run_config_to_dict(cfg)
    d["train"] = {k: v for k, v in d["train"].items() if k not in _SPEED_ONLY}
    d.pop("mutual", None)  # how the run would be finetuned is not part of what it is
    return d


def _as_dict(result) -> dict[str, Any]:
    """A job's typed result (:mod:`mutualctr.results`) as its file's JSON (a test's stand-in
    for the jobs may return the JSON itself)."""
    return result if isinstance(result, dict) else result.to_dict()


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Job:
    """A finished job: its key, directory and result (summary or group dict)."""

    key: str
    dir: Path
    result: dict[str, Any]


class Experiment:
    """Runs the questions for one store and collects result rows."""

    def __init__(self, data: Path, out: Path, settings: Settings, quiet: bool = False,
                 progress=None, api_module=None):
        from mutualctr.training import jobs as _api

        self.api = api_module or _api
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
        self._plan: dict[str, float] | None = None  # job key -> cost, while planning
        self._indep: dict[tuple[str, int], Job] = {}
        self._grid: dict[str, dict[tuple[float, float], Job]] = {}
        self._configs: dict[str, Any] = {}
        if settings.rq4_model is None:
            d = RQ4_DEFAULT.get(str(self.dataset))
            settings.rq4_model = d if d in settings.models else settings.models[0]

    # ---- the cache ------------------------------------------------------------------------
    def config(self, model: str, seed: int):
        """The model's config (read once per experiment, so an edit of configs/ while it runs
        cannot mix settings) with this seed, the --epochs override and, with --finetune-split F,
        the first 1 - F of the train split."""
        from dataclasses import replace

        from mutualctr.training.config import with_overrides

        if model not in self._configs:
            self._configs[model] = self.api.default_config(model, self.dataset, self.settings.config_dir)
        cfg = with_overrides(self._configs[model], seed=seed, epochs=self.settings.epochs)
        if self.settings.finetune_split > 0:
            cfg.train = replace(cfg.train, row_range=(0.0, 1.0 - self.settings.finetune_split))
        return cfg

    def group(self, model: str, alpha: float, lr: Optional[float]):
        """The group settings of a finetuning of ``model`` (its config's ``mutual:`` section with
        the experiment's options) at this alpha and learning rate."""
        from mutualctr.training.config import with_group_overrides

        st = self.settings
        return with_group_overrides(self.config(model, st.seeds[0]).mutual, alpha=alpha, lr=lr, scope=st.scope,
                                    embedding_lr_scale=st.embedding_lr_scale,
                                    finetune_split=st.finetune_split or None)

    def _cached(self, kind: str, payload: dict[str, Any], marker: str, label: str, cost: float,
                fn: Callable[[Path, bool], dict[str, Any]]) -> Job:
        key = f"{kind}-{_hash({'kind': kind, 'fingerprint': self.fingerprint, **payload})}"
        d = self.runs_dir / key
        done = d / marker
        if self._plan is not None:
            self._plan[key] = cost
            return Job(key, d, json.loads(done.read_text()) if done.is_file() else _placeholder(kind, payload, d))
        if done.is_file():
            if self.progress:
                self.progress.skip(label, cost)
            return Job(key, d, json.loads(done.read_text()))
        resume = (d / "checkpoints" / "last.pt").is_file()
        what = JOB_DIRS[kind]
        if d.exists() and not resume:
            outdir.remove(d, what)  # interrupted before its first checkpoint: start over
        d.mkdir(parents=True, exist_ok=True)
        outdir.write_marker(d, what)
        atomic.write_json(d / "job.json", {"kind": kind, "label": label, "fingerprint": self.fingerprint,
                                           "store": str(self.data), **payload})
        if self.progress:
            self.progress.start(label, cost, watch=[d], resumed=resume)
        result = _as_dict(fn(d, resume))
        if self.progress:
            self.progress.finish(f"done {label}: {_brief(result)}")
        return Job(key, d, result)

    def plan(self) -> float:
        """The total cost (member-epochs) of the jobs the questions will run, each shared job
        counted once: the questions walked with every job not yet done standing in for its
        result (nothing trains, nothing is written)."""
        self._plan = {}
        try:
            for q in self.settings.questions:
                getattr(self, q)()
            return sum(self._plan.values())
        finally:
            self._plan = None
            self.rows, self.bootstrap, self.choices = [], [], {}
            self._indep, self._grid = {}, {}

    # ---- jobs -----------------------------------------------------------------------------
    def independent(self, model: str, seed: int) -> Job:
        if (model, seed) in self._indep:
            return self._indep[(model, seed)]
        cfg = self.config(model, seed)
        payload = {"configs": [_key_config(cfg)], "seeds": [seed], "settings": {}}

        def fn(d: Path, resume: bool):
            return self.api.train(self.data, d, cfg, resume=resume, quiet=self._trainer_quiet)

        job = self._cached("train", payload, "summary.json", f"independent {model} seed {seed}",
                           cfg.train.epochs, fn)
        self._indep[(model, seed)] = job
        return job

    def scratch(self, model: str, seeds: Sequence[int]) -> Job:
        """RQ1's group from scratch, at the paper's setting alpha = 1 (RQ1 searches nothing)."""
        from dataclasses import replace

        cfgs = [self.config(model, s) for s in seeds]
        group = replace(cfgs[0].mutual, alpha=1.0)
        settings = {"alpha": 1.0, "loss": group.loss, "epochs": self.settings.epochs}
        payload = {"configs": [_key_config(c) for c in cfgs], "seeds": list(seeds), "settings": settings}

        def fn(d: Path, resume: bool):
            return self.api.mutual(self.data, d, configs=cfgs, seeds=list(seeds), group=group, resume=resume,
                                   quiet=self._trainer_quiet)

        return self._cached("scratch", payload, "group.json",
                            f"mutual from scratch {len(seeds)} x {model}", len(seeds) * cfgs[0].train.epochs, fn)

    def finetune(self, model: str, init: Sequence[Job], alpha: float, lr: float, label: str) -> Job:
        from mutualctr.config import to_dict

        group = self.group(model, alpha, lr)
        payload = {"init": [j.key for j in init], "settings": to_dict(group)}

        def fn(d: Path, resume: bool):
            return self.api.mutual(self.data, d, init=[j.dir for j in init], group=group, resume=resume,
                                   quiet=self._trainer_quiet)

        return self._cached("finetune", payload, "group.json", label, len(init) * group.epochs, fn)

    def distill(self, model: str, teacher: Job, students: Sequence[Job], beta: float, lr: float, label: str) -> Job:
        from mutualctr.config import to_dict

        group = self.group(model, beta, lr)
        payload = {"teacher": teacher.key, "init": [j.key for j in students], "settings": to_dict(group)}

        def fn(d: Path, resume: bool):
            # One group whose peers are the frozen teacher only: each student is distilled
            # independently (no student sees another), in one pass over the data.
            return self.api.mutual(self.data, d, init=[j.dir for j in students], group=group,
                                   teachers=[teacher.dir], resume=resume, quiet=self._trainer_quiet)

        return self._cached("distill", payload, "group.json", label, len(students) * group.epochs + 0.5, fn)

    def ensemble(self, runs: Sequence[Job], label: str) -> Job:
        payload = {"runs": [j.key for j in runs], "settings": {}}

        def fn(d: Path, resume: bool):
            test = _as_dict(self.api.ensemble([j.dir for j in runs], self.data, "test"))
            dev = _as_dict(self.api.ensemble([j.dir for j in runs], self.data, "dev"))
            res = {"dev_auc": dev["auc"], "dev_logloss": dev["logloss"], "test_auc": test["auc"],
                   "test_logloss": test["logloss"], "members": test["members"], "churn": test.get("churn")}
            atomic.write_json(d / "ensemble.json", res)
            return res

        return self._cached("ensemble", payload, "ensemble.json", label, 0.1 * len(runs), fn)

    @property
    def _trainer_quiet(self) -> bool:
        # rich allows one live display: the experiment's own progress replaces the trainer's.
        return self.quiet or self.progress is not None

    # ---- building blocks shared by the questions ------------------------------------------
    def pretrained(self, model: str, seeds: Optional[Sequence[int]] = None) -> list[Job]:
        return [self.independent(model, s) for s in (seeds or self.settings.seeds)]

    def grid(self, model: str, init: Sequence[Job], tag: str) -> dict[tuple[float, float], Job]:
        """Finetunings of ``init`` for every (alpha, lr) tried: the --alpha list, or (auto) the
        group config's alpha grid extended past an end that wins on dev, per learning rate."""
        from mutualctr.training.jobs import search_alphas

        st = self.settings
        grid: dict[tuple[float, float], Job] = {}
        for lr in st.finetune_lrs or [self.group(model, 0.0, None).lr]:
            def run(a: float, lr: float = lr) -> float:
                if (a, lr) not in grid:
                    grid[(a, lr)] = self.finetune(model, init, a, lr,
                                                  f"mutual finetune {tag} alpha {a:g} lr {lr:g}")
                return grid[(a, lr)].result["mean"]["dev_auc"]

            if st.alphas is not None:
                for a in st.alphas:
                    run(a)
            else:
                search_alphas(run, self.group(model, 1.0, lr).alpha_grid)
        return grid

    def rq2_grid(self, model: str) -> dict[tuple[float, float], Job]:
        if model not in self._grid:
            pre = self.pretrained(model)
            self._grid[model] = self.grid(model, pre, f"{len(pre)} x {model}")
        return self._grid[model]

    def rq2_choice(self, model: str) -> tuple[tuple[float, float], Job]:
        grid = self.rq2_grid(model)
        return _best_on_dev(grid), grid[_best_on_dev(grid)]

    def best_instance(self, model: str) -> int:
        """Index (0-based, in seed order) of the pretrained instance with the best dev AUC."""
        pre = self.pretrained(model)
        return max(range(len(pre)), key=lambda i: pre[i].result["dev_auc"])

    # ---- rows -------------------------------------------------------------------------------
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
               "kept_start": int(r["kept_start"]) if "kept_start" in r else ""}
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

    # ---- the questions -----------------------------------------------------------------------
    def rq1(self) -> None:
        st = self.settings
        for model in st.models:
            pre = self.pretrained(model)
            self._indep_rows(model, pre, st.seeds)
            g = self.scratch(model, st.seeds)
            self._member_rows("rq1", "mutual_scratch", g, range(1, st.instances + 1), st.seeds, alpha=1.0)

    def rq2(self) -> None:
        st = self.settings
        for model in st.models:
            pre = self.pretrained(model)
            self._indep_rows(model, pre, st.seeds)
            grid = self.rq2_grid(model)
            (alpha, lr), chosen = self.rq2_choice(model)
            inst = range(1, st.instances + 1)
            for (a, l), g in grid.items():
                self._member_rows("rq2", "mutual_pretrained", g, inst, st.seeds, alpha=a, lr=l,
                                  selected=int((a, l) == (alpha, lr)))
            ctrl = grid.get((0.0, lr)) or self.finetune(model, pre, 0.0, lr,
                                                        f"control alpha 0 {len(pre)} x {model} lr {lr:g}")
            self._member_rows("rq2", "alpha0_control", ctrl, inst, st.seeds, alpha=0.0, lr=lr)
            ens = self.ensemble(pre, f"ensemble of {len(pre)} x {model}")
            self._row("rq2", model, "ensemble", "", ens.result, ens.dir, seed="",
                      churn=_abs_diff(ens.result.get("churn")))
            t = self.best_instance(model)
            students = [j for i, j in enumerate(pre) if i != t]
            beta = alpha if alpha > 0 else 1.0
            dist = self.distill(model, pre[t], students, beta, lr,
                                f"distill {model} #{t + 1} -> {len(students)} others beta {beta:g} lr {lr:g}")
            others = [i + 1 for i in range(len(pre)) if i != t]
            self._member_rows("rq2", "distill", dist, others, [st.seeds[i - 1] for i in others],
                              alpha=beta, lr=lr, teacher=t + 1)
            self.choices[model] = {"alpha": alpha, "lr": lr, "teacher_instance": t + 1}
            if self._plan is None:
                self._bootstrap(model, t, pre[t], chosen, ctrl)

    def rq3(self) -> None:
        st = self.settings
        best = {m: self.best_instance(m) for m in st.models}
        pre = {m: self.pretrained(m) for m in st.models}
        for m in st.models:
            self._indep_rows(m, pre[m], st.seeds)
            i = best[m]
            self._row("rq3", m, "pretrained_best", i + 1, pre[m][i].result, pre[m][i].dir, seed=st.seeds[i])
            (_, _), same = self.rq2_choice(m)
            self._row("rq3", m, "dml_same", i + 1, same.result["members"][i], same.result["members"][i]["run_dir"],
                      seed=st.seeds[i], alpha=same.result["settings"]["alpha"], lr=same.result["settings"]["lr"])
        if len(st.models) < 2:
            self.choices["rq3"] = "skipped: RQ3 needs at least two models"
            return
        init = [pre[m][best[m]] for m in st.models]
        grid = self.grid(st.models[0], init, f"mixed {'+'.join(st.models)}")
        choice = _best_on_dev(grid)
        self.choices["rq3_mixed"] = {"alpha": choice[0], "lr": choice[1]}
        for (a, lr), g in grid.items():
            for m, mem in zip(st.models, g.result["members"]):
                i = best[m]
                self._row("rq3", m, "dml_different", i + 1, mem, mem["run_dir"], seed=st.seeds[i], alpha=a, lr=lr,
                          selected=int((a, lr) == choice))

    def rq4(self) -> None:
        st = self.settings
        model = st.rq4_model
        seeds = st.rq4_seeds()
        pre = self.pretrained(model, seeds)
        self._indep_rows(model, pre[:st.instances], st.seeds)
        (alpha, lr), _ = self.rq2_choice(model)
        ranked = sorted(range(len(pre)), key=lambda i: -pre[i].result["dev_auc"])
        for k in RQ4_SIZES:
            if k > len(pre):
                continue
            members = sorted(ranked[:k])  # seed order, so the group of all RQ2 instances is shared
            g = self.finetune(model, [pre[i] for i in members], alpha, lr,
                              f"mutual finetune top-{k} {model} alpha {alpha:g} lr {lr:g}")
            for i in members:
                self._row("rq4", model, "pretrained", i + 1, pre[i].result, pre[i].dir, seed=seeds[i], n_models=k)
            self._member_rows("rq4", "mutual_pretrained", g, [i + 1 for i in members], [seeds[i] for i in members],
                              n_models=k, alpha=alpha, lr=lr)
        self.choices["rq4"] = {"model": model, "alpha": alpha, "lr": lr, "seeds": seeds}

    # ---- bootstrap of the test-AUC difference ---------------------------------------------------
    def _bootstrap(self, model: str, t: int, pre: Job, finetuned: Job, control: Job) -> None:
        """Paired bootstrap over test rows for the best-on-dev instance: finetuned vs its own
        pretrained start, and finetuned vs the alpha-0 control of the same instance."""
        import numpy as np

        from mutualctr.experiments.stats import bootstrap_auc_diff
        from mutualctr.training.device import resolve_device
        from mutualctr.training.inference import predict_logits

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


def _best_on_dev(grid: dict[tuple[float, float], Job]) -> tuple[float, float]:
    """The (alpha, lr) whose group has the best mean dev AUC, by the tie rule of alpha auto
    (:func:`mutualctr.training.jobs.choose_alpha`: the smaller alpha, then lr, within
    ``ALPHA_TIE``); alpha = 0 (no mutual term, the control) is only chosen when the grid has
    nothing else."""
    from mutualctr.training.jobs import choose_alpha

    cands = [k for k in grid if k[0] > 0] or list(grid)
    return choose_alpha({k: grid[k].result["mean"]["dev_auc"] for k in cands})


def _abs_diff(churn: Optional[dict]) -> Any:
    return "" if not churn else churn["mean_abs_diff"]


def _placeholder(kind: str, payload: dict[str, Any], d: Path) -> dict[str, Any]:
    """What stands in for a job's result while planning: its shape, with no numbers."""
    nan = float("nan")
    metrics = {"dev_auc": nan, "dev_logloss": nan, "test_auc": nan, "test_logloss": nan}
    if JOB_DIRS[kind] != "group":  # a single run (one config) or an ensemble
        return dict(metrics, members=[])
    n = len(payload.get("init") or payload.get("configs") or [])
    return {"settings": dict(payload["settings"]), "mean": dict(metrics),
            "members": [dict(metrics, model="", run_dir=str(d / f"m{i}")) for i in range(n)]}


def _brief(result: dict[str, Any]) -> str:
    if "members" in result and "mean" in result:
        m = result["mean"]
        return f"mean dev {m.get('dev_auc', float('nan')):.5f} test {m.get('test_auc', float('nan')):.5f}"
    return f"dev {result.get('dev_auc', float('nan')):.5f} test {result.get('test_auc', float('nan')):.5f}"


def run_experiment(question: str | Sequence[str], data: str | Path, out: str | Path, models: Sequence[str],
                   instances: int = 4, seeds: Optional[Sequence[int]] = None, config_dir: Optional[Path] = None,
                   epochs: Optional[int] = None, alphas: Optional[Sequence[float]] = None,
                   finetune_lrs: Optional[Sequence[float]] = None, finetune_split: float = 0.0,
                   scope: Optional[str] = None, embedding_lr_scale: Optional[float] = None,
                   runs_dir: Optional[Path] = None, rq4_model: Optional[str] = None, quiet: bool = False,
                   reference: Optional[bool] = None,
                   progress: bool = True, bootstrap_resamples: int = 1000,
                   threads: Optional[int] = None) -> dict[str, Any]:
    """Run RQ1-RQ4 (or a subset) and write results.csv, tables.md, stats.json and the plots.

    Returns {"rows", "bootstrap", "choices", "paths": {...}, "seconds"}. ``quiet`` silences
    every display; ``progress=False`` keeps the trainers' own bars instead of the experiment's.
    ``threads`` sets torch's intra-op threads for the whole process (1 is much faster on a CPU
    shared with other jobs); a performance knob only, so it is not part of the run keys.
    """
    t0 = time.perf_counter()
    if threads:
        import torch

        torch.set_num_threads(threads)
    st = Settings(questions=parse_questions(question), models=[m.strip().lower() for m in models],
                  instances=instances, seeds=list(seeds or []),
                  config_dir=Path(config_dir) if config_dir else None, epochs=epochs,
                  alphas=None if alphas is None else [float(a) for a in alphas],
                  finetune_lrs=None if finetune_lrs is None else [float(x) for x in finetune_lrs],
                  finetune_split=float(finetune_split), scope=scope, embedding_lr_scale=embedding_lr_scale,
                  runs_dir=Path(runs_dir) if runs_dir else None,
                  rq4_model=rq4_model.lower() if rq4_model else None, reference=reference,
                  bootstrap_resamples=bootstrap_resamples)
    from mutualctr.models import MODELS

    for m in st.models + ([st.rq4_model] if st.rq4_model else []):
        if m not in MODELS:
            raise ConfigError(f"unknown model {m!r} (known: {', '.join(sorted(MODELS))})")
    shown, out = out, outdir.resolve(out)
    with outdir.locked(out, shown=shown):
        outdir.clean_stale(out)
        outdir.check_replaceable(out, "experiment", shown=shown)
        out.mkdir(parents=True, exist_ok=True)
        outdir.write_marker(out, "experiment")
        return _run(st, Path(data), out, quiet, progress, t0)


def _run(st: Settings, data: Path, out: Path, quiet: bool, progress: bool, t0: float) -> dict[str, Any]:
    from mutualctr.experiments import report
    from mutualctr.experiments.progress import ExperimentProgress

    exp = Experiment(data, out, st, quiet=quiet)
    if st.rq4_model not in st.models and "rq4" in st.questions:
        raise ConfigError(f"--rq4-model {st.rq4_model} is not among --models")
    prog = None
    if not quiet and progress:
        prog = ExperimentProgress(exp.plan())
        exp.progress = prog
    try:
        for q in st.questions:
            if prog:
                prog.phase = q.upper()
                prog.log(f"[bold]{q.upper()}[/bold]")
            getattr(exp, q)()
    finally:
        if prog:
            prog.close()
    use_ref = st.reference if st.reference is not None else exp.dataset in ("criteo", "avazu")
    meta = {"dataset": exp.dataset, "store": str(Path(data).resolve()), "fingerprint": exp.fingerprint,
            "settings": st.to_json(), "choices": exp.choices, "bootstrap": exp.bootstrap,
            "reference": bool(use_ref), "seconds": round(time.perf_counter() - t0, 1)}
    paths = report.write_report(out, exp.rows, meta)
    return {"rows": exp.rows, "bootstrap": exp.bootstrap, "choices": exp.choices, "paths": paths,
            "seconds": meta["seconds"], "dataset": exp.dataset}
