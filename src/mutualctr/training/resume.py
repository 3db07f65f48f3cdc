"""``--resume`` continues the same job (issue 28): the protocol settings given again (flags, API
arguments, a ``--config``) are compared with what the run or group recorded when it started,
and a difference is refused with one line naming the setting; nothing is changed. Run-time
options (threads, device, compile, quiet, TensorBoard, the distributed timeout, vectorize) may
differ; the precision may not (a resumed run keeps the precision it started with)."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Mapping

from mutualctr.errors import ConfigError
from mutualctr.training.config import MutualConfig, RunConfig, load_run_config, run_config_to_dict, with_group_overrides

# how each run may run differently from one start to the next, never what it computes
RUNTIME_KEYS = frozenset({"train.device", "train.compile", "train.threads", "train.prefetch",
                          "train.eval_batch_size", "train.checkpoint_every"})
# the flag that sets a key, for the advice of the refusal
FLAGS = {"model.name": "--model", "train.seed": "--seed", "train.epochs": "--epochs", "optim.lr": "--lr",
         "train.batch_size": "--batch-size", "train.precision": "--precision",
         "train.evals_per_epoch": "--evals-per-epoch", "mutual.alpha": "--alpha", "mutual.loss": "--loss",
         "mutual.lr": "--lr", "mutual.epochs": "--epochs", "mutual.evals_per_epoch": "--evals-per-epoch",
         "mutual.scope": "--scope", "mutual.embedding_lr_scale": "--embedding-lr-scale",
         "mutual.finetune_split": "--finetune-split", "members": "--models/--init", "seeds": "--seeds"}


def refuse(key: str, recorded: Any, what: str = "run", flag: str | None = None) -> ConfigError:
    flag = flag or FLAGS.get(key, "--config")
    return ConfigError(f"{key}: the {what} was started with {_show(recorded)}; --resume continues the same job "
                       f"(drop {flag} or choose another --out)")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    return str(value)


def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def check_run(recorded: RunConfig, given: RunConfig, what: str = "run", from_file: bool = False) -> None:
    """Refuse the first protocol setting of ``given`` that differs from ``recorded`` (the model
    name first: a different model differs in many keys); ``from_file``: ``given`` is a
    ``--config`` (the advice names it)."""
    old, new = flat(run_config_to_dict(recorded)), flat(run_config_to_dict(given))
    if new.get("train.precision") == "auto":  # the default: the precision the run started with
        new["train.precision"] = old.get("train.precision")
    keys = ["model.name", *sorted(k for k in old.keys() | new.keys() if k != "model.name")]
    for key in keys:
        if key not in RUNTIME_KEYS and old.get(key) != new.get(key):
            raise refuse(key, old.get(key), what, "--config" if from_file else None)


def check_precision(recorded: RunConfig, precision: str | None, what: str = "run") -> None:
    """A resume keeps the precision the job started with: ``auto`` (the default) means that one;
    an explicit other value is refused."""
    if precision not in (None, "auto") and precision != recorded.train.precision:
        raise refuse("train.precision", recorded.train.precision, what)


def recorded_members(out: Path) -> list[tuple[Path, RunConfig]]:
    """The members of a started group (``OUT/mI-MODEL``, or the first alpha tried of a search:
    ``OUT/alpha-A/mI-MODEL``) with their recorded configs, in member order; [] when none is
    started."""
    dirs = sorted(out.glob("m[0-9]*-*/config.yaml"))
    if not dirs:
        tried = sorted(out.glob("alpha-*/"), key=lambda p: p.stat().st_mtime)
        dirs = sorted(tried[0].glob("m[0-9]*-*/config.yaml")) if tried else []
    dirs.sort(key=lambda p: int(p.parent.name[1:].split("-", 1)[0]))
    return [(p.parent, load_run_config(p)) for p in dirs]


def recorded_group(out: Path, members: list[tuple[Path, RunConfig]]) -> MutualConfig:
    """The group settings a started group recorded (its members' ``mutual`` section; ``alpha:
    auto`` where it searched)."""
    group = members[0][1].mutual
    return replace(group, alpha="auto") if any(out.glob("alpha-*/")) else group


def check_group(recorded: MutualConfig, given: dict[str, Any], what: str) -> None:
    """Refuse the first of the ``given`` group settings (flags: None = not given; or every
    field of a given MutualConfig) that differs from ``recorded``."""
    for f in fields(MutualConfig):
        new = given.get(f.name)
        if new is None:
            continue
        old = getattr(recorded, f.name)
        if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(new, bool):
            same = float(old) == float(new)
        else:
            same = old == new
        if not same:
            flag = "--beta" if what == "distillation" and f.name == "alpha" else None
            key = "distill.beta" if flag else f"mutual.{f.name}"
            raise refuse(key, old, what, flag)


def check_group_job(out: Path, *, flags: dict[str, Any], group: MutualConfig | None, config_file,
                    models, seeds, member_flags: dict[str, Any], precision: str | None,
                    what: str) -> tuple[MutualConfig, str] | None:
    """On ``--resume`` of a started group: refuse what differs from its record (group settings
    given as flags, a whole ``group`` or the ``mutual`` section of ``config_file``; the models,
    seeds and member flags of a group from scratch; the precision). Returns the recorded group
    settings and precision (None: nothing started, a fresh start)."""
    members = recorded_members(Path(out))
    if not members:
        return None
    recorded = recorded_group(Path(out), members)
    whole = group if group is not None else (load_run_config(config_file).mutual if config_file else None)
    if whole is not None:
        check_group(recorded, {f.name: getattr(whole, f.name) for f in fields(MutualConfig)}, what)
    given = {k: v for k, v in flags.items() if v is not None}
    if given:
        parsed = with_group_overrides(MutualConfig(), **given)
        check_group(recorded, {k: getattr(parsed, k) for k in given}, what)
    cfgs = [c for _, c in members]
    if models and [str(m) for m in models] != [c.model_name for c in cfgs]:
        raise refuse("members", [c.model_name for c in cfgs], what)
    if models and seeds and [int(s) for s in seeds] != [c.train.seed for c in cfgs]:
        raise refuse("seeds", [c.train.seed for c in cfgs], what)
    keys = {"lr": "optim.lr", "epochs": "train.epochs", "evals_per_epoch": "train.evals_per_epoch"}
    for name, value in member_flags.items():
        old = flat(run_config_to_dict(cfgs[0]))[keys[name]]
        if value is not None and old != value:
            raise refuse(keys[name], old, what, f"--{name.replace('_', '-')}")
    check_precision(cfgs[0], precision, what)
    return recorded, cfgs[0].train.precision
