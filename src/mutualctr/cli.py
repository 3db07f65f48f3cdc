"""The `mutualctr` command line: thin wrappers that parse, call the library and print.

Each command imports the library (and torch) when it runs, so that `mutualctr --help` and the
error paths stay fast.
Library errors (ConfigError, StoreError, DataError, CheckpointError, ...) derive from
``MutualCTRError``; :func:`main` prints them (and a missing file) as one clear line, exit code 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

import mutualctr as mc
from mutualctr import interrupt, outdir
from mutualctr.errors import MutualCTRError
from mutualctr.progress import make_console
from mutualctr.resources import ConfigFallbackWarning, schema_description, schema_names, schema_path
from mutualctr.runtime import RuntimeOptions

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="CTR prediction with deep mutual learning.")
data_app = typer.Typer(no_args_is_help=True, help="Data utilities (synthetic data).")
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mutualctr {mc.__version__}")
        raise typer.Exit()


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=None) -> None:
    # lazy: torch and the library load only when a command runs (--help, errors stay fast)
    from mutualctr.training.device import CPUContentionWarning

    if issubclass(category, (ConfigFallbackWarning, CPUContentionWarning)):  # one line, like the errors
        typer.secho(f"warning: {getattr(message, 'cli', message)}", err=True, fg=typer.colors.YELLOW)
    else:
        _default(message, category, filename, lineno, file, line)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    if getattr(warnings.showwarning, "func", None) is not _show_warning:  # once per process
        warnings.showwarning = functools.partial(_show_warning, _default=warnings.showwarning)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


# ---- data (issue 2) ------------------------------------------------------------------


def _print_prepare_summary(result) -> None:
    s = result.summary
    console = make_console()  # a file or a pipe: full-width tables, no colours
    head = "reused existing store" if result.reused else "prepared store"
    console.print(f"[bold]{head}[/bold] {result.store.path}  (fingerprint {s.fingerprint})")
    if s.parent:
        console.print(f"vocabularies of {s.parent['path']} (fingerprint {s.parent['fingerprint']}); "
                      f"vocabulary fingerprint {s.vocab_fingerprint}")
    splits = Table(title="splits")
    for col in ("split", "rows", "click rate"):
        splits.add_column(col, justify="right" if col != "split" else "left")
    for name, rows in s.rows.items():
        splits.add_row(name, f"{rows:,}", f"{s.click_rate[name]:.4f}")
    console.print(splits)
    vocab = Table(title="vocabulary size per field")
    vocab.add_column("field")
    vocab.add_column("size", justify="right")
    for name, size in s.vocab_size.items():
        vocab.add_row(name, f"{size:,}")
    console.print(vocab)
    console.print(f"{s.num_features:,} embedding rows in all (each field's OOV and missing "
                  "rows included)")
    if s.lists:  # multi-valued and sequence fields: lists cut to max_length, empty lists
        console.print("lists: " + "; ".join(f"{escape(name)}: {c['truncated']:,} rows cut to max_length, "
                                            f"{c['empty']:,} empty" for name, c in s.lists.items()))
    rej = f"rows rejected: {s.rejected:,}"
    if s.rejected_lines:
        rej += "  (first: " + ", ".join(s.rejected_lines) + ")"
    console.print(rej)
    for warning in s.warnings:  # splits of one class (no AUC on them)
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)  # one line each
    if s.seconds is not None:
        console.print(f"{s.seconds:.1f} s, {s.rows_per_s:,.0f} rows/s")


@app.command("prepare")
def prepare_cmd(
    dataset: str = typer.Option(..., "--dataset", help="criteo, avazu, a shipped schema (mutualctr schemas lists them) or a schema YAML file"),
    input: List[Path] = typer.Option(..., "--input", help="raw file (csv/tsv, .gz ok, parquet); repeatable"),
    out: Path = typer.Option(..., "--out", help="store directory to write"),
    split: str = typer.Option("random", "--split", help="random (seeded 80/10/10) or sequential (file order)"),
    seed: int = typer.Option(0, "--seed", help="seed of the random split"),
    min_count: Optional[int] = typer.Option(None, "--min-count", help="rarer train values -> OOV (default: schema's; criteo 10, avazu 2)"),
    on_bad_rows: str = typer.Option("error", "--on-bad-rows", help="error or skip (skip and count bad rows)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a store prepared with other inputs/settings; only a store mutualctr wrote, never other files (docs/data.md)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    vocab_from: Optional[Path] = typer.Option(
        None, "--vocab-from", help="encode with this store's vocabularies and field layout (unseen values -> "
        "OOV), so its runs evaluate and finetune on the new store; see docs/data.md"),
    grow: bool = typer.Option(False, "--grow", help="with --vocab-from: the parent's values keep their ids, new "
                              "values reaching the min count get new ones; the parent's runs load with grown tables"),
) -> None:
    """Prepare raw CTR files into a memory-mapped training store (reused when unchanged)."""
    if split not in ("random", "sequential"):
        _fail(f"--split: expected random or sequential, got {split!r}")
    if on_bad_rows not in ("error", "skip"):
        _fail(f"--on-bad-rows: expected error or skip, got {on_bad_rows!r}")
    result = mc.prepare(dataset, list(input), out, split=split, seed=seed, min_count=min_count,
                        on_bad_rows=on_bad_rows, overwrite=overwrite, vocab_from=vocab_from, progress=not quiet,
                        grow=grow)
    _print_prepare_summary(result)


@app.command("schemas")
def schemas_cmd() -> None:
    """List the schemas shipped with mutualctr: prepare --dataset NAME reads a file of that layout."""
    typer.echo("built in: criteo (Kaggle train.txt), avazu (Kaggle train.csv)")
    for name in schema_names():
        typer.echo(f"{name}: {schema_description(name)}\n    {schema_path(name)}")
    typer.echo("a schema of your own: prepare --dataset FILE.yaml (start from one above; docs/data.md)")


@app.command("models")
def models_cmd() -> None:
    """List the models --model and --models take: the built-ins and the installed plugins."""
    # lazy: torch and the library load only when a command runs (--help, errors stay fast)
    from mutualctr.models import MODELS, plugins  # torch: only when this command runs

    typer.echo(f"built in: {', '.join(MODELS)} (mutualctr)")
    for name, target, dist in plugins.installed():
        typer.echo(f"{name}: {target} (entry point of {dist})")
    typer.echo("a model of your own: --model package.module:ClassName (docs/models.md, \"Writing a model\")")


@data_app.command("synth")
def synth_cmd(
    rows: int = typer.Option(..., "--rows", help="number of rows"),
    out: Path = typer.Option(..., "--out", help="output file (Criteo TSV; gzip if it ends in .gz)"),
    seed: int = typer.Option(0, "--seed", help="seed of the hidden model and the rows"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Write synthetic Criteo-format rows from a hidden ground-truth model."""
    r = mc.synth(rows, out, seed=seed, progress=not quiet)
    typer.echo(f"wrote {r.rows:,} rows to {r.path} in {r.seconds:.1f} s "
               f"({r.rows / max(r.seconds, 1e-9):,.0f} rows/s)")
    typer.echo(f"click rate {r.click_rate:.4f}; ceiling AUC (the generating model's own AUC) "
               f"{r.ceiling_auc:.4f}; recorded in {r.meta_path}")


# ---- training (issue 4) --------------------------------------------------------------


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, default=float))


_COMPILE = typer.Option(None, "--compile/--no-compile", help="the models' forward through torch.compile: a "
                        "compile pause at the start, then faster steps; figures in docs/performance.md "
                        "(default: train.compile of the config)")
_TENSORBOARD = typer.Option(None, "--tensorboard", help="also write each evaluation as TensorBoard scalars "
                            "into DIR (pip install 'mutualctr\\[tensorboard]')")
_THREADS = typer.Option(None, "--threads", help="torch CPU threads for this process (0 or unset: torch's "
                        "default, one per core; 1 when other jobs share the cores: docs/performance.md, "
                        "\"Threads on a shared CPU\")")


def _set_threads(threads: Optional[int]) -> None:
    """torch's intra-op threads for the whole process (torchrun workers parse the same flag)."""
    if threads is None or threads == 0:
        return
    if threads < 0:
        _fail(f"--threads must be >= 0 (0: torch's default), got {threads}")
    # lazy: torch and the library load only when a command runs (--help, errors stay fast)
    import torch

    torch.set_num_threads(threads)


def _runtime(**flags):
    """The run-time options of a command (:class:`mutualctr.runtime.RuntimeOptions`), built
    once from its flags (None = not given) and handed to the API whole."""
    return RuntimeOptions.from_dict(flags)


_DIST_TIMEOUT = typer.Option(None, "--dist-timeout", help="seconds a worker waits for the others in a "
                             "collective before failing (default 600)")


def _launch_workers(nproc: int) -> None:
    """--nproc K outside torchrun: run this very command as K torchrun workers, exit with its code."""
    # lazy: torch and the library load only when a command runs (--help, errors stay fast)
    from mutualctr.distributed import env_world_size, launch

    if nproc < 1:
        _fail(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and env_world_size() <= 1:
        raise typer.Exit(launch(nproc))


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="prepared store (mutualctr prepare)"),
    out: Path = typer.Option(..., "--out", help="run directory to create (or resume)"),
    model: Optional[str] = typer.Option(None, "--model", help="lr, fm, deepfm, dcn, dcnv2, pnn, fibinet, "
                                         "an installed plugin (mutualctr models) or package.module:ClassName"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run config (default: configs/<dataset>/<model>.yaml)"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto (default: bf16 where the CPU or GPU "
                                            "has it natively, else fp32; the run records which) | fp32 | bf16: "
                                            "bf16 autocast of the training step; evaluation is fp32 (figures in "
                                            "docs/performance.md)"),
    compile: Optional[bool] = _COMPILE,
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    json_out: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
    nproc: int = typer.Option(1, "--nproc", help="data-parallel workers on this machine (runs torchrun; "
                                                 "or start the command under torchrun yourself)"),
    dist_timeout: Optional[float] = _DIST_TIMEOUT,
    tensorboard: Optional[Path] = _TENSORBOARD,
    threads: Optional[int] = _THREADS,
    init: Optional[Path] = typer.Option(None, "--init", help="warm start: continue this run on --data (its "
                                        "config; --lr/--epochs replace values); --resume needs it again"),
):
    """Train one model; keeps the best-on-dev checkpoint and reports its test metrics."""
    # lazy: torch and the library load only when a command runs (--help, errors stay fast)
    from mutualctr.distributed import is_main_process

    _set_threads(threads)
    opts = _runtime(device=device, precision=precision, compile=compile, resume=resume, quiet=quiet,
                    dist_timeout=dist_timeout, tensorboard=tensorboard, threads=threads)
    if init is not None:
        _check_run(init)
    _launch_workers(nproc)
    s = mc.train(data, out, model=model, config=config, seed=seed, epochs=epochs, lr=lr, batch_size=batch_size,
                 options=opts, init=init)
    if not is_main_process():
        return
    if json_out:
        _print_json(s.to_dict())
        return
    for w in s.warnings or []:
        typer.secho(f"warning: {w}", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"{s.model}: best dev AUC {s.dev_auc:.5f} (step {s.best_step}), "
               f"test AUC {s.test_auc:.5f}, test logloss {s.test_logloss:.5f}, "
               f"{s.samples_per_s or 0:,.0f} samples/s -> {out}")


def _check_run(run: Path) -> None:
    """A missing run fails here, as one line, before torch is imported (seconds)."""
    if run.suffix != ".pt" and not run.exists():
        _fail(outdir.missing_run(run))
    if run.suffix == ".pt" and not run.is_file():
        _fail(f"{run}: no such checkpoint file")


def _run_store(run: Path) -> Path:
    """The store a run was trained on: its store.json (read without torch), else its checkpoint's."""
    try:
        return Path(json.loads((run / "store.json").read_text())["path"])
    except (OSError, ValueError, KeyError, TypeError):
        # lazy: torch and the library load only when a command runs (--help, errors stay fast)
        from mutualctr.training.rundir import ModelCheckpoint, model_checkpoint_path

        path = ModelCheckpoint.load(model_checkpoint_path(run)).store_path
        if path is None:
            _fail(f"{run}: the checkpoint does not name its store; give --data STORE")
        return Path(path)


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run"),
    data: Optional[Path] = typer.Option(None, "--data", help="store (default: the one the run was trained on)"),
    split: str = typer.Option("test", "--split", help="train | dev | test"),
    device: str = typer.Option("auto", "--device"),
    json_out: bool = typer.Option(False, "--json", help='print {"auc", "logloss", "rows", "calibration"[, "gauc"]}'),
):
    """Score a run's best checkpoint on a split of the store."""
    _check_run(run)
    if data is None:
        data = _run_store(run)
    r = mc.evaluate(run, data, split, device=device)
    if json_out:
        _print_json(r.to_dict())
    else:
        typer.echo(f"{split}: AUC {r.auc:.5f}  logloss {r.logloss:.5f}  rows {r.rows:,}")
        c = r.calibration
        typer.echo(f"{split}: predicted/observed click rate {c.predicted_rate:.5f}/{c.observed_rate:.5f} "
                   f"(ratio {c.ratio:.4f})  ECE {c.ece:.5f}"
                   + (f"  gAUC by {r.gauc.field} {r.gauc.gauc:.5f}" if r.gauc else ""))


@app.command()
def churn(
    run: Path = typer.Option(..., "--run", help="the new version (e.g. today's update)"),
    against: Path = typer.Option(..., "--against", help="the earlier version (e.g. yesterday's run)"),
    data: Optional[Path] = typer.Option(None, "--data", help="store (default: the one --run was trained on)"),
    split: str = typer.Option("test", "--split", help="train | dev | test"),
    device: str = typer.Option("auto", "--device"),
    json_out: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
):
    """Version churn: how much --run's predictions moved from --against's on the same rows."""
    _check_run(run)
    _check_run(against)
    r = mc.churn(run, against, data if data is not None else _run_store(run), split, device=device)
    if json_out:
        _print_json(r.to_dict())
    else:
        typer.echo(f"{split} ({r.rows:,} rows): mean |p_new - p_old| {r.mean_abs_diff:.5f}  rank moved > a decile "
                   f"{100 * r.rank_moved:.2f}%  logit corr {r.logit_corr:.4f}  AUC {r.old.auc:.5f} -> {r.new.auc:.5f}")


@app.command()
def predict(
    run: Path = typer.Option(..., "--run"),
    input: Path = typer.Option(..., "--input", help="raw file in the store's format"),
    out: Path = typer.Option(..., "--out", help="CSV to write"),
    keep: List[str] = typer.Option([], "--keep", help="raw column to copy next to the probability"),
    data: Optional[Path] = typer.Option(None, "--data", help="store (default: the one the run was trained on)"),
    device: str = typer.Option("auto", "--device"),
):
    """Write click probabilities for raw rows (unseen values map to OOV)."""
    _check_run(run)
    r = mc.predict(run, input, out, keep=keep, data=data, device=device).to_dict()
    extra = f" (AUC {r['auc']:.5f} on the file's labels)" if "auc" in r else ""
    typer.echo(f"wrote {r['rows']:,} probabilities to {out}{extra}")


# ---- mutual learning (issue 5) -------------------------------------------------------


def _print_group(g, json_out: bool, out: Optional[Path] = None) -> None:
    """A group's result (:class:`mutualctr.results.GroupResult`): JSON, or the alpha curve, the
    members' table, the churn and where each member is (under ``out``, the --out given)."""
    if json_out:
        _print_json(g.to_dict())
        return
    console = make_console()  # a file or a pipe: full-width tables, no colours
    st = g.settings
    if g.alpha_search:
        t = Table(title="alpha chosen on dev (mean of the members)")
        for c in ("alpha", "dev AUC", "test AUC", "churn", "kept start", ""):
            t.add_column(c, justify="right")
        for pt in g.alpha_search:
            t.add_row(f"{pt.alpha:g}", f"{pt.dev_auc:.5f}", f"{pt.test_auc:.5f}",
                      "" if pt.churn is None else f"{pt.churn:.5f}", str(pt.kept_start),
                      "chosen" if pt.alpha == st.alpha else "")
        console.print(t)
    console.print(_group_table(g))
    c = g.churn
    before = c.before
    was = f"{before.mean_abs_diff:.5f} before, " if before else ""
    console.print(f"churn on {c.split} (mean |p_i - p_j| over member pairs): {was}"
                  f"{c.after.mean_abs_diff:.5f} after; logit correlation "
                  + (f"{before.logit_corr:.4f} -> " if before else "") + f"{c.after.logit_corr:.4f}")
    for line in _member_paths(g, out):
        typer.echo(line)


def _member_paths(g, out: Optional[Path]) -> List[str]:
    """One line a member: ``m0 deepfm -> GROUP/m0-deepfm``, and for a searched group the chosen
    alpha's directory the link leads to."""
    lines = []
    for i, m in enumerate(g.members):
        name = Path(m.run_dir).name
        path = out / name if out is not None and os.path.lexists(out / name) else Path(m.run_dir)
        to = f" (a link to {os.readlink(path)})" if path.is_symlink() else ""
        lines.append(f"m{i} {m.model} -> {path}{to}")
    return lines


def _group_table(g):
    st, nan = g.settings, float("nan")
    t = Table(title=f"group ({st.mode}, alpha={st.alpha:g}, lr={st.lr:g})")
    ft = any(m.start for m in g.members)
    cols = ["member", "model"] + (["start dev AUC", "start test AUC"] if ft else []) + \
        ["best dev AUC", "test AUC", "test logloss"] + (["RelaImp %", "kept start"] if ft else [])
    for c in cols:
        t.add_column(c, justify="right")
    mean = g.mean
    rows = [(str(i), m.model, m.start.dev_auc if m.start else nan, m.start.test_auc if m.start else nan, m)
            for i, m in enumerate(g.members)]
    rows.append(("mean", "", nan if mean.start_dev_auc is None else mean.start_dev_auc,
                 nan if mean.start_test_auc is None else mean.start_test_auc, mean))
    for label, model, start_dev, start_test, m in rows:
        vals = [label, model] + ([f"{start_dev:.5f}", f"{start_test:.5f}"] if ft else [])
        vals += [f"{m.dev_auc:.5f}", f"{m.test_auc:.5f}", f"{m.test_logloss:.5f}"]
        if ft:
            vals += [f"{nan if m.relaimp_test is None else m.relaimp_test:+.3f}",
                     {True: "yes", False: "no"}.get(getattr(m, "kept_start", None), "")]
        t.add_row(*vals)
    return t


def _csv_ints(s: Optional[str], name: str = "--seeds") -> List[int]:
    try:
        return [int(x) for x in s.split(",")] if s else []
    except ValueError:
        _fail(f"{name}: expected comma-separated integers, got {s!r}")


_ALPHA_HELP = ("peer-term weight: a number (0 = the continued-training control) or auto, chosen on dev "
               "from mutual.alpha_grid (docs/training.md); default: the group config's (auto)")
_GROUP_CONFIG = typer.Option(None, "--config", help="YAML whose mutual: section sets the group "
                             "(default: the first member's run config)")
_SCOPE = typer.Option(None, "--scope", help="finetune all parameters, or dense: the embedding tables frozen")
_EMB_LR = typer.Option(None, "--embedding-lr-scale", help="the tables' learning rate is the finetuning lr x this")
_SPLIT = typer.Option(None, "--finetune-split", help="finetune on the last F of the train split only (0: all)")


@app.command()
def mutual(
    data: Path = typer.Option(..., "--data"),
    out: Path = typer.Option(..., "--out", help="group directory (one run directory per member inside)"),
    init: List[Path] = typer.Option([], "--init", help="trained runs to finetune: --init RUN [RUN...]"),
    more_init: Optional[List[Path]] = typer.Argument(None, hidden=True),
    models: Optional[str] = typer.Option(None, "--models", help="scratch: comma-separated model names "
                                          "(built-ins, plugins, package.module:ClassName)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="scratch: comma-separated seeds, one per model"),
    alpha: Optional[str] = typer.Option(None, "--alpha", help=_ALPHA_HELP),
    loss: Optional[str] = typer.Option(None, "--loss", help="mse_prob (default) | mse_logit | kl"),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate (finetuning: the group config's mutual.lr; "
                                       "from scratch: the members' own)"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    evals_per_epoch: Optional[int] = typer.Option(None, "--evals-per-epoch"),
    scope: Optional[str] = _SCOPE,
    embedding_lr_scale: Optional[float] = _EMB_LR,
    finetune_split: Optional[float] = _SPLIT,
    config: Optional[Path] = _GROUP_CONFIG,
    seed: Optional[int] = typer.Option(None, "--seed", help="batch order seed"),
    device: Optional[str] = typer.Option(None, "--device"),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto | fp32 | bf16 (default: the members' own; "
                                            "docs/performance.md)"),
    compile: Optional[bool] = _COMPILE,
    vectorize: bool = typer.Option(False, "--vectorize", help="members of one architecture run as one vmapped "
                                                              "forward (for GPUs; on CPU about as fast as the loop)"),
    resume: bool = typer.Option(False, "--resume"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    json_out: bool = typer.Option(False, "--json"),
    nproc: int = typer.Option(1, "--nproc", help="workers on this machine (runs torchrun): one member per "
                                                 "worker, or a data-parallel group of workers per member"),
    dist_timeout: Optional[float] = _DIST_TIMEOUT,
    tensorboard: Optional[Path] = _TENSORBOARD,
    threads: Optional[int] = _THREADS,
):
    """Deep mutual learning of N models: finetune trained runs, or train from scratch."""
    # lazy: torch and the library load only when a command runs (--help, errors stay fast)
    from mutualctr.distributed import is_main_process

    _set_threads(threads)
    opts = _runtime(device=device, precision=precision, compile=compile, vectorize=vectorize, resume=resume,
                    quiet=quiet, dist_timeout=dist_timeout, tensorboard=tensorboard, threads=threads)
    _launch_workers(nproc)
    g = mc.mutual(data, out, init=list(init) + list(more_init or []),
                  models=[m.strip() for m in models.split(",") if m.strip()] if models else (), seeds=_csv_ints(seeds),
                  config=config, alpha=alpha, loss=loss, lr=lr, epochs=epochs, evals_per_epoch=evals_per_epoch,
                  scope=scope, embedding_lr_scale=embedding_lr_scale, finetune_split=finetune_split, seed=seed,
                  options=opts)
    if is_main_process():
        _print_group(g, json_out, out)


@app.command()
def distill(
    data: Path = typer.Option(..., "--data"),
    teacher: Path = typer.Option(..., "--teacher", help="trained run (frozen)"),
    student: str = typer.Option(..., "--student", help="a run to finetune, or a model name (or package.module:ClassName) to train"),
    out: Path = typer.Option(..., "--out"),
    beta: Optional[str] = typer.Option(None, "--beta", help="weight of MSE(p_student, p_teacher): a number or "
                                                            "auto (chosen on dev, the default)"),
    loss: Optional[str] = typer.Option(None, "--loss"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    evals_per_epoch: Optional[int] = typer.Option(None, "--evals-per-epoch"),
    scope: Optional[str] = _SCOPE,
    embedding_lr_scale: Optional[float] = _EMB_LR,
    finetune_split: Optional[float] = _SPLIT,
    config: Optional[Path] = _GROUP_CONFIG,
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = typer.Option(None, "--device"),
    resume: bool = typer.Option(False, "--resume"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    json_out: bool = typer.Option(False, "--json"),
    threads: Optional[int] = _THREADS,
):
    """Knowledge distillation: the student learns from labels and a frozen teacher."""
    _set_threads(threads)
    opts = _runtime(device=device, resume=resume, quiet=quiet, threads=threads)
    g = mc.distill(data, out, teacher=teacher, student=student, config=config, beta=beta, loss=loss, lr=lr,
                   epochs=epochs, evals_per_epoch=evals_per_epoch, scope=scope, embedding_lr_scale=embedding_lr_scale,
                   finetune_split=finetune_split, seed=seed, options=opts)
    _print_group(g, json_out, out)


@app.command()
def ensemble(
    runs: List[Path] = typer.Option(..., "--runs", help="run directories: --runs RUN [RUN...]"),
    more_runs: Optional[List[Path]] = typer.Argument(None, hidden=True),
    data: Path = typer.Option(..., "--data"),
    split: str = typer.Option("test", "--split"),
    device: str = typer.Option("auto", "--device"),
    json_out: bool = typer.Option(False, "--json"),
):
    """Evaluate the average of the members' probabilities."""
    runs = list(runs) + list(more_runs or [])
    for run in runs:
        _check_run(run)
    r = mc.ensemble(runs, data, split, device=device)
    if json_out:
        _print_json(r.to_dict())
        return
    for m in r.members:
        typer.echo(f"{m.model:>8} {m.run}: AUC {m.auc:.5f} logloss {m.logloss:.5f}")
    typer.echo(f"ensemble of {len(r.members)}: {split} AUC {r.auc:.5f} logloss {r.logloss:.5f}")
    if len(r.members) > 1:
        typer.echo(f"churn between the members: mean |p_i - p_j| {r.churn.mean_abs_diff:.5f}, "
                   f"logit correlation {r.churn.logit_corr:.4f}")

# ---- experiments (issue 6) -----------------------------------------------------------


def _csv_floats(s: Optional[str], name: str) -> List[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()] if s else []
    except ValueError:
        _fail(f"{name}: expected comma-separated numbers, got {s!r}")


@app.command()
def experiment(
    question: str = typer.Argument(..., help="rq1 | rq2 | rq3 | rq4 | all (or a comma list)"),
    data: Path = typer.Option(..., "--data", help="prepared store"),
    out: Path = typer.Option(..., "--out", help="experiment directory (runs are cached in OUT/runs)"),
    models: str = typer.Option("deepfm,dcn,pnn,fibinet", "--models"),
    instances: int = typer.Option(4, "--instances", help="independent runs / group members per model"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated, one per instance (default 1..N)"),
    config_dir: Optional[Path] = typer.Option(None, "--config-dir", help="run configs: DIR/<model>.yaml or DIR/<dataset>/<model>.yaml"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="epochs of the independent and from-scratch runs"),
    alpha: str = typer.Option("auto", "--alpha", help="mutual-loss weights to try, e.g. 1,10,100 (chosen on dev); "
                              "auto: the group config's mutual.alpha_grid, extended past an end that wins"),
    finetune_lr: Optional[str] = typer.Option(None, "--finetune-lr", help="finetuning learning rates to try "
                                              "(chosen on dev; default: the group config's mutual.lr, 1e-4)"),
    finetune_split: float = typer.Option(0.0, "--finetune-split", help="F > 0: pretrain on the first 1 - F of the "
                                         "train split and finetune (mutual, control, distillation) on the last F"),
    scope: Optional[str] = _SCOPE,
    embedding_lr_scale: Optional[float] = _EMB_LR,
    runs: Optional[Path] = typer.Option(None, "--runs", help="the run cache (default OUT/runs): experiments with "
                                        "other options can share pretrained runs"),
    rq4_model: Optional[str] = typer.Option(None, "--rq4-model", help="model of RQ4 (default: dcn on Criteo, fibinet on Avazu, else the first)"),
    paper: Optional[bool] = typer.Option(None, "--paper/--no-paper", help="show the paper's numbers (default: on Criteo/Avazu stores)"),
    threads: Optional[int] = _THREADS,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="online: the schema of the raw --data file"),
    periods: int = typer.Option(7, "--periods", help="online: consecutive periods the raw rows are cut into"),
    update_epochs: int = typer.Option(1, "--update-epochs", help="online: epochs of each period's update"),
    time_column: Optional[str] = typer.Option(None, "--time-column", help="online: cut by the calendar periods "
                                              "of this column (Unix seconds, or YYMMDDHH for an hour column): the "
                                              "first --periods of them; default: --periods of equal rows"),
    period: Optional[str] = typer.Option(None, "--period", help="online, with --time-column: day | week | month "
                                         "(UTC; default month)"),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto | fp32 | bf16 for every run (default: the "
                                            "configs', auto); fp32 reproduces the tables made before auto was the "
                                            "default (docs/performance.md)"),
):
    """Run RQ1-RQ4 of the paper with controls; writes results.csv, tables.md, stats.json and plots.
    ``online``: the daily update over the periods of a time-ordered raw --data file (docs/training.md)."""
    _set_threads(threads)
    if question.strip() == "online":
        if dataset is None:
            _fail("experiment online: give --dataset (the schema of the raw --data file)")
        a = 1.0 if alpha.strip().lower() == "auto" else _csv_floats(alpha, "--alpha")[0]
        lr = (_csv_floats(finetune_lr, "--finetune-lr") or [1e-4])[0]
        r = mc.online_experiment(data, out, dataset=dataset, periods=periods, models=[m for m in models.split(",")
                                 if m.strip()], alpha=a, lr=lr, epochs=update_epochs, pretrain_epochs=epochs,
                                 config_dir=config_dir, threads=threads, time_column=time_column, period=period)
        typer.echo(f"{len(r['rows'])} result rows -> {r['tables']} (online.csv, {', '.join(r['plots'])})")
        return
    r = mc.experiment(question, data, out, models=[m for m in models.split(",") if m.strip()], instances=instances,
                      seeds=_csv_ints(seeds) or None, config_dir=config_dir, epochs=epochs,
                      alphas=None if alpha.strip().lower() == "auto" else _csv_floats(alpha, "--alpha"),
                      finetune_lrs=_csv_floats(finetune_lr, "--finetune-lr") or None, finetune_split=finetune_split,
                      scope=scope, embedding_lr_scale=embedding_lr_scale, runs_dir=runs, rq4_model=rq4_model, paper=paper,
                      threads=threads, quiet=quiet, precision=precision)
    typer.echo(f"{len(r['rows'])} result rows in {r['seconds']:.0f} s -> {r['paths']['tables']} "
               f"(results.csv, stats.json, plots: {', '.join(Path(p).name for p in r['paths']['plots'])})")


@app.command()
def compare(
    experiments: List[Path] = typer.Argument(..., help="experiment directories (mutualctr experiment --out)"),
    label: List[str] = typer.Option([], "--label", help="a name per directory, in order (default: its name)"),
    json_out: bool = typer.Option(False, "--json", help="print the rows as JSON"),
):
    """One table across experiments (e.g. one per finetuning option): per model, finetuned minus
    pretrained, control and distilled (paired p), churn before -> after, kept starts."""
    # lazy: torch and the library load only when a command runs (--help, errors stay fast)
    from mutualctr.experiments.report import compare_rows, compare_table

    if label and len(label) != len(experiments):
        _fail(f"--label: {len(label)} labels for {len(experiments)} experiment directories")
    pairs = list(zip(label or [e.name for e in experiments], experiments))
    try:
        if json_out:
            _print_json([r for name, e in pairs for r in compare_rows(e, name)])
        else:
            typer.echo(compare_table(pairs))
    except FileNotFoundError as e:
        _fail(str(e))


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="where the data, store, runs and reports go"),
    rows: Optional[int] = typer.Option(None, "--rows", help="synthetic rows (default 160,000; the demo's run "
                                       "time: docs/performance.md, \"The demo\")"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default, one per core, "
                                "or 1 when other jobs keep the cores busy, said in one line)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """The main job end to end: synthetic data -> store -> RQ1 + RQ2 with controls for DeepFM and DCN."""
    # lazy: torch and the library load only when a command runs (--help, errors stay fast)
    from mutualctr.experiments.demo import run_demo

    run_demo(out, rows=rows, quiet=quiet, threads=threads)


# ---- export for serving (issue 16) ---------------------------------------------------


@app.command("export")
def export_cmd(
    run: Path = typer.Option(..., "--run", help="run directory (or its best.pt) to export"),
    out: Path = typer.Option(..., "--out", help="export directory to write: model, encoder.json, export.json"),
    format: str = typer.Option("onnx", "--format", help="onnx (needs pip install 'mutualctr\\[export]') | "
                               "torchscript (torch alone)"),
    check: bool = typer.Option(False, "--check", help="score the store's test split through the written "
                               "model and compare with the eager model; fail beyond --tolerance"),
    data: Optional[Path] = typer.Option(None, "--data", help="store (default: the one the run was trained on)"),
    tolerance: float = typer.Option(1e-5, "--tolerance", help="largest |probability difference| --check accepts"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an export written earlier at --out"),
    json_out: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
):
    """Export a run for serving: the model (ids -> probability) and the encoder spec; see docs/export.md."""
    _check_run(run)
    r = mc.export(run, out, format=format, data=data, check=check, tolerance=tolerance, overwrite=overwrite)
    if json_out:
        _print_json(asdict(r) | {"out": str(r.out)})
        return
    typer.echo(f"exported {r.model} ({r.format}, {r.num_fields} fields, {r.num_features:,} ids) -> "
               f"{r.out}: {', '.join(r.files)}")
    if r.check is not None:
        c = r.check
        typer.echo(f"check on {c.rows:,} {c.split} rows with {c.runtime}: max |p - p_eager| "
                   f"{c.max_abs_diff:.2e} (tolerance {c.tolerance:g}); AUC {c.exported_auc:.5f} "
                   f"exported, {c.eager_auc:.5f} eager")


def main() -> None:
    interrupt.install()  # SIGTERM unwinds like Ctrl-C: temporaries and locks removed on the way
    try:
        app()
    except (KeyboardInterrupt, SystemExit) as e:  # SIGINT, SIGTERM (typer: exit 130): one line, exit 130 / 143
        if (signal := interrupt.received(e)) is None:
            raise
        typer.secho(f"error: {interrupt.message(sys.argv[1:], signal)}", err=True, fg=typer.colors.RED)
        sys.exit(interrupt.exit_code(signal))
    except MutualCTRError as e:
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except OSError as e:  # the file system said no (read-only, full, gone): one line, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        typer.secho(f"error: {where}{e.strerror or e}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
