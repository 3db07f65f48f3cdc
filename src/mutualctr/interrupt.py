"""SIGINT and SIGTERM: a clean exit through the normal cleanup paths, and one line saying what
was kept and how to go on (docs/reliability.md).

:func:`install` (called by the CLI's ``main``) makes SIGTERM raise :class:`Interrupted`, a
``KeyboardInterrupt``, as Python already does for SIGINT: the ``finally`` blocks of
:mod:`mutualctr.atomic` and :mod:`mutualctr.outdir` then remove the command's temporaries and
its lock, and a job keeps its last checkpoint. :func:`message` is the line printed; the exit
code is 128 + the signal (130 for SIGINT, 143 for SIGTERM), as a shell reports it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Sequence

_installed_by: int | None = None

#: commands whose jobs keep checkpoints and continue with --resume
RESUMABLE = ("train", "mutual", "distill")


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) received: unwinds like Ctrl-C."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def _on_signal(signum, frame) -> None:
    if os.getpid() != _installed_by:  # a forked child (a data worker): die as the signal says
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Interrupted(signum)


def install() -> None:
    """SIGTERM raises :class:`Interrupted` in this process (SIGINT keeps Python's
    KeyboardInterrupt). Only from the main thread (signal handlers can be set nowhere else)."""
    global _installed_by
    _installed_by = os.getpid()
    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, _on_signal):
            signal.signal(signal.SIGTERM, _on_signal)
    except ValueError:  # not the main thread
        pass


def received(e: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (SIGINT, or SIGTERM's :class:`Interrupted`) that ``e`` is or that
    caused it (typer turns one into ``SystemExit(130)``), else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def exit_code(e: BaseException) -> int:
    return 128 + (e.signum if isinstance(e, Interrupted) else int(signal.SIGINT))


def _command(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """(command, --out value) of a ``mutualctr`` command line."""
    cmd = next((a for a in argv if not a.startswith("-")), None)
    out = None
    for i, a in enumerate(argv):
        if a == "--out" and i + 1 < len(argv):
            out = argv[i + 1]
        elif a.startswith("--out="):
            out = a.split("=", 1)[1]
    return cmd, out


def _checkpoints(out: str) -> list[Path]:
    root = Path(out)
    return [p for pattern in ("checkpoints/last.pt", "*/checkpoints/last.pt") for p in root.glob(pattern)]


def message(argv: Sequence[str], e: BaseException) -> str:
    """The one line printed for an interrupted ``mutualctr ARGV``: what was kept, how to go on."""
    name = signal.Signals(e.signum).name if isinstance(e, Interrupted) else "SIGINT"
    cmd, out = _command(argv)
    head = f"interrupted by {name}"
    if cmd in RESUMABLE and out:
        if _checkpoints(out):
            return (f"{head}: {out} keeps its last checkpoint; continue with the same command "
                    "and --resume")
        return (f"{head}: no checkpoint was written yet in {out}; the same command with "
                "--resume starts it from the beginning")
    if cmd == "experiment" and out:
        return (f"{head}: the finished jobs are kept (in {out}/runs or --runs), the one under way "
                "at its last checkpoint; run the same command again to go on")
    where = f" to {out}" if out else ""
    return f"{head}: nothing was written{where}, no temporary left; run the command again"
