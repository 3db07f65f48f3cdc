"""The plan of an experiment: its jobs as typed descriptions, in the order they run.

:meth:`mutualctr.experiments.runner.Experiment.plan` enumerates the jobs the questions need
(each shared job once) with their cached state, without training or writing anything; the
experiment then runs the first job still to run and plans again, until none is left.

Some jobs depend on results: the alpha search extends its grid past an end that wins on dev,
RQ2's controls use the setting chosen on dev and the best-on-dev instance as the teacher, RQ3
starts from the best-on-dev instances and RQ4 ranks its instances on dev. While those results
are not known, the plan holds what is known up front and, for the rest, the job that the
decision would give with no results (the grid without extensions, the smallest alpha, the
first instance, seed order); such jobs are marked ``provisional`` and every job they wait on
comes earlier in the plan, so a provisional job never runs: by the time it is first, planning
again has decided it. An alpha extension enters the plan when the results before it decide it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

# kind -> what its directory is (outdir markers) and the file that says it is done
JOB_DIRS = {"train": "run", "scratch": "group", "finetune": "group", "distill": "group", "ensemble": "ensemble"}
MARKERS = {"train": "summary.json", "scratch": "group.json", "finetune": "group.json", "distill": "group.json",
           "ensemble": "ensemble.json"}


@dataclass
class Job:
    """A job as the questions see it: its key, directory and result (summary or group dict;
    None while it has not run)."""

    key: str
    dir: Path
    result: Optional[dict[str, Any]]


@dataclass(frozen=True)
class JobSpec:
    """One job of the plan: what it is, where its result goes, what it costs, how it runs."""

    kind: str  # train | scratch | finetune | distill | ensemble
    key: str  # OUT/runs/<key>
    dir: Path
    label: str  # shown by the progress display
    model: str  # the model it trains (a mixed group: the first of --models)
    question: str  # the first question that needs it
    cost: float  # estimated member-epochs
    payload: dict[str, Any] = field(repr=False, compare=False)  # job.json (besides kind and label)
    run: Callable[[Path, bool], dict[str, Any]] = field(repr=False, compare=False)  # (dir, resume) -> result
    done: bool = False  # its result file exists (cached)
    provisional: bool = False  # decided on results not known yet: may leave the plan once they are

    @property
    def state(self) -> str:
        return "done" if self.done else "to run"


@dataclass
class Rq1Jobs:
    pretrained: list[Job]
    scratch: Job


@dataclass
class Rq2Jobs:
    pretrained: list[Job]
    grid: dict[tuple[float, float], Job]  # (alpha, lr) -> finetuning, in the order tried
    choice: tuple[float, float]  # (alpha, lr) with the best mean dev AUC
    control: Job  # alpha 0 at the chosen lr
    ensemble: Job
    teacher: int  # 0-based instance, the best on dev
    beta: float
    distill: Job


@dataclass
class Rq3Jobs:
    best: dict[str, int]  # model -> its best-on-dev instance (0-based)
    pretrained: dict[str, list[Job]]
    same: dict[str, Job]  # model -> its RQ2 group at the chosen setting
    mixed: Optional[dict[tuple[float, float], Job]]  # None: fewer than two models
    choice: Optional[tuple[float, float]]


@dataclass
class Rq4Jobs:
    model: str
    seeds: list[int]
    pretrained: list[Job]
    choice: tuple[float, float]
    groups: list[tuple[int, list[int], Job]]  # (k, members (0-based, seed order), group)


@dataclass
class Plan:
    """The jobs of the questions (each once, in the order they run) and, per question, the
    jobs its rows are read from."""

    jobs: list[JobSpec]
    rq1: dict[str, Rq1Jobs] = field(default_factory=dict)
    rq2: dict[str, Rq2Jobs] = field(default_factory=dict)
    rq3: Optional[Rq3Jobs] = None
    rq4: Optional[Rq4Jobs] = None

    @property
    def total(self) -> float:
        """Member-epochs of every job of the plan, done or not."""
        return sum(j.cost for j in self.jobs)

    @property
    def todo(self) -> list[JobSpec]:
        return [j for j in self.jobs if not j.done]

    def next(self) -> Optional[JobSpec]:
        """The first job still to run (None: the experiment is complete)."""
        return next((j for j in self.jobs if not j.done), None)
