"""The one owner of the run and group directory formats.

Run directory (``mutualctr train --out RUN``; each member of a group is one too)::

    config.yaml            the RunConfig it trained with
    store.json             {"path", "fingerprint"} of the store it trained on
    metrics.jsonl          one JSON line per dev evaluation (step, epoch, lr, losses, dev metrics)
    summary.json           the best-on-dev point and its test metrics, time, samples/s
    checkpoints/best.pt    a ModelCheckpoint: the best weights and what evaluating them needs
    checkpoints/last.pt    a GroupCheckpoint of one member: the resumable state (single runs)

Group directory (``mutualctr mutual|distill --out GROUP``)::

    m{i}-{model}/          one run directory per member (without last.pt); with alpha auto a
                           relative link to the chosen alpha's (alpha-A/m{i}-{model}/)
    start.json             each member's dev/test metrics before finetuning
    group.json             settings, per-member results (and RelaImp against the start), the mean
    checkpoints/last.pt    a GroupCheckpoint of every member
    checkpoints/members/m{i}.step{n}.pt   one file per member when the members live in several
                           processes (last.pt then names them)

The JSON files are the ``to_dict()`` of :mod:`mutualctr.results`' types (``RunResult``,
``GroupResult``, ``StartMetrics``, ``Evaluation``), written and read here only.

``.pt`` files are written with ``torch.save`` through a temporary file and a rename, and read
with ``torch.load(weights_only=True)``: they hold tensors, numbers, strings, lists and dicts,
never anything a pickle would have to call, so loading a file from someone else runs no code.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from mutualctr import atomic, outdir
from mutualctr.errors import CheckpointError
from mutualctr.models.plugins import label as model_label
from mutualctr.results import GroupResult, RunResult, StartMetrics
from mutualctr.training.state import LoopState, rng_state

# 1: the first release (group files held numpy's RNG state as a pickled array);
# 2: plain data only, loadable with weights_only=True. Model checkpoints did not change.
FORMAT = 2
MODEL_FORMATS = (1, 2)


# ---- .pt files ---------------------------------------------------------------------------------

def save(path: str | Path, payload: dict[str, Any]) -> None:
    """``torch.save`` of ``payload`` (plus the format number) to a temporary file, then rename."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    atomic.write_bytes(path, buf.getvalue())


def _reason(e: BaseException) -> str:
    """torch's error as one short line, without its advice to load with ``weights_only=False``
    (which would run whatever the file holds: never to be suggested)."""
    text = str(e)
    inner = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.S)
    line = " ".join((inner.group(1) if inner else text).split())
    if "weights_only" in line or not line:
        line = "not a file torch.save wrote"
    return f"{type(e).__name__}: {line[:200]}"


def load(path: str | Path, kind: str) -> dict[str, Any]:
    """The payload of a ``.pt`` file of ``kind`` ("model", "group", "member"), or a clear
    CheckpointError: missing, truncated, not ours, of another kind, or holding objects that
    only a pickle could rebuild (refused without running them)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # a class or function to call: never run it
            raise CheckpointError(
                f"{path}: refused: it holds objects other than tensors and plain data, which loading "
                f"would have to run (a tampered or foreign file); nothing was loaded") from e
        raise CheckpointError(f"{path}: not a mutualctr checkpoint (unreadable: {_reason(e)})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_reason(e)})") from e
    except Exception as e:  # random bytes reach torch's unpickler in many ways (IndexError, ...)
        raise CheckpointError(f"{path}: not a mutualctr checkpoint (unreadable: {_reason(e)})") from e
    if not isinstance(obj, dict) or "format" not in obj:
        raise CheckpointError(f"{path}: not a mutualctr checkpoint")
    formats = MODEL_FORMATS if kind == "model" else (FORMAT,)
    if obj.get("kind") != kind:
        raise CheckpointError(f"{path}: a {obj.get('kind')!r} checkpoint, expected a {kind} checkpoint")
    if obj["format"] not in formats:
        raise CheckpointError(f"{path}: checkpoint format {obj['format']} (this mutualctr reads "
                              f"{', '.join(map(str, formats))}); a run written before format {FORMAT} "
                              "cannot be resumed, start it again (its best.pt still evaluates)")
    return obj


def check_store(fingerprint: str | None, store, path: str | Path,
                vocab_fingerprint: str | None = None) -> list[list[int]] | None:
    """Fail clearly when a checkpoint was trained on a store with another feature map.

    The store must be the one trained on (``fingerprint``), or, when ``vocab_fingerprint`` is
    given (a model's weights, not a resumable state), any store with the same vocabulary
    fingerprint (one prepared ``--vocab-from`` it, or the store it was prepared from), or a
    descendant store whose vocabularies grew from that one (``prepare --grow``): then the
    ancestor's field layout is returned (the tables must grow; else None)."""
    if fingerprint == store.fingerprint:
        return None
    if vocab_fingerprint is not None and vocab_fingerprint != store.vocab_fingerprint:
        layout = store.feature_map.ancestor_layout(vocab_fingerprint)
        if layout is not None:
            return layout
    if vocab_fingerprint is None or vocab_fingerprint != store.vocab_fingerprint:
        raise CheckpointError(
            f"{path}: trained on a store with fingerprint {str(fingerprint)[:12]}, but {store.path} has "
            f"{store.fingerprint[:12]} (another feature map, not grown from it); use the store the run "
            "was trained on or one prepared --vocab-from it"
        )
    return None


def _typed(cls, obj: dict[str, Any], path: Path):
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in obj]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint (no {', '.join(missing)})")
    return cls(**{f.name: obj[f.name] for f in fields(cls) if f.name in obj})


# ---- what the files hold --------------------------------------------------------------------

@dataclass
class ModelCheckpoint:
    """``best.pt``: one model's weights with what using them needs, without its group."""

    model: str  # registry name
    config: dict[str, Any]  # the RunConfig as plain data
    state_dict: dict[str, torch.Tensor]
    fingerprint: str  # of the store it was trained on
    store_path: str | None
    num_features: int
    num_fields: int
    step: int
    epoch: float
    dev: dict[str, float] | None
    init_from: str | None  # the run it was finetuned from
    vocab_fingerprint: str | None = None  # of the store's vocabulary (None: written before it was recorded)
    features: dict[str, Any] | None = None  # the store's fields a user model is built from (models.Features)
    #: the store's FieldLayout.to_dict() when it has list or dense fields (None: ids tensors only)
    layout: dict[str, Any] | None = None

    def save(self, path: str | Path) -> None:
        save(path, {"kind": "model", **asdict(self)})

    @classmethod
    def load(cls, path: str | Path) -> "ModelCheckpoint":
        return _typed(cls, load(path, "model"), Path(path))


@dataclass
class MemberState:
    """One member's resumable state inside a group checkpoint."""

    model: dict[str, torch.Tensor]
    optimizers: list[dict[str, Any]]
    schedule: dict[str, Any]
    best: dict[str, Any] | None
    best_state: dict[str, torch.Tensor] | None
    history: list[dict[str, Any]]
    config: dict[str, Any]


@dataclass
class GroupCheckpoint:
    """``last.pt``: the loop, the random streams and every member (or, when the members live in
    several processes, the names of the member files written at the same step)."""

    fingerprint: str
    loop: LoopState
    rng: dict[str, Any]
    members: list[MemberState] | None
    member_files: list[str] | None

    def save(self, path: str | Path) -> None:
        save(path, {"kind": "group", "fingerprint": self.fingerprint, "loop": self.loop.to_dict(),
                    "rng": self.rng, "member_files": self.member_files,
                    "members": None if self.members is None else [asdict(m) for m in self.members]})

    @classmethod
    def load(cls, path: str | Path) -> "GroupCheckpoint":
        path = Path(path)
        obj = load(path, "group")
        ck = _typed(cls, obj, path)
        ck.loop = LoopState.from_dict(obj["loop"])
        if ck.members is not None:
            ck.members = [_typed(MemberState, m, path) for m in ck.members]
        return ck


def _member_file_payload(index: int, step: int, fingerprint: str, state: MemberState) -> dict[str, Any]:
    return {"kind": "member", "index": index, "step": step, "fingerprint": fingerprint,
            "member": asdict(state), "rng": rng_state()}


# ---- directories ------------------------------------------------------------------------------

def _mark(path: Path, kind: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if not outdir.is_ours(path, kind) or not (path / outdir.MARKER).is_file():
        outdir.write_marker(path, kind)


class RunDir:
    """The files of one run directory (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.best = self.checkpoints / "best.pt"

    def holds_run(self) -> bool:
        return self.checkpoints.exists()

    def mark(self) -> None:
        """Create the directory (if needed) with the marker that makes it recognisably ours."""
        _mark(self.path, "run")

    def write_start_files(self, config: dict[str, Any], store) -> None:
        self.mark()
        atomic.write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        atomic.write_json(self.path / "store.json", {"path": str(Path(store.path).resolve()),
                                                      "fingerprint": store.fingerprint})

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """``metrics.jsonl``: the member's history, one :class:`~mutualctr.results.Evaluation`
        (its ``to_dict()``, as the checkpoints keep it) a line."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))

    def write_summary(self, summary: RunResult) -> None:
        atomic.write_json(self.path / "summary.json", summary.to_dict())

    def read_summary(self) -> RunResult:
        return _read_result(self.path / "summary.json", RunResult)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def best_checkpoint(self) -> ModelCheckpoint:
        return ModelCheckpoint.load(self.best)


def model_checkpoint_path(run: str | Path) -> Path:
    """A run directory's best.pt, or the ``.pt`` file given itself."""
    run = Path(run)
    if run.suffix == ".pt":
        return run
    if not run.exists():
        raise CheckpointError(outdir.missing_run(run))
    if not run.is_dir():
        raise CheckpointError(f"{run}: is a file, not a run directory (or a .pt checkpoint)")
    return RunDir(run).best


class GroupDir:
    """The files of one group directory (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def mark(self) -> None:
        _mark(self.path, "group")

    def member(self, index: int, model: str) -> RunDir:
        return RunDir(self.path / f"m{index}-{model_label(model)}")  # a user model: its class name

    def write_start(self, starts: list[StartMetrics]) -> None:
        atomic.write_json(self.path / "start.json", [s.to_dict() for s in starts])

    def read_start(self) -> list[StartMetrics]:
        path = self.path / "start.json"
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; the group cannot be resumed without its members' start")
        return [_result(path, StartMetrics, s) for s in _read_json(path)]

    @property
    def group_file(self) -> Path:
        return self.path / "group.json"

    def write_group(self, group: GroupResult) -> None:
        atomic.write_json(self.group_file, group.to_dict())

    def read_group(self) -> GroupResult:
        return _read_result(self.group_file, GroupResult)


def _read_json(path: Path) -> Any:
    """A result file's JSON, or a CheckpointError naming it (truncated, not JSON, or of an older
    layout that lacks a key)."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from e


def _result(path: Path, cls, d: Any):
    try:
        return cls.from_dict(d)
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a {cls.__name__} record this version reads ({e})") from e


def _read_result(path: Path, cls):
    return _result(path, cls, _read_json(path))


class Checkpointer:
    """Writes and reads the resumable state of a trainer's members at ``out/checkpoints``.

    ``par`` is the trainer's parallel context (:mod:`mutualctr.distributed`). When one process
    holds every member (data-parallel replicas hold identical copies) rank 0 writes ``last.pt``
    with all of them. When members live in several processes it is a two-phase commit: each
    member's writer saves its member at this step; when all have, rank 0 replaces ``last.pt``
    (naming those files) in one rename; only then are older member files removed. A crash at
    any point leaves ``last.pt`` naming a complete set of files, all at the same step.
    """

    def __init__(self, out: str | Path, par, fingerprint: str):
        self.last = Path(out) / "checkpoints" / "last.pt"
        self.par = par
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        return self.last.is_file()

    def _member_file(self, index: int, step: int) -> Path:
        return self.last.parent / "members" / f"m{index}.step{step}.pt"

    def last_step(self) -> int:
        """The step of the last complete checkpoint, or -1 when there is none (error messages)."""
        try:
            return GroupCheckpoint.load(self.last).loop.step
        except CheckpointError:
            return -1

    def describe_last(self) -> str:
        return f"{self.last} (step {self.last_step()})" if self.exists() else "none yet"

    def save(self, loop: LoopState, states: list[MemberState]) -> None:
        """``states``: this process's members, in the order of ``par.member_ids``."""
        par = self.par
        if not par.sharded_members:
            if par.is_main:
                GroupCheckpoint(self.fingerprint, loop, rng_state(), states, None).save(self.last)
            return
        step = loop.step
        if par.is_writer:
            for state, gi in zip(states, par.member_ids):
                save(self._member_file(gi, step), _member_file_payload(gi, step, self.fingerprint, state))
        par.barrier("the checkpoint commit (member files)")
        if par.is_main:
            names = [str(self._member_file(gi, step).relative_to(self.last.parent)) for gi in range(par.num_members)]
            GroupCheckpoint(self.fingerprint, loop, rng_state(), None, names).save(self.last)
        par.barrier("the checkpoint commit (group file)")
        if par.is_writer:
            for gi in par.member_ids:
                keep = self._member_file(gi, step)
                for old in keep.parent.glob(f"m{gi}.step*.pt"):
                    if old.name != keep.name:
                        old.unlink(missing_ok=True)

    def load(self, store) -> tuple[LoopState, list[MemberState], dict[str, Any]]:
        """(loop, this process's members' states, the RNG state to restore). Either layout (one
        file, or member files) resumes in any mode: one process, data-parallel, or members spread
        over workers."""
        par = self.par
        ck = GroupCheckpoint.load(self.last)
        check_store(ck.fingerprint, store, self.last)
        held = len(ck.member_files) if ck.member_files else len(ck.members or [])
        if held != par.num_members:
            raise CheckpointError(f"{self.last}: holds {held} members, this run has {par.num_members}")
        rng, states = ck.rng, []
        for gi in par.member_ids:
            if ck.member_files:
                path = self.last.parent / ck.member_files[gi]
                mf = load(path, "member")
                if mf.get("index") != gi or mf.get("step") != ck.loop.step:
                    raise CheckpointError(f"{path}: member {mf.get('index')} at step {mf.get('step')}, but "
                                          f"{self.last} expects member {gi} at step {ck.loop.step}")
                states.append(_typed(MemberState, mf["member"], path))
                rng = mf["rng"]
            else:
                states.append(ck.members[gi])
        steps = par.all_gather_object(ck.loop.step)
        if len(set(steps)) != 1:
            raise CheckpointError(f"{self.last}: the workers would resume at different steps {steps}; "
                                  f"every worker must see the same --out directory (a shared filesystem)")
        return ck.loop, states, rng
