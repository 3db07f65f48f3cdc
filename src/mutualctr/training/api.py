"""High-level operations behind the CLI: train, evaluate, predict, mutual, distill, ensemble.

Every function takes paths and typed settings, returns plain dicts, and prints nothing
(progress bars aside); the CLI formats the output.
"""

from __future__ import annotations

import copy

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mutualctr import atomic
from mutualctr.config import ConfigError
from mutualctr.errors import CheckpointError
from mutualctr.training import checkpoint
from mutualctr.training.config import (
    MutualConfig, RunConfig, load_run_config, run_config_from_dict, with_precision,
)
from mutualctr.training.metrics import relaimp
from mutualctr.training.trainer import Member, Trainer, predict_logits, resolve_device, scores


def open_store(path: str | Path):
    from mutualctr.data.store import Store

    return Store.open(path)


def default_config(model: str, dataset: str | None = None, config_dir: Path | None = None) -> RunConfig:
    """The config of ``model`` for ``dataset``: :func:`mutualctr.resources.find_config` (the shipped
    configs, ``config_dir`` first; a fallback to another dataset's config warns)."""
    from mutualctr.resources import find_config

    return find_config(model, dataset, config_dir).config


def build(cfg: RunConfig, store, seed: int | None = None):
    from mutualctr.models import build_model

    torch.manual_seed(cfg.train.seed if seed is None else seed)
    fm = store.feature_map
    return build_model(cfg.model_name, fm.num_features, fm.num_fields, cfg.model_params())


def load_run(run: str | Path, store=None) -> tuple[torch.nn.Module, RunConfig, dict[str, Any]]:
    """The best model of a run directory (or a best.pt file), checked against ``store``."""
    from mutualctr.models import build_model

    run = Path(run)
    path = run if run.suffix == ".pt" else run / "checkpoints" / "best.pt"
    if not run.exists():
        raise CheckpointError(f"{run}: no such run directory")
    ck = checkpoint.load(path)
    if ck.get("kind") != "model":
        raise CheckpointError(f"{path}: not a model checkpoint")
    if store is not None:
        checkpoint.check_store(ck, store, path)
    cfg = run_config_from_dict(ck["config"], str(path))
    model = build_model(cfg.model_name, ck["num_features"], ck["num_fields"], cfg.model_params())
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit model {cfg.model_name}: {e}") from e
    return model, cfg, ck


def _check_out(out: Path, resume: bool) -> None:
    if resume:
        return
    if (out / "checkpoints").exists():
        raise CheckpointError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")


def train(store_path: str | Path, out: str | Path, cfg: RunConfig, resume: bool = False,
          quiet: bool = False, dist_timeout: float | None = None) -> dict[str, Any]:
    """Independent training of one model (the trainer with N = 1).

    Under torchrun (``WORLD_SIZE > 1``) the workers train it data-parallel: each reads its
    shard of every global batch; rank 0 writes the run (see docs/distributed.md).
    """
    from mutualctr.distributed import session

    with session(1, cfg.train.device, dist_timeout) as par:
        store = open_store(store_path)
        out = Path(out)
        _check_out(out, resume)
        par.barrier("the start")  # every worker checked --out before anyone writes into it
        member = Member(config=cfg, model=build(cfg, store), run_dir=out)
        trainer = Trainer(store, [member], out, cfg.train, quiet=quiet, parallel=par)
        return trainer.fit(resume=resume)[0]


def evaluate(run: str | Path, store_path: str | Path, split: str = "test", device: str = "auto",
             batch_size: int = 0) -> dict[str, Any]:
    store = open_store(store_path)
    model, _, _ = load_run(run, store)
    dev = resolve_device(device)
    model.to(dev)
    X, y = store.split(split)
    return scores(np.asarray(y), predict_logits(model, X, batch_size, dev))


def predict(run: str | Path, input_path: str | Path, out: str | Path, keep: Sequence[str] = (),
            store_path: str | Path | None = None, device: str = "auto", batch_size: int = 0) -> dict[str, Any]:
    """Encode raw rows with the run's store vocabulary and write probabilities as CSV."""
    from mutualctr.data.encode import encode_file

    run = Path(run)
    if store_path is None:
        ck = checkpoint.load(run / "checkpoints" / "best.pt")
        store_path = ck.get("store_path")
    store = open_store(store_path)
    model, _, _ = load_run(run, store)
    enc = encode_file(store, Path(input_path), keep=list(keep))
    dev = resolve_device(device)
    model.to(dev)
    logits = predict_logits(model, enc.X, batch_size, dev)
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    out = Path(out)
    with atomic.atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            cols = list(keep)
            w.writerow(cols + ["probability"])
            kept = [enc.kept[c] for c in cols]
            for i in range(len(probs)):
                w.writerow([k[i] for k in kept] + [f"{probs[i]:.6f}"])
    res = {"rows": int(len(probs)), "out": str(out)}
    if enc.labels is not None and len(np.unique(enc.labels)) == 2:
        res.update({k: v for k, v in scores(enc.labels, logits).items() if k != "rows"})
    return res


# ---- groups -----------------------------------------------------------------------------

def _member_dir(out: Path, i: int, name: str) -> Path:
    return out / f"m{i}-{name}"


def _group_result(results: list[dict[str, Any]], out: Path, settings: dict[str, Any],
                  write: bool = True) -> dict[str, Any]:
    for r in results:
        s = r.get("start")
        if s:
            r["relaimp_test"] = relaimp(r["test_auc"], s["test_auc"])
            r["relaimp_dev"] = relaimp(r["dev_auc"], s["dev_auc"])
    keys = ["dev_auc", "dev_logloss", "test_auc", "test_logloss", "relaimp_test"]
    mean = {k: float(np.mean([r[k] for r in results])) for k in keys if all(k in r for r in results)}
    if all(r.get("start") for r in results):
        mean["start_test_auc"] = float(np.mean([r["start"]["test_auc"] for r in results]))
        mean["start_dev_auc"] = float(np.mean([r["start"]["dev_auc"] for r in results]))
    group = {"settings": settings, "members": results, "mean": mean}
    if write:
        atomic.write_json(out / "group.json", group)
    return group


def mutual(store_path: str | Path, out: str | Path, *, init: Sequence[str | Path] = (),
           models: Sequence[str] = (), seeds: Sequence[int] = (), alpha: float = 1.0,
           loss: str = "mse_prob", lr: float | None = None, epochs: int | None = None,
           evals_per_epoch: int | None = None, seed: int | None = None, device: str | None = None,
           config_dir: Path | None = None, resume: bool = False, quiet: bool = False,
           teachers: Sequence[str | Path] = (), dist_timeout: float | None = None,
           configs: Sequence[RunConfig] = (), precision: str | None = None,
           compile: bool | None = None, vectorize: bool = False) -> dict[str, Any]:
    """Train a group: finetune from runs (``init``) or from scratch (``models`` + ``seeds``, or
    ``configs``: one :class:`RunConfig` per member, used as given, each built with its own
    ``train.seed`` unless ``seeds`` are given).

    ``alpha = 0`` is the no-mutual control (each member trained as if alone). ``teachers``
    turns the peer term into distillation from frozen models. Under torchrun the members are
    spread over the workers (one per worker, several per worker, or a data-parallel group of
    workers per member; see docs/distributed.md); every worker returns the whole group.
    """
    from mutualctr.distributed import session

    n = len(init) or len(models) or len(configs)
    with session(max(n, 1), device, dist_timeout) as par:
        return _mutual(par, store_path, out, init=init, models=models, seeds=seeds, alpha=alpha, loss=loss,
                       lr=lr, epochs=epochs, evals_per_epoch=evals_per_epoch, seed=seed, device=device,
                       config_dir=config_dir, resume=resume, quiet=quiet, teachers=teachers,
                       configs=configs, precision=precision, compile=compile, vectorize=vectorize)


def _train_config_of_run(run: str | Path):
    """The ``train`` section of a run, without loading its weights where config.yaml is there."""
    run = Path(run)
    if run.is_dir() and (run / "config.yaml").is_file():
        return load_run_config(run / "config.yaml").train
    return load_run(run)[1].train


def _mutual(par, store_path, out, *, init, models, seeds, alpha, loss, lr, epochs, evals_per_epoch, seed,
            device, config_dir, resume, quiet, teachers, configs, precision, compile, vectorize) -> dict[str, Any]:
    store = open_store(store_path)
    out = Path(out)
    _check_out(out, resume)
    if loss not in ("mse_prob", "mse_logit", "kl"):
        raise ConfigError(f"unknown mutual loss {loss!r} (mse_prob, mse_logit, kl)")
    mcfg = MutualConfig(alpha=alpha, loss=loss)
    members: list[Member] = []
    finetune = bool(init)
    if finetune and (models or configs):
        raise ConfigError("give either --init RUN... (finetune) or --models (scratch), not both")
    if models and configs:
        raise ConfigError("give either models or configs for a group from scratch, not both")
    if finetune:
        lr = 1e-4 if lr is None else lr
        for i, run in enumerate(init):
            if i not in par.member_ids:  # another worker's member
                continue
            model, cfg, ck = load_run(run, store)
            cfg = replace(cfg, optim=replace(cfg.optim, lr=lr))
            members.append(Member(config=cfg, model=model, run_dir=_member_dir(out, i, cfg.model_name),
                                  init_from=str(Path(run).resolve())))
        base = members[0].config.train if par.member_ids[0] == 0 else _train_config_of_run(init[0])
        train_cfg = replace(base, epochs=1 if epochs is None else epochs,
                            evals_per_epoch=4 if evals_per_epoch is None else evals_per_epoch, patience=0)
        group_lr = lr
    else:
        if not models and not configs:
            raise ConfigError("give --init RUN... to finetune or --models NAME,... to train from scratch")
        if configs:
            bases = [copy.deepcopy(c).validate() for c in configs]
            seeds = list(seeds) or [c.train.seed for c in bases]
        else:
            dataset = getattr(store.feature_map, "dataset", None)
            bases = [default_config(name, dataset, config_dir) for name in models]
            seeds = list(seeds) or list(range(1, len(models) + 1))
        if len(seeds) != len(bases):
            raise ConfigError(f"--seeds has {len(seeds)} values for {len(bases)} models")
        cfgs = []
        for i, (member_cfg, s) in enumerate(zip(bases, seeds)):
            cfg = replace(member_cfg, train=replace(member_cfg.train, seed=s))
            if lr is not None:
                cfg = replace(cfg, optim=replace(cfg.optim, lr=lr))
            cfgs.append(cfg)
            if i in par.member_ids:
                members.append(Member(config=cfg, model=build(cfg, store, seed=s),
                                      run_dir=_member_dir(out, i, cfg.model_name)))
        base = cfgs[0].train
        group_lr = cfgs[0].optim.lr
        train_cfg = replace(base, epochs=base.epochs if epochs is None else epochs,
                            evals_per_epoch=base.evals_per_epoch if evals_per_epoch is None else evals_per_epoch)
    if seed is not None:
        train_cfg = replace(train_cfg, seed=seed)
    if device is not None:
        train_cfg = replace(train_cfg, device=device)
    train_cfg = with_precision(train_cfg, precision)
    if compile is not None:
        train_cfg = replace(train_cfg, compile=compile)
    teacher_models = [load_run(t, store)[0] for t in teachers]
    par.barrier("the start")  # every worker checked --out before anyone writes into it
    trainer = Trainer(store, members, out, train_cfg, mcfg, teachers=teacher_models, quiet=quiet,
                      finetune=finetune, parallel=par, vectorize=vectorize)
    if finetune and not (resume and trainer.ckpt_path.is_file()):
        for m in members:
            d, t = trainer.evaluate(m.model, "dev"), trainer.evaluate(m.model, "test")
            m.start = {"dev_auc": d["auc"], "dev_logloss": d["logloss"], "test_auc": t["auc"], "test_logloss": t["logloss"]}
        starts = par.member_results([m.start for m in members])
        if par.is_main:
            atomic.write_json(out / "start.json", starts)
    elif finetune:
        import json

        starts = json.loads((out / "start.json").read_text())
        for m, gi in zip(members, par.member_ids):
            m.start = starts[gi]
    results = par.member_results(trainer.fit(resume=resume))
    settings = {"mode": "distill" if teachers else ("finetune" if finetune else "scratch"), "alpha": alpha,
                "loss": loss, "lr": group_lr, "epochs": train_cfg.epochs,
                "evals_per_epoch": train_cfg.evals_per_epoch, "seed": train_cfg.seed,
                "init": [str(p) for p in init], "teachers": [str(t) for t in teachers]}
    if par.distributed:
        settings["workers"] = par.world
    return _group_result(results, out, settings, write=par.is_main)


def distill(store_path: str | Path, out: str | Path, teacher: str | Path, student: str, beta: float = 1.0,
            **kw) -> dict[str, Any]:
    """Student (a run to finetune, or a model name to train from scratch) learns from a frozen teacher."""
    if Path(student).exists():
        return mutual(store_path, out, init=[student], alpha=beta, teachers=[teacher], **kw)
    return mutual(store_path, out, models=[student], seeds=kw.pop("seeds", ()) or [1], alpha=beta,
                  teachers=[teacher], **kw)


def ensemble(runs: Sequence[str | Path], store_path: str | Path, split: str = "test", device: str = "auto",
             batch_size: int = 0) -> dict[str, Any]:
    """AUC/logloss of the average of the members' probabilities, and of each member."""
    store = open_store(store_path)
    X, y = store.split(split)
    y = np.asarray(y)
    dev = resolve_device(device)
    probs, members = [], []
    for run in runs:
        model, cfg, _ = load_run(run, store)
        model.to(dev)
        logits = predict_logits(model, X, batch_size, dev)
        probs.append(1.0 / (1.0 + np.exp(-logits.astype(np.float64))))
        members.append({"run": str(run), "model": cfg.model_name, **scores(y, logits)})
    avg = np.mean(probs, axis=0)
    logit_avg = np.log(np.clip(avg, 1e-12, 1)) - np.log(np.clip(1 - avg, 1e-12, 1))
    res = scores(y, logit_avg)
    res["members"] = members
    res["split"] = split
    return res
