"""One progress display across a whole experiment: which run, which phase, ETA.

The trainer's own bar is switched off while this one is live (rich allows one live display);
instead, the line under the bar follows the current run's metrics.jsonl (epoch, dev AUC).
The ETA is cost-weighted: each job has an estimated cost in member-epochs, cached jobs count
as done at no time, and the rate is measured on the jobs actually executed.

Without a terminal (output to a file or a pipe) there is no bar: each job prints one line when
it starts (``RQ1 [3] deepfm seed 1  (done 12%, ETA 4:10)``) and one when it ends, unwrapped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from rich.progress import BarColumn, TextColumn
from rich.text import Text

from mutualctr.progress import Bar, make_console


def _fmt_s(s: float) -> str:
    if s != s or s < 0:  # nan
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class ExperimentProgress:
    def __init__(self, total_cost: float, quiet: bool = False, console=None):
        self.total = max(float(total_cost), 1e-9)
        self.quiet = quiet
        self.done = 0.0
        self.exec_cost = 0.0
        self.exec_time = 0.0
        self.jobs = 0
        self.phase = ""  # the question being run (RQ1..RQ4), shown before the job
        self.t0 = time.perf_counter()
        self._job_t0 = None
        self._job_cost = 0.0
        self._watch: list[Path] = []
        self._watch_cache = ("", 0.0)
        self.live = None
        if quiet:
            return
        self.console = make_console(console)
        watch = self

        class _RunColumn(TextColumn):
            def render(self, task):  # noqa: D401 - rich hook
                return Text(watch._run_status(), style="dim")

        self.live = Bar("[bold]{task.description}", BarColumn(bar_width=24), "{task.percentage:>3.0f}%",
                        "<elapsed>", "ETA {task.fields[eta]}", _RunColumn(""), console=self.console,
                        refresh_per_second=2)
        self.task = self.live.add("experiment", self.total, eta="?")
        self.plain = not self.live.live  # a file or a pipe: one line per event

    # ---- jobs ---------------------------------------------------------------------------
    def start(self, label: str, cost: float, watch: list[Path] = (), resumed: bool = False) -> None:
        self.jobs += 1
        self._job_t0 = time.perf_counter()
        self._job_cost = cost
        self._watch = list(watch)
        self._watch_cache = ("", 0.0)
        if self.live is not None:
            what = f"{self.phase} [{self.jobs}] {label}" + (" (resumed)" if resumed else "")
            self.live.update(self.task, description=what, eta=self.eta())
            if self.plain:
                self.log(f"{what}  (done {100 * self.done / self.total:.0f}%, ETA {self.eta()})")

    def finish(self, message: Optional[str] = None) -> None:
        dt = time.perf_counter() - (self._job_t0 or time.perf_counter())
        self.exec_time += dt
        self.exec_cost += self._job_cost
        self._advance(self._job_cost)
        self._watch = []
        if message:
            self.log(f"{message}  [{_fmt_s(dt)}]")

    def skip(self, label: str, cost: float) -> None:
        """A cached job: counted as done, costs no time."""
        self.jobs += 1
        self._advance(cost)
        self.log(f"cached: {label}")

    def set_total(self, total_cost: float) -> None:
        """The plan's total once planned again (an alpha extension adds to it)."""
        self.total = max(float(total_cost), self.done, 1e-9)
        if self.live is not None:
            self.live.update(self.task, total=self.total, eta=self.eta())

    def _advance(self, cost: float) -> None:
        self.done = min(self.total, self.done + cost)
        if self.live is not None:
            self.live.update(self.task, completed=self.done, eta=self.eta())

    def eta(self) -> str:
        if self.exec_cost <= 0:
            return "?"
        return _fmt_s((self.total - self.done) * self.exec_time / self.exec_cost)

    def log(self, msg: str) -> None:
        if self.live is not None:
            self.live.log(msg)

    def close(self) -> None:
        self._watch = []
        self._watch_cache = ("", 0.0)
        if self.live is not None:
            self.live.update(self.task, completed=self.total, eta="0:00", description="experiment done")
            if self.plain:
                self.log(f"experiment done in {_fmt_s(time.perf_counter() - self.t0)}")
            self.live.close()
            self.live = None

    # ---- the current run's last dev evaluation -----------------------------------------
    def _run_status(self) -> str:
        now = time.perf_counter()
        text, at = self._watch_cache
        if now - at < 1.0:
            return text
        parts = []
        files = [f for d in self._watch for f in [d / "metrics.jsonl", *sorted(d.glob("*/metrics.jsonl"))]]
        for p in files:
            try:
                last = p.read_text().strip().splitlines()[-1]
                r = json.loads(last)
                parts.append(f"ep {r['epoch']:.2f} dev {r['dev_auc']:.4f}")
            except (OSError, IndexError, ValueError, KeyError):
                continue
        text = "; ".join(parts[:5])
        self._watch_cache = (text, now)
        return text
