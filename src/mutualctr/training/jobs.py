"""High-level operations behind the CLI: train, evaluate, predict, mutual, distill, ensemble.

Every function takes paths and typed settings, returns the typed records of
:mod:`mutualctr.results` (``RunResult``, ``GroupResult``, ``EnsembleResult``, ``Scores``,
``Predictions``), and prints nothing (progress bars aside); the CLI formats the output. How a
job runs is one :class:`~mutualctr.runtime.RuntimeOptions` (``options=``, or its values as
keyword arguments), passed whole to the trainer.
"""

from __future__ import annotations

import copy
import csv
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from mutualctr import atomic, outdir
from mutualctr.config import ConfigError, check_seed, check_seeds
from mutualctr.data.encode import encode_file
from mutualctr.data.loader import read_inputs
from mutualctr.data.store import Store
from mutualctr.distributed import session
from mutualctr.errors import CheckpointError, MutualCTRError
from mutualctr.metrics import churn, relaimp, sigmoid  # noqa: F401 (jobs.relaimp: read by callers)
from mutualctr.models import Features, FieldLayout, build_model, is_builtin, plugins
from mutualctr.results import (
    Churn,
    EnsembleResult,
    GroupResult,
    GroupSettings,
    MemberScores,
    Predictions,
    RunResult,
    Scores,
    StartMetrics,
    VersionChurn,
)
from mutualctr.runtime import RuntimeOptions, options_of
from mutualctr.training import resume as resume_check
from mutualctr.training.config import (
    MutualConfig,
    RunConfig,
    load_run_config,
    run_config_from_dict,
    train_with_runtime,
    with_group_overrides,
    with_overrides,
    with_runtime,
)
from mutualctr.training.device import resolve_device
from mutualctr.training.grow import grown_model
from mutualctr.training.inference import predict_logits, scores
from mutualctr.training.member import Member
from mutualctr.training.optim import sparse_grad_for
from mutualctr.training.rundir import GroupDir, ModelCheckpoint, RunDir, check_store, model_checkpoint_path
from mutualctr.training.shipped import find_config
from mutualctr.training.trainer import Trainer


def open_store(path: str | Path):
    return Store.open(path)


def default_config(model: str, dataset: str | None = None, config_dir: Path | None = None) -> RunConfig:
    """The config of ``model`` for ``dataset``: :func:`mutualctr.training.shipped.find_config` (the shipped
    configs, ``config_dir`` first; a fallback to another dataset's config warns)."""
    return find_config(model, dataset, config_dir).config


def build(cfg: RunConfig, store, seed: int | None = None):
    """A freshly initialised model of ``cfg`` for ``store`` (seeded by ``seed``, else
    ``cfg.train.seed``), its tables' gradient layout chosen for ``cfg.optim``."""
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    fm = store.feature_map
    model = build_model(cfg.model_name, fm.num_features, fm.num_fields, cfg.model_params(),
                        sparse_grad=sparse_grad_for(cfg.optim), features=Features.of(fm),
                        layout=FieldLayout.from_fields(fm.fields))
    if not is_builtin(cfg.model_name):  # a user model: its output checked once, on a first batch
        plugins.check_output(model, cfg.model_name, read_inputs(store.split("train")[0], slice(0, 2)))
    return model


@dataclass(frozen=True)
class LoadedRun:
    """A run's best model (on the CPU, in eval mode), its config and its checkpoint
    (``mc.load_run``)."""

    model: torch.nn.Module
    config: RunConfig
    checkpoint: ModelCheckpoint
    path: Path


def load_run(run: str | Path, store=None, new_rows: str = "oov") -> tuple[torch.nn.Module, RunConfig, ModelCheckpoint]:
    """The best model of a run directory (or a best.pt file), checked against ``store``; a run
    of a store that ``store`` grew from (``prepare --grow``) comes with its tables grown to
    ``store``'s layout (:mod:`mutualctr.training.grow`; the checkpoint returned is the run's own),
    the new values' rows copies of their field's OOV row (``oov``: to score) or as a fresh model's
    (``fresh``: to train on)."""
    path = model_checkpoint_path(run)
    ck = ModelCheckpoint.load(path)
    ancestor = None if store is None else check_store(ck.fingerprint, store, path, ck.vocab_fingerprint)
    cfg = run_config_from_dict(ck.config, str(path))  # a user model: imported by its name, or refused
    model = build_model(cfg.model_name, ck.num_features, ck.num_fields, cfg.model_params(),
                        sparse_grad=sparse_grad_for(cfg.optim), layout=FieldLayout.from_dict(ck.layout),
                        features=Features.from_dict(ck.features) if ck.features else None)
    try:
        model.load_state_dict(ck.state_dict)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit model {cfg.model_name}: {e}") from e
    if ancestor is not None:  # a run of a store this one grew from: its tables grow
        model = grown_model(model, build(cfg, store), ancestor, store.feature_map.layout(), new_rows)
    return model, cfg, ck


@contextmanager
def claimed(out: str | Path, kind: str, resume: bool, par=None) -> Iterator[Path]:
    """The output directory of a run or a group, held for this job (see :mod:`mutualctr.outdir`):
    links followed; refused when it holds anything mutualctr did not write, or a started run
    without ``resume``; one writer at a time (the main process holds the lock for the whole
    job); temporaries of killed writers removed. Yields the real path; nothing is created
    (the job marks the directory as ours when it starts writing)."""
    real = outdir.resolve(out, error=CheckpointError)
    if par is not None and not par.is_main:
        yield real
        return
    with outdir.locked(real, shown=out, error=CheckpointError):
        outdir.clean_stale(real)
        if real.is_dir():
            outdir.clean_stale_in(real)
            if (real / "checkpoints").is_dir():
                outdir.clean_stale_in(real / "checkpoints")
        was = outdir.check_replaceable(real, kind, shown=out, error=CheckpointError)
        if not resume and (RunDir(real).holds_run() or GroupDir(real).group_file.is_file()):
            raise CheckpointError(f"{out}: already holds a {kind}; pass --resume to continue it or choose another --out")
        try:
            yield real
        except MutualCTRError as e:  # a failed new job leaves no directory (Ctrl-C keeps it to resume)
            outdir.discard_new(real, kind, was, e, shown=out)
            raise


def _check_out(out: Path, resume: bool) -> None:
    """Inside a claimed group (the alpha search): a candidate's directory must not hold a run
    already unless resuming."""
    if not resume and RunDir(out).holds_run():
        raise CheckpointError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")


def train(store_path: str | Path, out: str | Path, cfg: RunConfig, options: RuntimeOptions | None = None,
          init: str | Path | None = None, **values: Any) -> RunResult:
    """Independent training of one model (the trainer with N = 1). ``options``: how it runs
    (:class:`~mutualctr.runtime.RuntimeOptions`; ``values`` replace single ones: ``quiet=True``);
    its device, precision and compile replace the config's, which the run records.

    ``init`` (warm start): the model starts from that run's best weights (checked against the
    store like ``mutual --init``), its start is evaluated and kept if no evaluation beats it, and
    the run records ``init_from``; resuming needs the same ``init``.

    Under torchrun (``WORLD_SIZE > 1``) the workers train it data-parallel: each reads its
    shard of every global batch; rank 0 writes the run (see docs/distributed.md).
    """
    opts = options_of(options, **values)
    if opts.resume and (Path(out) / "config.yaml").is_file():
        resume_check.check_precision(load_run_config(Path(out) / "config.yaml"), opts.precision)
    cfg = with_runtime(cfg, opts)
    with session(1, cfg.train.device, opts.dist_timeout) as par:
        store = open_store(store_path)
        store.require_both_classes("train", "dev")  # before anything is written
        out = Path(out)
        with claimed(out, "run", opts.resume, par) as real:
            par.barrier("the start")  # every worker checked --out before anyone writes into it
            model = build(cfg, store) if init is None else load_run(init, store, new_rows="fresh")[0]
            member = Member(config=cfg, model=model, run_dir=real,
                            init_from=None if init is None else str(Path(init).resolve()))
            trainer = Trainer(store, [member], real, cfg.train, parallel=par, options=opts,
                              start_is_candidate=init is not None)
            if par.is_main:
                RunDir(real).mark()
            return trainer.fit(resume=opts.resume)[0]


def resolve_run_config(store_path: str | Path, out: str | Path, *, model: str | None = None,
                       config: str | Path | RunConfig | None = None, resume: bool = False,
                       init: str | Path | None = None, **overrides: Any) -> RunConfig:
    """The config a ``train`` runs with: ``config`` (a RunConfig or YAML), else with ``resume``
    the run's own config.yaml, else the shipped config of ``model`` for the store's dataset;
    single values replaced by ``overrides`` (with_overrides' keywords; None = keep)."""
    out = Path(out)
    recorded = load_run_config(out / "config.yaml") if resume and (out / "config.yaml").is_file() else None
    if isinstance(config, RunConfig):
        cfg = config
    elif config is not None:
        cfg = load_run_config(config)
    elif recorded is not None:
        cfg = recorded
    elif init is not None:  # a warm start: the config of the run it continues
        if model is not None:
            raise ConfigError(f"--model: a warm start (--init {init}) continues that run's model; leave --model out")
        cfg = _run_config_of(init)
    elif model is None:
        if resume:
            raise CheckpointError(f"{out}: no run to resume here (no config.yaml); to start one, give "
                                  "--model NAME or --config FILE")
        raise ConfigError("give --model NAME or --config FILE")
    else:
        cfg = default_config(model, open_store(store_path).feature_map.dataset)
    cfg = with_overrides(cfg, model=model, **overrides)
    if recorded is not None:  # the same job: what is given again must be what it started with
        resume_check.check_run(recorded, cfg, from_file=config is not None)
        return recorded
    return cfg


def evaluate(run: str | Path, store_path: str | Path, split: str = "test", device: str = "auto",
             batch_size: int = 0) -> Scores:
    store = open_store(store_path)
    model, _, _ = load_run(run, store)
    dev = resolve_device(device)
    model.to(dev)
    X, y = store.split(split)
    return Scores.of(np.asarray(y), predict_logits(model, X, batch_size, dev),
                     groups=store.feature_map.group_ids(X), group_by=store.feature_map.group_by)


def version_churn(run: str | Path, against: str | Path, store_path: str | Path, split: str = "test",
                  device: str = "auto", batch_size: int = 0) -> VersionChurn:
    """How much run ``run`` (a new version) changed its predictions from run ``against`` (an
    earlier one) on ``split`` of one store (:func:`mutualctr.metrics.version_churn`)."""
    store = open_store(store_path)
    X, y = store.split(split)
    dev = resolve_device(device)
    logits = []
    for r in (run, against):
        model, _, _ = load_run(r, store)
        logits.append(predict_logits(model.to(dev), X, batch_size, dev))
    return VersionChurn.of(str(run), str(against), split, np.asarray(y), *logits)


def predict(run: str | Path, input_path: str | Path, out: str | Path, keep: Sequence[str] = (),
            store_path: str | Path | None = None, device: str = "auto", batch_size: int = 0) -> Predictions:
    """Encode raw rows with the run's store vocabulary and write probabilities as CSV."""
    # never over an input, a checkpoint, a store's or run's file, or a file not ours (outdir)
    out = outdir.claim_file(out, inputs=(input_path, run), error=CheckpointError)
    if store_path is None:
        store_path = ModelCheckpoint.load(model_checkpoint_path(run)).store_path
        if store_path is None:
            raise CheckpointError(f"{run}: the checkpoint does not name its store; give --data STORE")
    store = open_store(store_path)
    model, _, _ = load_run(run, store)
    enc = encode_file(store, Path(input_path), keep=list(keep))
    dev = resolve_device(device)
    model.to(dev)
    logits = predict_logits(model, enc.inputs, batch_size, dev)
    probs = sigmoid(logits)
    with atomic.atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            cols = list(keep)
            w.writerow(cols + ["probability"])
            kept = [enc.kept[c] for c in cols]
            for i in range(len(probs)):
                w.writerow([k[i] for k in kept] + [f"{probs[i]:.6f}"])
    res = Predictions(rows=int(len(probs)), out=str(out))
    if enc.labels is not None and len(np.unique(enc.labels)) == 2:
        s = scores(enc.labels, logits)
        res = replace(res, auc=s["auc"], logloss=s["logloss"])
    return res


# ---- groups -----------------------------------------------------------------------------

def mutual(store_path: str | Path, out: str | Path, *, init: Sequence[str | Path] = (),
           models: Sequence[str] = (), seeds: Sequence[int] = (), configs: Sequence[RunConfig] = (),
           teachers: Sequence[str | Path] = (), group: MutualConfig | None = None,
           seed: int | None = None, config_dir: Path | None = None, options: RuntimeOptions | None = None,
           **values: Any) -> GroupResult:
    """Train a group: finetune from runs (``init``) or from scratch (``models`` + ``seeds``, or
    ``configs``: one :class:`RunConfig` per member, used as given, each built with its own
    ``train.seed`` unless ``seeds`` are given).

    ``group`` holds the group's settings (:class:`MutualConfig`; default: the first member's
    config's ``mutual`` section). ``alpha = 0`` is the no-mutual control (each member trained
    as if alone); ``alpha = "auto"`` finetunes one group per alpha tried, in ``OUT/alpha-A``, and
    returns the one with the best mean dev AUC, with the whole curve under ``alpha_search``; its
    members are then ``OUT/m{i}-{model}``, links to the chosen alpha's, which the result names.
    ``teachers`` turns the peer term into distillation from frozen models. Under torchrun the
    members are spread over the workers (one per worker, several per worker, or a data-parallel
    group of workers per member; see docs/distributed.md); every worker returns the whole group.
    ``options``: how it runs (:class:`~mutualctr.runtime.RuntimeOptions`; ``values`` replace
    single ones: ``quiet=True``).
    """
    opts = options_of(options, **values)
    if bool(init) and (models or configs):
        raise ConfigError("give either --init RUN... (finetune) or --models (scratch), not both")
    if models and configs:
        raise ConfigError("give either models or configs for a group from scratch, not both")
    if not (init or models or configs):
        raise ConfigError("give --init RUN... to finetune or --models NAME,... to train from scratch")
    seeds = check_seeds("--seeds", seeds)
    if seed is not None:
        check_seed("--seed", seed)
    n = len(init) or len(models) or len(configs)
    if n < 2 and not teachers:
        raise ConfigError(f"a group needs at least two members to learn from each other, got {n} "
                          "(one member with a teacher is distillation: mutualctr distill)")
    store = open_store(store_path)
    store.require_both_classes("train", "dev")  # before anything is written
    if not configs and models:
        configs = scratch_configs(store_path, models, config_dir)
        seeds = list(seeds) or list(range(1, len(models) + 1))
    if group is None:
        group = resolve_group(init=init, configs=configs)
    with session(n, opts.device, opts.dist_timeout) as par, claimed(out, "group", opts.resume, par) as real:
        def one(alpha: float, where: Path, which: str | None = None) -> GroupResult:
            tb = opts.tensorboard
            here = opts if tb is None or not group.searches else replace(opts, tensorboard=tb / where.name)
            title = None if which is None else f"alpha {alpha:g} ({which}): {Path(out) / where.name}"
            return _mutual(par, store, where, init=init, configs=configs, seeds=seeds, teachers=teachers,
                           group=replace(group, alpha=alpha), seed=seed, options=here, title=title)

        if not group.searches:
            return one(group.alpha, real)
        result = _link_members(par, real, _search_alpha(one, real, group, opts.resume))
        if par.is_main:
            GroupDir(real).write_group(result)
        return result


def _link_members(par, out: Path, result: GroupResult) -> GroupResult:
    """A searched group's members reachable as ``OUT/m{i}-{model}``: links to the chosen
    alpha's members (:func:`mutualctr.outdir.link_members`), which the result names."""
    if par.is_main:
        outdir.link_members(out, out / f"alpha-{result.settings.alpha:g}")
    at = [out / Path(m.run_dir).name for m in result.members]
    return replace(result, members=[replace(m, run_dir=str(p)) if p.is_symlink() else m
                                    for m, p in zip(result.members, at)])


def resolve_group(*, init: Sequence[str | Path] = (), configs: Sequence[RunConfig] = (),
                  config_file: str | Path | None = None, **overrides: Any) -> MutualConfig:
    """The settings of a group job: the ``mutual`` section of ``config_file`` if given, else of
    the first member's config (a run's config.yaml, or the first scratch config); ``overrides``
    (flags; None = keep) replace single values."""
    if config_file is not None:
        base = load_run_config(config_file).mutual
    elif init:
        base = _run_config_of(init[0]).mutual
    elif configs:
        base = configs[0].mutual
    else:
        base = MutualConfig()
    return with_group_overrides(base, **overrides)


def scratch_configs(store_path: str | Path, models: Sequence[str], config_dir: Path | None = None,
                    **overrides: Any) -> list[RunConfig]:
    """The configs of a group trained from scratch: each model's default config (see
    :func:`default_config`) with single values replaced (``lr``, ``epochs``, ``evals_per_epoch``)."""
    dataset = open_store(store_path).feature_map.dataset
    return [with_overrides(default_config(m, dataset, config_dir), **overrides) for m in models]


def mutual_from_flags(store_path: str | Path, out: str | Path, *, init: Sequence[str | Path] = (),
                      models: Sequence[str] = (), seeds: Sequence[int] = (), teachers: Sequence[str | Path] = (),
                      group: MutualConfig | None = None, config_file: str | Path | None = None,
                      config_dir: Path | None = None,
                      alpha: float | str | None = None, loss: str | None = None, lr: float | None = None,
                      epochs: int | None = None, evals_per_epoch: int | None = None, scope: str | None = None,
                      embedding_lr_scale: float | None = None, finetune_split: float | None = None,
                      seed: int | None = None, options: RuntimeOptions | None = None,
                      **values: Any) -> GroupResult:
    """:func:`mutual` from single values (flags; None = not given) over the group settings:
    ``group`` if given, else :func:`resolve_group`'s. ``lr``, ``epochs`` and
    ``evals_per_epoch`` are the finetuning's, or for a group from scratch the members' own.
    ``options`` / ``values``: how it runs, as for :func:`mutual`."""
    if models and init:
        raise ConfigError("give either --init RUN... (finetune) or --models (scratch), not both")
    configs, member_flags = [], {"lr": lr, "epochs": epochs, "evals_per_epoch": evals_per_epoch}
    if models:
        configs = scratch_configs(store_path, models, config_dir, **member_flags)
        seeds = list(seeds) or list(range(1, len(models) + 1))
        member_flags = {}
    flags = dict(alpha=alpha, loss=loss, scope=scope, embedding_lr_scale=embedding_lr_scale,
                 finetune_split=finetune_split, **member_flags)
    opts = options_of(options, **values)
    if opts.resume:  # the same job: what is given again must be what it started with
        recorded = resume_check.check_group_job(
            Path(out), flags=flags, group=group, config_file=config_file, models=models, seeds=seeds,
            member_flags={"lr": lr, "epochs": epochs, "evals_per_epoch": evals_per_epoch} if models else {},
            precision=opts.precision, what="distillation" if teachers else "group")
        if recorded is not None:  # its settings, and the precision it started with
            (group, precision), flags, config_file = recorded, {}, None
            opts = opts.with_values(precision=precision)
    group = (with_group_overrides(group, **flags) if group is not None
             else resolve_group(init=init, configs=configs, config_file=config_file, **flags))
    return mutual(store_path, out, init=init, configs=configs, seeds=seeds, teachers=teachers, group=group,
                  seed=seed, options=opts)


ALPHA_TIE = 1e-5  # dev AUCs closer than this are a tie (the smaller alpha wins); docs/training.md


def search_alphas(dev_of: Callable[[float], float], grid: Sequence[float], extensions: int = 3,
                  tie: float = ALPHA_TIE) -> float:
    """The alpha with the best dev AUC: ``dev_of(alpha)`` (which trains or reads back that
    alpha's group) for every value of ``grid``, then for ten times further past an end while
    that end beats its neighbour by more than ``tie`` (at most ``extensions`` times), so that
    the choice lies inside what was tried. The choice is the smallest alpha within ``tie`` of
    the best dev AUC: past the point where the peer term dominates, larger alphas give the same
    consensus and differ in the 6th decimal, which is rounding, not a reason to pick them."""
    tried = {a: dev_of(a) for a in sorted(set(grid))}
    for _ in range(extensions):
        order = sorted(tried)
        if len(order) < 2:
            break
        if tried[order[-1]] > tried[order[-2]] + tie and tried[order[-1]] >= max(tried.values()):
            nxt = order[-1] * 10
        elif tried[order[0]] > tried[order[1]] + tie and tried[order[0]] >= max(tried.values()):
            nxt = order[0] / 10
        else:
            break
        tried[nxt] = dev_of(nxt)
    return choose_alpha(tried, tie)


def choose_alpha(dev: dict, tie: float = ALPHA_TIE):
    """The smallest key (an alpha, or an (alpha, lr) pair) whose dev AUC is within ``tie`` of
    the best; with every value nan (an experiment's planning walk), the smallest key."""
    best = max(dev.values())
    return min([a for a, d in dev.items() if d >= best - tie] or dev)  # or dev: all nan


def _search_alpha(one, out: Path, group: MutualConfig, resume: bool) -> GroupResult:
    """``mutual.alpha: auto``: one group per alpha tried (:func:`search_alphas`), each in
    ``OUT/alpha-A``; finished ones are read back, so an interrupted search resumes."""
    tried: dict[float, GroupResult] = {}

    def dev_of(alpha: float) -> float:
        where = GroupDir(out / f"alpha-{alpha:g}")
        if where.group_file.is_file():
            tried[alpha] = where.read_group()
        else:
            _check_out(where.path, resume)
            if where.path.is_dir() and not resume:  # started before any checkpoint: ours, start over
                outdir.remove(where.path, "group", error=CheckpointError)
            GroupDir(out).mark()  # the search's own directory, holding the candidates
            grid = sorted(set(group.alpha_grid))
            which = (f"{grid.index(alpha) + 1} of {len(grid)} in the grid" if alpha in grid else
                     f"{len(tried) + 1}: past the grid's end, which won")
            tried[alpha] = one(alpha, where.path, which)
        return tried[alpha].mean.dev_auc

    best = search_alphas(dev_of, group.alpha_grid)
    chosen = tried[best]
    return replace(chosen, settings=replace(chosen.settings, alpha_auto=True),
                   alpha_search=[g.alpha_point(str(out / f"alpha-{a:g}")) for a, g in sorted(tried.items())])


def _run_config_of(run: str | Path) -> RunConfig:
    """The config of a run, without loading its weights where config.yaml is there."""
    run = Path(run)
    if run.is_dir() and (run / "config.yaml").is_file():
        return load_run_config(run / "config.yaml")
    return load_run(run)[1]


def finetune_train_config(base, group: MutualConfig):
    """The loop of a finetuning: the group's epochs and evaluations, no early stopping, and the
    last ``finetune_split`` of the train split when that is set (else all of it)."""
    rows = (1.0 - group.finetune_split, 1.0) if group.finetune_split > 0 else (0.0, 1.0)
    return replace(base, epochs=group.epochs, evals_per_epoch=group.evals_per_epoch, patience=0, row_range=rows)


def _members(par, store, out: Path, *, init, configs, seeds, group: MutualConfig,
             options: RuntimeOptions) -> tuple[list[Member], Any, float]:
    """This process's members of a group (finetuned from ``init`` or built from ``configs``),
    the group's loop settings before the flags, and its learning rate."""
    members: list[Member] = []
    if init:
        base = finetune_train_config(_run_config_of(init[0]).train, group)
        for i, run in enumerate(init):
            if i not in par.member_ids:  # another worker's member
                continue
            model, cfg, _ = load_run(run, store, new_rows="fresh")
            own_seed = cfg.train.seed
            cfg = with_runtime(replace(cfg, train=base, mutual=group, optim=replace(
                cfg.optim, lr=group.lr, embedding_lr_scale=group.embedding_lr_scale)), options)
            members.append(Member(config=cfg, model=model, run_dir=GroupDir(out).member(i, cfg.model_name).path,
                                  init_from=str(Path(run).resolve()), seed=own_seed))
        return members, base, group.lr
    bases = [copy.deepcopy(c).validate() for c in configs]
    seeds = list(seeds) or [c.train.seed for c in bases]
    if len(seeds) != len(bases):
        raise ConfigError(f"--seeds has {len(seeds)} values for {len(bases)} models")
    cfgs = [with_runtime(replace(with_overrides(c, seed=s), mutual=group), options) for c, s in zip(bases, seeds)]
    for i, (cfg, s) in enumerate(zip(cfgs, seeds)):
        if i in par.member_ids:
            members.append(Member(config=cfg, model=build(cfg, store, seed=s),
                                  run_dir=GroupDir(out).member(i, cfg.model_name).path))
    return members, cfgs[0].train, cfgs[0].optim.lr


def _starts(par, trainer: Trainer, members: list[Member], out: Path, resume: bool) -> list[np.ndarray]:
    """A finetuning's start: each member's test logits before the first step (every member's,
    for the churn before) and its dev/test metrics (``start.json``, read back on resume)."""
    fresh = not (resume and trainer.checkpoints.exists())
    start_logits = []
    for m in members:
        labels, z = trainer.logits(m.model, "test")
        start_logits.append(z)
        if fresh:
            m.start = StartMetrics.of(trainer.evaluate(m.model, "dev"), scores(labels, z))
    if fresh:
        starts = par.member_results([m.start for m in members])
        if par.is_main:
            GroupDir(out).write_start(starts)
    else:
        starts = GroupDir(out).read_start()
        for m, gi in zip(members, par.member_ids):
            m.start = starts[gi]
    return par.member_results(start_logits)


def _mutual(par, store, out: Path, *, init, configs, seeds, teachers, group: MutualConfig, seed,
            options: RuntimeOptions, title: str | None = None) -> GroupResult:
    finetune = bool(init)
    members, base, group_lr = _members(par, store, out, init=init, configs=configs, seeds=seeds, group=group,
                                       options=options)
    if group.scope == "dense":
        for m in members:
            m.freeze_tables()
    train_cfg = train_with_runtime(with_overrides(RunConfig(train=base), seed=seed).train, options)
    teacher_models = [load_run(t, store)[0] for t in teachers]
    par.barrier("the start")  # every worker checked --out before anyone writes into it
    trainer = Trainer(store, members, out, train_cfg, group, teachers=teacher_models, parallel=par,
                      start_is_candidate=finetune, options=options, title=title)
    if par.is_main:
        GroupDir(out).mark()
    start_logits = _starts(par, trainer, members, out, options.resume) if finetune else None
    results = par.member_results(trainer.fit(resume=options.resume))
    after_logits = par.member_results([m.test_logits for m in members])
    settings = GroupSettings(
        mode="distill" if teachers else ("finetune" if finetune else "scratch"), alpha=group.alpha,
        loss=group.loss, lr=group_lr, epochs=train_cfg.epochs, evals_per_epoch=train_cfg.evals_per_epoch,
        seed=train_cfg.seed, init=[str(p) for p in init], teachers=[str(t) for t in teachers],
        scope=group.scope, embedding_lr_scale=group.embedding_lr_scale, finetune_split=group.finetune_split,
        workers=par.world if par.distributed else None)
    before = Churn.from_dict(churn(start_logits)) if start_logits else None
    result = GroupResult.of(settings, results, before, Churn.from_dict(churn(after_logits)),
                            test=(np.asarray(store.split("test")[1]), after_logits))
    if par.is_main:
        GroupDir(out).write_group(result)
    return result


def distill(store_path: str | Path, out: str | Path, teacher: str | Path, student: str,
            **kw) -> GroupResult:
    """Student (a run to finetune, or a model name to train from scratch) learns from a frozen
    teacher; the peer weight is ``group.alpha`` (beta), ``auto`` by default."""
    if Path(student).exists():
        return mutual(store_path, out, init=[student], teachers=[teacher], **kw)
    return mutual(store_path, out, models=[student], seeds=kw.pop("seeds", ()) or [1], teachers=[teacher], **kw)


def ensemble(runs: Sequence[str | Path], store_path: str | Path, split: str = "test", device: str = "auto",
             batch_size: int = 0) -> EnsembleResult:
    """AUC/logloss of the average of the members' probabilities, of each member, and how much
    the members disagree (``churn``: see :func:`mutualctr.metrics.churn`)."""
    store = open_store(store_path)
    X, y = store.split(split)
    y = np.asarray(y)
    dev = resolve_device(device)
    probs, members, every = [], [], []
    for run in runs:
        model, cfg, _ = load_run(run, store)
        model.to(dev)
        logits = predict_logits(model, X, batch_size, dev)
        every.append(logits)
        probs.append(sigmoid(logits))
        members.append(MemberScores(run=str(run), model=cfg.model_name, **scores(y, logits)))
    avg = np.mean(probs, axis=0)
    logit_avg = np.log(np.clip(avg, 1e-12, 1)) - np.log(np.clip(1 - avg, 1e-12, 1))
    return EnsembleResult(**scores(y, logit_avg), members=members, split=split, churn=Churn.from_dict(churn(every)))
