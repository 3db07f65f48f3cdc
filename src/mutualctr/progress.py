"""The one progress display of mutualctr: a rich bar, or nothing at all when quiet.

``Bar(*columns)`` takes format strings (``"{task.description}"``, ``"loss
{task.fields[loss]}"``), the names of rich's standard columns (``"<bar>"``, ``"<n/total>"``,
``"<elapsed>"``, ``"<remaining>"``, ``"<rows/s>"``: the task's speed in thousands of rows a
second) or rich columns; ``add`` starts a task, ``update`` and
``advance`` move it, ``log`` prints a line above the bar. With ``quiet=True`` every method is a
no-op and rich is never imported.
"""

from __future__ import annotations

from typing import Any


class Bar:
    def __init__(self, *columns: Any, quiet: bool = False, transient: bool = False,
                 refresh_per_second: float = 10, console=None):
        self.quiet = quiet
        self._p = None
        if quiet:
            return
        from rich import progress as rp

        named = {"<bar>": rp.BarColumn, "<n/total>": rp.MofNCompleteColumn, "<elapsed>": rp.TimeElapsedColumn,
                 "<remaining>": rp.TimeRemainingColumn, "<rows/s>": _rows_per_second}
        cols = [named[c]() if c in named else rp.TextColumn(c) if isinstance(c, str) else c for c in columns]
        kw = {"console": console} if console is not None else {}
        self._p = rp.Progress(*cols, transient=transient, refresh_per_second=refresh_per_second, **kw)
        self._p.start()

    @property
    def console(self):
        return None if self._p is None else self._p.console

    def add(self, description: str, total: float | None, completed: float = 0, **fields: Any):
        return None if self._p is None else self._p.add_task(description, total=total, completed=completed, **fields)

    def update(self, task, **kw: Any) -> None:
        if self._p is not None and task is not None:
            self._p.update(task, **kw)

    def advance(self, task, n: float = 1) -> None:
        if self._p is not None and task is not None:
            self._p.advance(task, n)

    def log(self, msg: str) -> None:
        if self._p is not None:
            self._p.console.print(msg)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _rows_per_second():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task):  # type: ignore[override]
            speed = task.finished_speed or task.speed
            return Text(f"{speed / 1000:,.0f}k rows/s" if speed else "", style="cyan")

    return RowsPerSecond()
