"""What the Python API returns: typed results with the run files' JSON as their ``to_dict``.

Each result reads back from, and writes as, exactly the JSON the run files and the command
line's ``--json`` hold (``summary.json``, ``group.json``, ``start.json``, ``metrics.jsonl``,
``ensemble --json``, ``evaluate --json``): ``X.from_dict(d).to_dict() == d`` for what mutualctr
writes (tested), so the files stay the one format. The producers (the trainer, the jobs) build
these types and :mod:`mutualctr.training.rundir` writes their ``to_dict()``: no other code spells
a result file's keys. This module sits below ``training`` and imports nothing of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from mutualctr.metrics import auc, calibration, gauc, logloss, relaimp, sigmoid, version_churn


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if v is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = _plain(v)
        return out
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _opt(**kw):
    """A field that is left out of ``to_dict`` when it is None (keys some files do not have)."""
    return field(default=None, metadata={"omit_none": True}, **kw)


def _take(cls, d: dict[str, Any], **nested):
    """``cls`` from ``d``: its known keys (nested dataclasses converted by ``nested``)."""
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            v = d[f.name]
            kw[f.name] = nested[f.name](v) if f.name in nested and v is not None else v
    return cls(**kw)


@dataclass(frozen=True)
class ReliabilityBin:
    """One non-empty probability bin of a reliability curve (:func:`mutualctr.metrics.calibration`)."""

    lower: float
    upper: float
    rows: int
    mean_predicted: float
    observed: float


@dataclass(frozen=True)
class Calibration:
    """Predicted against observed click rate: the rates, their ratio, the expected calibration
    error over 10 equal-width probability bins and the reliability curve
    (:func:`mutualctr.metrics.calibration`)."""

    predicted_rate: float
    observed_rate: float
    ratio: float
    ece: float
    bins: list[ReliabilityBin] | None = _opt()  # the curve: left out of group means

    @classmethod
    def of(cls, labels: np.ndarray, logits: np.ndarray) -> "Calibration":
        return cls.from_dict(calibration(labels, sigmoid(logits)))

    @classmethod
    def mean(cls, cals: Sequence["Calibration"]) -> "Calibration":
        """The members' mean rates, ratio and ECE (no curve)."""
        return cls(*(float(np.mean([getattr(c, k) for c in cals]))
                     for k in ("predicted_rate", "observed_rate", "ratio", "ece")))

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibration":
        return _take(cls, d, bins=lambda bs: [ReliabilityBin(**b) for b in bs])


@dataclass(frozen=True)
class GroupedAUC:
    """AUC per value of the schema's ``group_by`` field, weighted by rows, single-class groups
    skipped (:func:`mutualctr.metrics.gauc`)."""

    field: str
    gauc: float
    groups: int
    groups_scored: int


@dataclass(frozen=True)
class Scores:
    """AUC (ties 1/2), logloss and row count of a model on a split; with :meth:`of`, its
    calibration and (when the store names a ``group_by`` field) its grouped AUC."""

    auc: float
    logloss: float
    rows: int
    calibration: Calibration | None = _opt()
    gauc: GroupedAUC | None = _opt()

    @classmethod
    def of(cls, labels: np.ndarray, logits: np.ndarray, groups: np.ndarray | None = None,
           group_by: str | None = None) -> "Scores":
        """Every figure of ``logits`` against 0/1 ``labels`` (``groups``: each row's value of the
        ``group_by`` field, for the grouped AUC)."""
        y = np.asarray(labels)
        g = None if groups is None else GroupedAUC(field=group_by, **gauc(y, logits, groups))
        return cls(auc=auc(y, logits), logloss=logloss(y, sigmoid(logits)), rows=int(len(y)),
                   calibration=Calibration.of(y, logits), gauc=g)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scores":
        return _take(cls, d, calibration=Calibration.from_dict, gauc=lambda g: GroupedAUC(**g))


@dataclass(frozen=True)
class VersionChurn:
    """``churn``: how much a run's predictions changed from another run's (an earlier version) on
    the same rows (:func:`mutualctr.metrics.version_churn`), with both runs' scores."""

    run: str
    against: str
    split: str
    rows: int
    mean_abs_diff: float
    rank_moved: float
    logit_corr: float
    new: Scores
    old: Scores

    @classmethod
    def of(cls, run: str, against: str, split: str, labels: np.ndarray, new_logits: np.ndarray,
           old_logits: np.ndarray) -> "VersionChurn":
        return cls(run=run, against=against, split=split, rows=int(len(labels)),
                   **version_churn(new_logits, old_logits),
                   new=Scores.of(labels, new_logits), old=Scores.of(labels, old_logits))

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VersionChurn":
        return _take(cls, d, new=Scores.from_dict, old=Scores.from_dict)


@dataclass(frozen=True)
class StartMetrics:
    """A finetuned member before its first step (an entry of ``start.json``)."""

    dev_auc: float
    dev_logloss: float
    test_auc: float
    test_logloss: float

    @classmethod
    def of(cls, dev: dict[str, float], test: dict[str, float]) -> "StartMetrics":
        """From the dev and test scores (``{"auc", "logloss", ...}``) of the start."""
        return cls(dev_auc=dev["auc"], dev_logloss=dev["logloss"], test_auc=test["auc"],
                   test_logloss=test["logloss"])

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StartMetrics":
        return _take(cls, d)


_BEST_KEYS = ("step", "epoch", "dev_auc", "dev_logloss")


@dataclass(frozen=True)
class Evaluation:
    """One dev evaluation of a member: a line of ``metrics.jsonl`` (step 0 of a finetuning is
    its start: no training loss nor speed yet)."""

    step: int
    epoch: float
    lr: float
    train_loss: float | None
    dev_auc: float
    dev_logloss: float
    samples_per_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Evaluation":
        return _take(cls, d)

    def best_point(self) -> dict[str, Any]:
        """What a member keeps of its best evaluation (its checkpoint's ``best``)."""
        return {k: v for k, v in self.to_dict().items() if k in _BEST_KEYS}

    def beats(self, best: dict[str, Any] | None) -> bool:
        """A better dev AUC than ``best`` (a :meth:`best_point`), or the first evaluation."""
        return best is None or self.dev_auc > best["dev_auc"]


@dataclass(frozen=True)
class RunResult:
    """One trained model (a run, or a member of a group): its best-on-dev point and the test
    metrics there (``summary.json``)."""

    model: str
    run_dir: str
    init_from: str | None
    seed: int
    best_step: int
    best_epoch: float
    dev_auc: float
    dev_logloss: float
    test_auc: float
    test_logloss: float
    steps: int
    train_time_s: float
    samples_per_s: float | None
    start: StartMetrics | None
    fingerprint: str
    kept_start: bool | None = _opt()  # finetuning: no evaluation beat the start
    warnings: list[str] | None = _opt()
    relaimp_test: float | None = _opt()  # groups: RelaImp against the member's start, in %
    relaimp_dev: float | None = _opt()
    calibration: Calibration | None = _opt()  # groups: on test, at the best point (no curve)
    precision: str | None = _opt()  # fp32 | bf16: what the training steps ran in (None: runs before it was recorded)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        return _take(cls, d, start=lambda s: StartMetrics(**s), calibration=Calibration.from_dict)

    def against_start(self) -> "RunResult":
        """With its RelaImp (in %) against its start, on test and dev (finetuned members)."""
        if self.start is None:
            return self
        return replace(self, relaimp_test=relaimp(self.test_auc, self.start.test_auc),
                       relaimp_dev=relaimp(self.dev_auc, self.start.dev_auc))


@dataclass(frozen=True)
class Churn:
    """How much models disagree on the same rows, over every pair: mean |p_i - p_j| and the
    mean correlation of their logits (:func:`mutualctr.metrics.churn`)."""

    mean_abs_diff: float
    logit_corr: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Churn":
        return _take(cls, d)


@dataclass(frozen=True)
class GroupChurn:
    split: str
    before: Churn | None  # the members as they started (finetuning), else None
    after: Churn


@dataclass(frozen=True)
class AlphaPoint:
    """One alpha tried by ``alpha: auto``: its group's mean dev and test AUC."""

    alpha: float
    dir: str
    dev_auc: float
    test_auc: float
    churn: float | None
    kept_start: int


@dataclass(frozen=True)
class GroupSettings:
    mode: str  # finetune | scratch | distill
    alpha: float
    loss: str
    lr: float
    epochs: int
    evals_per_epoch: int
    seed: int
    init: list[str]
    teachers: list[str]
    scope: str
    embedding_lr_scale: float
    finetune_split: float
    alpha_auto: bool | None = _opt()
    workers: int | None = _opt()


@dataclass(frozen=True)
class GroupMean:
    dev_auc: float
    dev_logloss: float
    test_auc: float
    test_logloss: float
    relaimp_test: float | None = _opt()
    start_test_auc: float | None = _opt()
    start_dev_auc: float | None = _opt()
    calibration: Calibration | None = _opt()

    @classmethod
    def of(cls, members: Sequence["RunResult"]) -> "GroupMean":
        """The members' means (RelaImp and the start where every member has them)."""
        def mean(values) -> float:
            return float(np.mean(list(values)))

        starts = [m.start for m in members]
        return cls(dev_auc=mean(m.dev_auc for m in members), dev_logloss=mean(m.dev_logloss for m in members),
                   test_auc=mean(m.test_auc for m in members), test_logloss=mean(m.test_logloss for m in members),
                   relaimp_test=(mean(m.relaimp_test for m in members)
                                 if all(m.relaimp_test is not None for m in members) else None),
                   start_test_auc=mean(s.test_auc for s in starts) if all(starts) else None,
                   start_dev_auc=mean(s.dev_auc for s in starts) if all(starts) else None,
                   calibration=(Calibration.mean([m.calibration for m in members])
                                if all(m.calibration is not None for m in members) else None))


@dataclass(frozen=True)
class GroupResult:
    """A group (``group.json``): its settings, each member's result, the means, the churn and,
    with ``alpha: auto``, the alpha curve it chose from."""

    settings: GroupSettings
    members: list[RunResult]
    mean: GroupMean
    churn: GroupChurn
    alpha_search: list[AlphaPoint] | None = _opt()

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def of(cls, settings: GroupSettings, members: Sequence[RunResult], before: Churn | None,
           after: Churn, test: tuple[np.ndarray, Sequence[np.ndarray]] | None = None) -> "GroupResult":
        """A group's record from its members' results (RelaImp against their starts added), its
        churn on test before (finetuning) and after and, given ``test`` (the test labels and each
        member's test logits), each member's calibration on test."""
        members = [m.against_start() for m in members]
        if test is not None:
            labels, logits = test
            members = [replace(m, calibration=Calibration.of(labels, z)) for m, z in zip(members, logits)]
        return cls(settings=settings, members=members, mean=GroupMean.of(members),
                   churn=GroupChurn(split="test", before=before, after=after))

    def alpha_point(self, where: str) -> AlphaPoint:
        """This group as one point of an alpha search (its directory ``where``)."""
        return AlphaPoint(alpha=self.settings.alpha, dir=where, dev_auc=self.mean.dev_auc,
                          test_auc=self.mean.test_auc,
                          churn=None if self.churn is None else self.churn.after.mean_abs_diff,
                          kept_start=sum(bool(m.kept_start) for m in self.members))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GroupResult":
        def churn(c):
            return GroupChurn(c["split"], None if c["before"] is None else Churn(**c["before"]), Churn(**c["after"]))

        def mean(m):
            return _take(GroupMean, m, calibration=Calibration.from_dict)

        return _take(cls, d, settings=lambda s: _take(GroupSettings, s), mean=mean,
                     members=lambda ms: [RunResult.from_dict(m) for m in ms], churn=churn,
                     alpha_search=lambda pts: [AlphaPoint(**p) for p in pts])


@dataclass(frozen=True)
class MemberScores:
    run: str
    model: str
    auc: float
    logloss: float
    rows: int


@dataclass(frozen=True)
class EnsembleResult:
    """The average of the members' probabilities on a split, each member, and their churn."""

    auc: float
    logloss: float
    rows: int
    members: list[MemberScores]
    split: str
    churn: Churn

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EnsembleResult":
        return _take(cls, d, members=lambda ms: [MemberScores(**m) for m in ms], churn=lambda c: Churn(**c))


@dataclass(frozen=True)
class Predictions:
    """``predict``: rows scored and where; AUC/logloss when the file had both labels."""

    rows: int
    out: str
    auc: float | None = _opt()
    logloss: float | None = _opt()

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Predictions":
        return _take(cls, d)

