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
