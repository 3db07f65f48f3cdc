"""The one progress display of mutualctr: a rich bar on a terminal, plain lines elsewhere, or
nothing at all when quiet.

``Bar(*columns)`` takes format strings (``"{task.description}"``, ``"loss
{task.fields[loss]}"``), the names of rich's standard columns (``"<bar>"``, ``"<n/total>"``,
``"<elapsed>"``, ``"<remaining>"``, ``"<rows/s>"``: the task's speed in thousands of rows a
second) or rich columns; ``add`` starts a task, ``update`` and
``advance`` move it, ``log`` prints a line above the bar. With ``quiet=True`` every method is a
no-op and rich is never imported.

Output to a file or a pipe (no terminal): no bar at all, ``log`` prints each message as one
line, never wrapped, without colours; :func:`make_console` gives the commands' tables the same
treatment (full width: no cell cut to ``0.711...``). The bar itself starts with its first task,
so a command that fails before any work prints nothing but its error.
"""

from __future__ import annotations

from typing import Any

from rich import progress as rp
from rich.console import Console
from rich.progress import ProgressColumn
from rich.text import Text

# The width of a console that writes to a file or a pipe: wide enough that no table is cut
# and no line is wrapped.
PLAIN_WIDTH = 10_000


def make_console(console=None, **kw: Any):
    """A rich Console on stdout (or ``console`` itself): as rich makes it on a terminal; without
    one (a file, a pipe) plain: no colours, no width limit, so tables keep every cell whole."""
    if console is not None:
        return console
    c = Console(**kw)
    if c.is_terminal or "width" in kw:
        return c
    return Console(width=PLAIN_WIDTH, **kw)


class Bar:
    def __init__(self, *columns: Any, quiet: bool = False, transient: bool = False,
                 refresh_per_second: float = 10, console=None):
        self.quiet = quiet
        self._p = None
        self._console = None
        self._args: tuple = ()
        if quiet:
            return
        self._console = make_console(console)
        if not self._console.is_terminal:  # a file or a pipe: log lines only, no bar
            return
        named = {"<bar>": rp.BarColumn, "<n/total>": rp.MofNCompleteColumn, "<elapsed>": rp.TimeElapsedColumn,
                 "<remaining>": rp.TimeRemainingColumn, "<rows/s>": _rows_per_second}
        cols = [named[c]() if c in named else rp.TextColumn(c) if isinstance(c, str) else c for c in columns]
        self._p = rp.Progress(*cols, transient=transient, refresh_per_second=refresh_per_second,
                              console=self._console)
        self._started = False

    @property
    def console(self):
        return self._console

    @property
    def live(self) -> bool:
        """True while a bar is drawn (on a terminal, not quiet)."""
        return self._p is not None

    def add(self, description: str, total: float | None, completed: float = 0, **fields: Any):
        if self._p is None:
            return None
        if not self._started:  # the bar appears with its first task
            self._p.start()
            self._started = True
        return self._p.add_task(description, total=total, completed=completed, **fields)

    def update(self, task, **kw: Any) -> None:
        if self._p is not None and task is not None:
            self._p.update(task, **kw)

    def advance(self, task, n: float = 1) -> None:
        if self._p is not None and task is not None:
            self._p.advance(task, n)

    def log(self, msg: str) -> None:
        if self._p is not None:
            self._p.console.print(msg)
        elif self._console is not None:
            self._console.print(msg, soft_wrap=True)

    def close(self) -> None:
        if self._p is not None:
            if self._started:
                self._p.stop()
            self._p = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _rows_per_second():
    class RowsPerSecond(ProgressColumn):
        def render(self, task):  # type: ignore[override]
            speed = task.finished_speed or task.speed
            return Text(f"{speed / 1000:,.0f}k rows/s" if speed else "", style="cyan")

    return RowsPerSecond()
