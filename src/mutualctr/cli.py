"""The `mutualctr` command line: thin wrappers that parse, call the library and print.

Each command imports its library module lazily so that `mutualctr --help` stays fast.
Library errors (ConfigError, StoreError, DataError, CheckpointError, ...) derive from
``MutualCTRError`` or ``ValueError`` and are printed as one clear line, exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="CTR prediction with deep mutual learning.")
data_app = typer.Typer(no_args_is_help=True, help="Data utilities (synthetic data).")
app.add_typer(data_app, name="data")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


# ---- data (issue 2) ------------------------------------------------------------------


def _print_prepare_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result.summary
    console = Console()
    head = "reused existing store" if result.reused else "prepared store"
    console.print(f"[bold]{head}[/bold] {result.store.path}  (fingerprint {s['fingerprint']})")
    splits = Table(title="splits")
    for col in ("split", "rows", "click rate"):
        splits.add_column(col, justify="right" if col != "split" else "left")
    for name, rows in s["rows"].items():
        splits.add_row(name, f"{rows:,}", f"{s['click_rate'][name]:.4f}")
    console.print(splits)
    vocab = Table(title=f"vocabulary ({s['num_features']:,} embedding rows, OOV and missing "
                        "included)")
    vocab.add_column("field")
    vocab.add_column("size", justify="right")
    for name, size in s["vocab_size"].items():
        vocab.add_row(name, f"{size:,}")
    console.print(vocab)
    rej = f"rows rejected: {s['rejected']:,}"
    if s["rejected_lines"]:
        rej += "  (first: " + ", ".join(s["rejected_lines"]) + ")"
    console.print(rej)
    if "seconds" in s:
        console.print(f"{s['seconds']:.1f} s, {s['rows_per_s']:,.0f} rows/s")


@app.command("prepare")
def prepare_cmd(
    dataset: str = typer.Option(..., "--dataset", help="criteo, avazu or a schema YAML file"),
    input: List[Path] = typer.Option(..., "--input", help="raw file (csv/tsv, .gz ok, parquet); repeatable"),
    out: Path = typer.Option(..., "--out", help="store directory to write"),
    split: str = typer.Option("random", "--split", help="random (seeded 80/10/10) or sequential (file order)"),
    seed: int = typer.Option(0, "--seed", help="seed of the random split"),
    min_count: Optional[int] = typer.Option(None, "--min-count", help="rarer train values -> OOV (default: schema's; criteo 10, avazu 2)"),
    on_bad_rows: str = typer.Option("error", "--on-bad-rows", help="error or skip (skip and count bad rows)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a store prepared with other inputs/settings"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Prepare raw CTR files into a memory-mapped training store (reused when unchanged)."""
    from mutualctr.data.prepare import prepare

    if split not in ("random", "sequential"):
        _fail(f"--split: expected random or sequential, got {split!r}")
    if on_bad_rows not in ("error", "skip"):
        _fail(f"--on-bad-rows: expected error or skip, got {on_bad_rows!r}")
    result = prepare(dataset, list(input), out, split=split, seed=seed, min_count=min_count,
                     on_bad_rows=on_bad_rows, overwrite=overwrite, progress=not quiet)
    _print_prepare_summary(result)


@data_app.command("synth")
def synth_cmd(
    rows: int = typer.Option(..., "--rows", help="number of rows"),
    out: Path = typer.Option(..., "--out", help="output file (Criteo TSV; gzip if it ends in .gz)"),
    seed: int = typer.Option(0, "--seed", help="seed of the hidden model and the rows"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Write synthetic Criteo-format rows from a hidden ground-truth model."""
    from mutualctr.data.synth import generate

    r = generate(rows, out, seed=seed, progress=not quiet)
    typer.echo(f"wrote {r.rows:,} rows to {r.path} in {r.seconds:.1f} s "
               f"({r.rows / max(r.seconds, 1e-9):,.0f} rows/s)")
    typer.echo(f"click rate {r.click_rate:.4f}; ceiling AUC (the generating model's own AUC) "
               f"{r.ceiling_auc:.4f}; recorded in {r.meta_path}")


# ---- training (issue 4) --------------------------------------------------------------

# ---- mutual learning (issue 5) -------------------------------------------------------

# ---- experiments (issue 6) -----------------------------------------------------------


def main() -> None:
    from mutualctr.errors import MutualCTRError
    from mutualctr.config import ConfigError

    try:
        app()
    except (MutualCTRError, ConfigError, FileNotFoundError) as e:
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
