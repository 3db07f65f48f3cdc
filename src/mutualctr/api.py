"""The Python API of mutualctr: what the command line does, as typed functions.

    import mutualctr as mc

    mc.synth(20_000, "synth.txt", seed=0)                       # or your own Criteo/Avazu/CTR files
    store = mc.prepare("criteo", ["synth.txt"], "store").store
    a = mc.train(store.path, "runs/a", model="deepfm", seed=1)
    b = mc.train(store.path, "runs/b", model="deepfm", seed=2)
    g = mc.mutual(store.path, "groups/ab", init=[a.run_dir, b.run_dir])   # alpha chosen on dev
    print(g.mean.test_auc, g.churn.after.mean_abs_diff)
    e = mc.ensemble([m.run_dir for m in g.members], store.path)
    mc.predict(g.members[0].run_dir, "new_rows.txt", "preds.csv")

Every function takes paths and typed settings and returns a dataclass of
:mod:`mutualctr.results` (its ``to_dict()`` is the JSON of the run files and of ``--json``).
Bad input raises a :class:`mutualctr.errors.MutualCTRError` with one clear line, as the CLI
prints it. ``quiet=True`` (the default here) shows no progress bars. How a job runs (device,
precision, threads, resume, ...) is one :class:`mutualctr.runtime.RuntimeOptions`: pass it as
``options=``, or its values as keyword arguments (which replace the ``options``' values). See
docs/api.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from mutualctr.data.prepare import prepare as _prepare
from mutualctr.data.synth import generate
from mutualctr.errors import ConfigError
from mutualctr.experiments import run_experiment
from mutualctr.experiments.online import OnlineSettings, run_online
from mutualctr.models.plugins import import_string
from mutualctr.results import EnsembleResult, GroupResult, Predictions, RunResult, Scores, VersionChurn
from mutualctr.runtime import RuntimeOptions
from mutualctr.serving import export_run
from mutualctr.training import jobs
from mutualctr.training.config import MutualConfig, RunConfig, load_run_config, with_group_overrides
from mutualctr.training.rundir import model_checkpoint_path

PathLike = str | Path
ModelLike = str | Callable[..., Any]  # a model name or import string, or a user model class or factory


def _model_name(model: ModelLike) -> str:
    """A model given from Python as its name: a class or factory as its import string
    ``module:qualname`` (what the run records and imports again to load it)."""
    return model if isinstance(model, str) else import_string(model)


def _path_ok(v) -> bool:
    return isinstance(v, (str, Path)) and str(v) != ""


def _bad(name: str, what: str, value) -> ConfigError:
    return ConfigError(f"{name}: expected {what}, got {value!r}")


_KINDS = {  # kind: (test of a given value, what it must be)
    "path": (_path_ok, "a path"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "model": (lambda v: _path_ok(v) or callable(v), "a model name, import string or class"),
}
_PLURAL = {"paths": "paths", "ints": "integers", "strs": "strings", "models": "model names or classes"}
_ITEM = {"paths": "path", "ints": "int", "strs": "str", "models": "model"}


def _check(required: tuple[str, ...] = (), **args: tuple[object, str]) -> None:
    """The arguments of an API call checked at entry (docs/api.md): each ``name=(value, kind)``
    is None (not given; refused for ``required`` names) or of its kind; ``paths``, ``ints`` and
    ``strs`` take a list or tuple (a single string is refused: it would be read letter by
    letter). A bad one raises :class:`ConfigError` naming the argument."""
    for name, (value, kind) in args.items():
        if value is None:
            if name in required:
                raise _bad(name, _KINDS[kind][1] if kind in _KINDS else f"a list of {_PLURAL[kind]}", value)
            continue
        if kind in _ITEM:
            item = _ITEM[kind]
            if isinstance(value, (str, bytes, Path)) or not isinstance(value, (list, tuple)):
                raise ConfigError(f"{name}: expected a list of {_PLURAL[kind]}, got {value!r}"
                                  + (f" (write {name}=[{value!r}])" if isinstance(value, (str, Path)) else ""))
            for i, v in enumerate(value):
                if not _KINDS[item][0](v):
                    raise _bad(f"{name}[{i}]", _KINDS[item][1], v)
        elif not _KINDS[kind][0](value):
            raise _bad(name, _KINDS[kind][1], value)


def _options(options: RuntimeOptions | None, **values) -> RuntimeOptions:
    """The options of an API call: ``options`` (default: quiet) with the keyword arguments that
    were given (None = not given) replacing single values."""
    return (options if options is not None else RuntimeOptions(quiet=True)).with_values(**values)


def synth(rows: int, out: PathLike, *, seed: int = 0, progress: bool = False):
    """Write ``rows`` synthetic Criteo-format rows to ``out`` (TSV; gzip when it ends in .gz)
    from a hidden ground-truth model, whose own AUC (the ceiling) the result reports.
    Returns :class:`mutualctr.data.synth.SynthResult`."""
    _check(("rows", "out", "seed"), rows=(rows, "int"), out=(out, "path"), seed=(seed, "int"))
    return generate(rows, Path(out), seed=seed, progress=progress)


def prepare(dataset: PathLike, inputs: Sequence[PathLike] | PathLike, out: PathLike, *, split: str = "random",
            seed: int = 0, min_count: int | None = None, on_bad_rows: str = "error", overwrite: bool = False,
            vocab_from: PathLike | None = None, progress: bool = False, grow: bool = False):
    """Raw files (``dataset``: ``criteo``, ``avazu`` or a schema YAML) into a memory-mapped store
    at ``out`` (reused when inputs and settings are unchanged). ``vocab_from``: encode with an
    existing store's vocabularies (runs of that store then score and finetune on this one);
    with ``grow`` they grow with the new rows' values (docs/data.md, "Growing vocabularies").
    Returns :class:`mutualctr.data.prepare.PrepareResult` (``.store``, ``.reused``, ``.summary``: a typed
    :class:`mutualctr.data.prepare.PrepareSummary`, ``.to_dict()`` for JSON)."""
    _check(("dataset", "out", "seed"), dataset=(dataset, "path"), out=(out, "path"), split=(split, "str"),
           seed=(seed, "int"), min_count=(min_count, "int"), on_bad_rows=(on_bad_rows, "str"),
           overwrite=(overwrite, "bool"), vocab_from=(vocab_from, "path"))
    if not _path_ok(inputs):  # one path, or a list of them
        _check(("inputs",), inputs=(inputs, "paths"))
    files = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    return _prepare(str(dataset), files, Path(out), split=split, seed=seed, min_count=min_count,
                    on_bad_rows=on_bad_rows, overwrite=overwrite, progress=progress, vocab_from=vocab_from,
                    grow=grow)


def default_config(model: str, dataset: str | None = None, config_dir: PathLike | None = None) -> RunConfig:
    """The shipped config of ``model`` for ``dataset`` (the paper's protocol), or
    ``config_dir``'s; see docs/training.md."""
    return jobs.default_config(model, dataset, Path(config_dir) if config_dir else None)


def load_config(path: PathLike) -> RunConfig:
    """A run config YAML (strict: unknown keys and bad values are errors naming the key)."""
    return load_run_config(path)


def train(data: PathLike, out: PathLike, *, model: ModelLike | None = None, config: PathLike | RunConfig | None = None,
          seed: int | None = None, epochs: int | None = None, lr: float | None = None,
          batch_size: int | None = None, device: str | None = None, precision: str | None = None,
          compile: bool | str | None = None, resume: bool | None = None, quiet: bool | None = None,
          dist_timeout: float | None = None, tensorboard: PathLike | None = None, threads: int | None = None,
          options: RuntimeOptions | None = None, init: PathLike | None = None) -> RunResult:
    """Train one model on store ``data`` into run directory ``out``; the best-on-dev checkpoint
    and its test metrics. ``config``: a RunConfig or YAML (default: the shipped config of
    ``model`` for the store's dataset, or with ``resume`` the run's own); the other arguments
    replace single values. Under torchrun the workers train it data-parallel. ``tensorboard``:
    also write the evaluations as TensorBoard scalars there (needs ``mutualctr[tensorboard]``).
    ``threads``: torch CPU threads (1 when other jobs share the cores). ``device`` ...
    ``threads`` are :class:`RuntimeOptions` values (default: ``options``', else quiet).
    ``init``: a warm start from that run (its config unless ``config``; ``lr``, ``epochs``... replace
    single values), recorded as the run's ``init_from``."""
    _check(("data", "out"), data=(data, "path"), out=(out, "path"), model=(model, "model"), seed=(seed, "int"),
           epochs=(epochs, "int"), lr=(lr, "number"), batch_size=(batch_size, "int"))
    if config is not None and not isinstance(config, RunConfig):
        _check(config=(config, "path"))
    opts = _options(options, device=device, precision=precision, compile=compile, resume=resume, quiet=quiet,
                    dist_timeout=dist_timeout, tensorboard=tensorboard, threads=threads)
    cfg = jobs.resolve_run_config(data, out, model=None if model is None else _model_name(model), config=config,
                                  seed=seed, epochs=epochs, lr=lr, batch_size=batch_size, resume=opts.resume,
                                  init=init)
    return jobs.train(data, out, cfg, opts, init=init)


def evaluate(run: PathLike, data: PathLike, split: str = "test", *, device: str = "auto") -> Scores:
    """A run's best checkpoint scored on ``split`` of store ``data``."""
    _check(("run", "data", "split", "device"), run=(run, "path"), data=(data, "path"), split=(split, "str"),
           device=(device, "str"))
    return jobs.evaluate(run, data, split, device=device)


def churn(run: PathLike, against: PathLike, data: PathLike, split: str = "test", *,
          device: str = "auto") -> VersionChurn:
    """Version churn of run ``run`` against an earlier run ``against`` on ``split`` of ``data``:
    mean |p_new - p_old|, the share of rows whose rank moved by more than a decile, the logit
    correlation, and both runs' scores."""
    return jobs.version_churn(run, against, data, split, device=device)


def predict(run: PathLike, input: PathLike, out: PathLike, *, keep: Sequence[str] = (), data: PathLike | None = None,
            device: str = "auto") -> Predictions:
    """Click probabilities for raw rows (encoded with the run's store: unseen values are OOV),
    written as CSV with the ``keep`` columns beside them."""
    _check(("run", "input", "out", "device"), run=(run, "path"), input=(input, "path"), out=(out, "path"),
           keep=(keep, "strs"), data=(data, "path"), device=(device, "str"))
    return jobs.predict(run, input, out, keep=list(keep), store_path=data, device=device)


def mutual(data: PathLike, out: PathLike, *, init: Sequence[PathLike] = (), models: Sequence[ModelLike] = (),
           seeds: Sequence[int] = (), teachers: Sequence[PathLike] = (), group: MutualConfig | None = None,
           config: PathLike | None = None, alpha: float | str | None = None, loss: str | None = None,
           lr: float | None = None, epochs: int | None = None, evals_per_epoch: int | None = None,
           scope: str | None = None, embedding_lr_scale: float | None = None, finetune_split: float | None = None,
           seed: int | None = None, device: str | None = None, precision: str | None = None,
           compile: bool | str | None = None, vectorize: bool | None = None, config_dir: PathLike | None = None,
           resume: bool | None = None, quiet: bool | None = None, dist_timeout: float | None = None,
           tensorboard: PathLike | None = None, threads: int | None = None,
           options: RuntimeOptions | None = None) -> GroupResult:
    """Deep mutual learning: finetune trained runs (``init``) together, or train ``models``
    (with ``seeds``) together from scratch, each member learning from the labels and its peers.

    The group's settings (:class:`MutualConfig`, docs/training.md) are ``group``, else the
    ``mutual:`` section of ``config``, else of the first member's config; the other arguments
    replace single values (``alpha=0`` is the continued-training control; ``alpha="auto"``, the
    default, chooses it on dev). ``lr``, ``epochs``, ``evals_per_epoch`` are the finetuning's,
    or for a group from scratch the members' own. ``teachers``: frozen peers (distillation).
    ``device`` ... ``threads``: :class:`RuntimeOptions` values, as for :func:`train`."""
    _check(("data", "out"), data=(data, "path"), out=(out, "path"), init=(init, "paths"), models=(models, "models"),
           seeds=(seeds, "ints"), teachers=(teachers, "paths"), config=(config, "path"), loss=(loss, "str"),
           lr=(lr, "number"), epochs=(epochs, "int"), evals_per_epoch=(evals_per_epoch, "int"), scope=(scope, "str"),
           embedding_lr_scale=(embedding_lr_scale, "number"), finetune_split=(finetune_split, "number"),
           seed=(seed, "int"), config_dir=(config_dir, "path"))
    if alpha is not None and not isinstance(alpha, str):
        _check(alpha=(alpha, "number"))
    if group is not None and not isinstance(group, MutualConfig):
        raise _bad("group", "a MutualConfig", group)
    opts = _options(options, device=device, precision=precision, compile=compile, vectorize=vectorize,
                    resume=resume, quiet=quiet, dist_timeout=dist_timeout, tensorboard=tensorboard, threads=threads)
    return jobs.mutual_from_flags(data, out, init=list(init), models=[_model_name(m) for m in models],
                               seeds=list(seeds), teachers=list(teachers), group=group, config_file=config,
                               config_dir=Path(config_dir) if config_dir else None, alpha=alpha, loss=loss, lr=lr,
                               epochs=epochs, evals_per_epoch=evals_per_epoch, scope=scope,
                               embedding_lr_scale=embedding_lr_scale, finetune_split=finetune_split, seed=seed,
                               options=opts)


def distill(data: PathLike, out: PathLike, *, teacher: PathLike, student: PathLike | ModelLike,
            group: MutualConfig | None = None, config: PathLike | None = None, beta: float | str | None = None,
            loss: str | None = None, lr: float | None = None, epochs: int | None = None,
            evals_per_epoch: int | None = None, scope: str | None = None, embedding_lr_scale: float | None = None,
            finetune_split: float | None = None, seed: int | None = None, device: str | None = None,
            resume: bool | None = None, quiet: bool | None = None, threads: int | None = None,
            options: RuntimeOptions | None = None) -> GroupResult:
    """Knowledge distillation: ``student`` (a run to finetune, or a model name to train) learns
    from the labels and the frozen ``teacher``'s predictions, weighted by ``beta`` (``auto``:
    chosen on dev); the settings are :func:`mutual`'s."""
    _check(("teacher", "student"), teacher=(teacher, "path"), student=(student, "model"))
    if beta is not None:
        try:  # checked here, so that the message says beta, not the mutual.alpha it is stored as
            with_group_overrides(MutualConfig(), alpha=beta)
        except ConfigError as e:
            raise ConfigError(str(e).replace("mutual.alpha", "distill.beta")) from None
    opts = _options(options, device=device, resume=resume, quiet=quiet, threads=threads)
    finetune = isinstance(student, (str, Path)) and Path(student).exists()
    return mutual(data, out, init=[student] if finetune else (),
                  models=() if finetune else [student if callable(student) else str(student)],
                  teachers=[teacher], group=group, config=config, alpha=beta, loss=loss, lr=lr, epochs=epochs,
                  evals_per_epoch=evals_per_epoch, scope=scope, embedding_lr_scale=embedding_lr_scale,
                  finetune_split=finetune_split, seed=seed, options=opts)


def ensemble(runs: Sequence[PathLike], data: PathLike, split: str = "test", *, device: str = "auto") -> EnsembleResult:
    """The average of the runs' probabilities on ``split``, each run's own scores, and how much
    the runs disagree (churn)."""
    _check(("runs", "data", "split", "device"), runs=(runs, "paths"), data=(data, "path"), split=(split, "str"),
           device=(device, "str"))
    return jobs.ensemble(list(runs), data, split, device=device)


def load_run(run: PathLike, data: PathLike | None = None):
    """A run's best model (a plain ``nn.Module``: ids (B, F) in, logits (B,) out), its config and
    checkpoint; checked against store ``data`` when given. Returns
    :class:`mutualctr.training.jobs.LoadedRun`."""
    store = jobs.open_store(data) if data is not None else None
    model, cfg, ck = jobs.load_run(run, store)
    return jobs.LoadedRun(model=model.eval(), config=cfg, checkpoint=ck, path=model_checkpoint_path(run))


def export(run: PathLike, out: PathLike, *, format: str = "onnx", data: PathLike | None = None,
           check: bool = False, tolerance: float = 1e-5, overwrite: bool = False):
    """A run's model (ids in, probability out) as ONNX or TorchScript plus the encoder spec that
    turns raw rows into its ids; see docs/export.md. Returns
    :class:`mutualctr.serving.ExportResult`."""
    return export_run(run, out, format=format, store_path=data, check=check, tolerance=tolerance,
                      overwrite=overwrite)


def online_experiment(data: PathLike, out: PathLike, *, dataset: str, periods: int = 7,
                      models: Sequence[str] = ("deepfm", "dcn"), alpha: float = 1.0, lr: float = 1e-4,
                      epochs: int = 1, pretrain_epochs: int | None = None, config_dir: PathLike | None = None,
                      threads: int | None = None, time_column: str | None = None,
                      period: str | None = None) -> dict:
    """The daily update over ``periods`` consecutive periods of the time-ordered raw file ``data``
    (schema ``dataset``): pretrain, then per period the incremental update, the mutual finetune
    and the alpha-0 control, each scored on the next period (:mod:`mutualctr.experiments.online`).
    The periods hold equal rows, or with ``time_column`` are the first ``periods`` calendar
    ``period``s (day, week, month: the default) of that column (:mod:`mutualctr.experiments.periods`).
    Resumable. Returns {"rows", "new_ids", "tables", "plots", "periods"}."""
    st = OnlineSettings(dataset=str(dataset), periods=periods, models=list(models), alpha=alpha, lr=lr,
                        epochs=epochs, pretrain_epochs=pretrain_epochs, threads=threads,
                        config_dir=None if config_dir is None else str(config_dir), time_column=time_column,
                        period=period)
    return run_online(Path(data), Path(out), st)


def experiment(questions: str | Sequence[str], data: PathLike, out: PathLike, *,
               models: Sequence[ModelLike] = ("deepfm", "dcn", "pnn", "fibinet"), instances: int = 4,
               seeds: Sequence[int] | None = None, config_dir: PathLike | None = None, epochs: int | None = None,
               alphas: Sequence[float] | None = None, finetune_lrs: Sequence[float] | None = None,
               finetune_split: float = 0.0, scope: str | None = None, embedding_lr_scale: float | None = None,
               runs_dir: PathLike | None = None, rq4_model: str | None = None, paper: bool | None = None, threads: int | None = None,
               quiet: bool = True, precision: str | None = None) -> dict:
    """The paper's research questions (``rq1``..``rq4``, ``all``) with controls, written to
    ``out`` (results.csv, tables.md, stats.json, plots); ``alphas=None`` chooses alpha on dev
    (auto). Returns {"rows", "bootstrap", "choices", "paths", "seconds", "dataset"}."""
    _check(("data", "out", "instances"), data=(data, "path"), out=(out, "path"), models=(models, "models"),
           instances=(instances, "int"), seeds=(seeds, "ints"), config_dir=(config_dir, "path"),
           epochs=(epochs, "int"), runs_dir=(runs_dir, "path"), rq4_model=(rq4_model, "str"),
           precision=(precision, "str"))
    if not isinstance(questions, str):
        _check(("questions",), questions=(questions, "strs"))
    return run_experiment(questions, data, out, [_model_name(m) for m in models], instances=instances, seeds=seeds,
                          config_dir=Path(config_dir) if config_dir else None, epochs=epochs, alphas=alphas,
                          finetune_lrs=finetune_lrs, finetune_split=finetune_split, scope=scope,
                          embedding_lr_scale=embedding_lr_scale, runs_dir=runs_dir, rq4_model=rq4_model,
                          reference=paper, quiet=quiet, threads=threads, precision=precision)
