"""Output paths: what is ours to replace, one writer at a time, temporaries of dead owners.

The one rule every output path follows (``--out`` of ``prepare``, ``train``, ``mutual``,
``distill``, ``experiment`` and its ``--runs``, ``export``, ``predict``; docs/reliability.md):
a command writes only into a path that does not exist or that it marked as its own, never over
an input, a checkpoint, a store or a file of the user's.

- **Ours only.** A directory is replaced or cleared only if it is absent, empty, or carries the
  marker of its kind (:data:`KINDS`) *and* holds nothing but entries that kind writes (for a
  manifest kind, an export: exactly the files its marker lists, unchanged). Anything else is
  refused naming the path and the entries that are not ours, ``--overwrite`` or not.
- **Output files** (:func:`claim_file`, ``predict --out``): absent, empty or a predictions file
  we wrote; never an input, never inside a directory we wrote, never a device.
- **Failures.** A job that fails in a directory it created leaves none (:func:`discard_new`),
  unless it holds a checkpoint; SIGINT/SIGTERM unwind through the same cleanup
  (:mod:`mutualctr.interrupt`).
- **Paths.** A symbolic link is followed (its target is written, the link stays); a dangling
  link, an existing file, and the current directory or one of its parents are refused.
- **A searched group's members.** With ``alpha: auto`` the members live in the chosen alpha's
  directory; :func:`link_members` makes ``GROUP/m{i}-{model}`` relative symbolic links to them
  (entries a group writes; removed with it, replaced on resume). A missing run inside a group
  is reported with where its members are (:func:`missing_run`).
- **One writer.** :func:`locked` holds an exclusive ``flock`` on ``.NAME.lock`` beside the
  directory (beside, not inside: a store is replaced by a rename); a second writer fails at once
  naming the path and the pid holding it. The lock dies with its process, ``kill -9`` included.
- **Temporaries.** :mod:`mutualctr.atomic` names them ``.NAME.<host>-<pid>-<start>.*.tmp``;
  :func:`clean_stale` removes those whose owner process is gone (and puts back a directory parked
  as ``.NAME.<owner>.old`` by a replace that was killed halfway).

Typical use (what ``prepare`` does)::

    real = outdir.resolve(out)
    with outdir.locked(real, shown=out):
        outdir.clean_stale(real)
        state = outdir.check_replaceable(real, "store", shown=out)  # absent | empty | ours
        if state == "ours" and not overwrite: ...refuse...
        with atomic.atomic_dir(real) as tmp: ...write tmp...
"""

from __future__ import annotations

import csv
import fcntl
import fnmatch
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from mutualctr import atomic
from mutualctr.errors import MutualCTRError, OutputError

#: the marker file of the kinds without one of their own (written by :func:`write_marker`)
MARKER = ".mutualctr.json"


@dataclass(frozen=True)
class Kind:
    """A kind of output directory: its marker and the top-level entries it writes."""

    name: str
    marker: str  # file inside the directory whose JSON "format" is ``format``
    format: str
    entries: tuple[str, ...]  # fnmatch patterns of the top-level entries this kind writes
    legacy: tuple[str, ...] = ()  # files that together mark one written before markers existed
    title: str = ""  # how messages name it (default: its name)
    overwrite: bool = False  # whether a command offers --overwrite for it (messages say so)
    #: the marker lists every file written (name -> bytes, sha256): the directory is ours only
    #: when it holds exactly those files, unchanged (a kind written at once, e.g. an export)
    manifest: bool = False
    #: kinds of which every entry is one: a directory of them written before its marker existed
    holds: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {k.name: k for k in (
    # a store's feature map has always carried its format marker
    Kind("store", "feature_map.json", "mutualctr-store",
         ("feature_map.json", "train.[Xy].npy", "dev.[Xy].npy", "test.[Xy].npy", "vocab",
          # the list and dense fields' arrays (issue 25)
          *(f"{split}.{part}.npy" for split in ("train", "dev", "test")
            for part in ("bags.[0-9][0-9][0-9]", "values", "missing"))), overwrite=True),
    Kind("run", MARKER, "mutualctr-run",
         ("config.yaml", "store.json", "metrics.jsonl", "summary.json", "job.json", "checkpoints"),
         legacy=("config.yaml", "store.json")),
    Kind("group", MARKER, "mutualctr-group",
         ("group.json", "start.json", "job.json", "checkpoints", "m[0-9]*-*", "alpha-*"),
         legacy=("group.json",)),
    Kind("ensemble", MARKER, "mutualctr-ensemble", ("job.json", "ensemble.json")),  # an experiment's
    Kind("experiment", MARKER, "mutualctr-experiment",
         ("runs", "results.csv", "stats.json", "tables.md", "plots", "*.png"),
         legacy=("stats.json", "results.csv")),
    Kind("export", "export.json", "mutualctr-export",
         ("export.json", "model.onnx", "model.pt", "encoder.json"), manifest=True, overwrite=True),
    # an experiment's run cache (--runs DIR): one job directory per entry, named KIND-HASH
    Kind("runs", MARKER, "mutualctr-runs",
         ("train-*", "scratch-*", "finetune-*", "distill-*", "ensemble-*"), holds=("run", "group", "ensemble"),
         title="run cache"),
)}

KindName = Literal["store", "run", "group", "ensemble", "experiment", "export", "runs"]

_OWNER = r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-(?P<start>[0-9]+)"
_TEMP = re.compile(r"^\.(?P<name>.+)\." + _OWNER + r"\.(?P<what>[a-z0-9_]+\.tmp|old|del)$")
_OURS_HIDDEN = re.compile(r"^\..+\.(lock|" + _OWNER + r"\.([a-z0-9_]+\.tmp|old|del))$")


def _kind(kind: str) -> Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown output kind {kind!r} (known: {', '.join(KINDS)})") from None


# -- paths --------------------------------------------------------------------------------------
def _real(p: Path, shown, error) -> Path:
    """``p`` with links followed; a dangling link or a path below a file raises ``error``."""
    if p.is_symlink() and not p.exists():
        raise error(f"{shown}: is a symbolic link to {os.readlink(p)}, which does not exist; "
                    "create the target or pass another path")
    real = p.resolve()
    for up in real.parents:
        if up.exists():
            if not up.is_dir():
                raise error(f"{shown}: {up} is a file, not a directory")
            break
    return real


def resolve(path: str | Path, *, shown: str | Path | None = None,
            error: type[MutualCTRError] = OutputError) -> Path:
    """The real directory an output path names, symbolic links followed.

    Refused (``error`` naming ``shown``, default ``path``): a dangling link, an existing
    non-directory, a path below a file, the current directory or one of its parents.
    """
    shown = path if shown is None else shown
    real = _real(Path(path), shown, error)
    if real.exists() and not real.is_dir():
        raise error(f"{shown}: is a file, not a directory; pass another path")
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        where = "the current directory" if real == cwd else "a parent of the current directory"
        raise error(f"{shown}: is {where}; pass a new directory (it is never replaced)")
    return real


def resolve_file(path: str | Path, *, shown: str | Path | None = None,
                 error: type[MutualCTRError] = OutputError) -> Path:
    """The real file an output file path (e.g. ``predict --out``) names, links followed.

    Refused: an existing directory, a dangling link, a path below a file. (An existing file
    is replaced atomically by :func:`mutualctr.atomic.atomic_path`.)"""
    shown = path if shown is None else shown
    real = _real(Path(path), shown, error)
    if real.is_dir():
        raise error(f"{shown}: is a directory; pass a file name")
    return real


# -- ownership ----------------------------------------------------------------------------------
def _json_format(path: Path) -> str | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d.get("format") if isinstance(d, dict) else None


def file_digest(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_files(directory: str | Path, names) -> dict[str, dict[str, Any]]:
    """The ``files`` of a manifest kind's marker (:attr:`Kind.manifest`): each file written,
    ``name -> {"bytes", "sha256"}``; what makes the directory recognisably ours."""
    d = Path(directory)
    return {n: {"bytes": (d / n).stat().st_size, "sha256": file_digest(d / n)} for n in sorted(names)}


def _listed(path: Path, k: Kind) -> dict[str, Any] | None:
    """The files a manifest kind's marker lists, None without a valid marker."""
    try:
        d = json.loads((path / k.marker).read_text())
    except (OSError, ValueError):
        return None
    files = d.get("files") if isinstance(d, dict) and d.get("format") == k.format else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return None
    return files


def _changed(path: Path, files: dict[str, Any]) -> str | None:
    """The first listed file that is missing or not the bytes that were written."""
    for name, want in files.items():
        p = path / name
        if "/" in name or name in (".", "..") or p.is_symlink() or not p.is_file():
            return name
        if p.stat().st_size != want.get("bytes") or file_digest(p) != want.get("sha256"):
            return name
    return None


def _visible(path: Path) -> list[str]:
    return sorted(e for e in os.listdir(path) if not _OURS_HIDDEN.match(e))


def is_ours(path: str | Path, kind: KindName) -> bool:
    """Whether ``path`` is a directory carrying ``kind``'s marker (or, for directories written
    before markers existed, all of its legacy files). For a manifest kind the marker must list
    the files present, each unchanged."""
    k, path = _kind(kind), Path(path)
    if not path.is_dir():
        return False
    if k.manifest:
        files = _listed(path, k)
        return files is not None and _changed(path, files) is None
    if _json_format(path / k.marker) == k.format:
        return True
    if k.holds:  # a cache of job directories written before it had a marker
        entries = _visible(path)
        return bool(entries) and all(any(fnmatch.fnmatchcase(e, pat) for pat in k.entries)
                                     and any(is_ours(path / e, h) for h in k.holds) for e in entries)
    return bool(k.legacy) and all((path / f).is_file() for f in k.legacy)


def foreign_entries(path: str | Path, kind: KindName) -> list[str]:
    """Top-level entries of directory ``path`` that ``kind`` never writes (sorted); for a
    manifest kind with a valid marker, those its marker does not list."""
    k, path = _kind(kind), Path(path)
    listed = _listed(path, k) if k.manifest else None
    allowed = (k.marker, MARKER, *(k.entries if listed is None else ()))
    return sorted(e.name for e in os.scandir(path)
                  if not any(fnmatch.fnmatchcase(e.name, pat) for pat in allowed)
                  and e.name not in (listed or ()) and not _OURS_HIDDEN.match(e.name))


def _a(title: str) -> str:
    return f"{'an' if title[0] in 'aeiou' else 'a'} {title}"


def _some(path: Path, names: list[str]) -> str:
    """'a', 'b/', 'c' and 3 more: what would be lost (folders end in /)."""
    shown = [repr(n + ("/" if (path / n).is_dir() and not (path / n).is_symlink() else ""))
             for n in names[:3]]
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(shown) + more


def check_replaceable(path: str | Path, kind: KindName, *, shown: str | Path | None = None,
                      error: type[MutualCTRError] = OutputError) -> Literal["absent", "empty", "ours"]:
    """What replacing or clearing directory ``path`` would destroy: ``absent``, ``empty`` (only
    our hidden temporaries/locks) or ``ours`` (a ``kind`` we wrote, nothing else inside).
    Anything else raises ``error`` naming the path and the entries that are not ours."""
    path = Path(path)
    shown = path if shown is None else shown
    if not path.exists() and not path.is_symlink():
        return "absent"
    if not path.is_dir():
        raise error(f"{shown}: is a file, not a directory; pass another path")
    k = _kind(kind)
    try:
        if not _visible(path):
            return "empty"
        foreign = foreign_entries(path, kind)
        ours = is_ours(path, kind)
        changed = _changed(path, _listed(path, k) or {}) if k.manifest else None
    except OSError as e:
        raise error(f"{shown}: cannot read it ({e.strerror})") from None
    title = k.title or kind
    if not ours and changed is not None and _listed(path, k) is not None:
        raise error(f"{shown}: is a mutualctr {title} but {changed!r} is not what mutualctr wrote "
                    "there (changed or missing); move it away or pass another path")
    if not ours:
        what = (f"it holds {_some(path, foreign)}" if foreign else
                f"its {k.marker} lists no files written (not mutualctr's, or an older one's)"
                if k.manifest and _json_format(path / k.marker) == k.format else
                f"its {k.marker} was not written by mutualctr" if (path / k.marker).exists() else "no marker")
        hint = f" (--overwrite replaces only {_a(title)} that mutualctr wrote)" if k.overwrite else ""
        raise error(f"{shown}: exists and is not a mutualctr {title} ({what}); pass another path{hint}")
    if foreign:
        raise error(f"{shown}: is a mutualctr {title} but also holds {_some(path, foreign)}, which "
                    "mutualctr did not write; move it away or pass another path")
    return "ours"


def write_marker(path: str | Path, kind: KindName) -> None:
    """Mark directory ``path`` as a ``kind`` written by mutualctr (kinds whose marker is
    :data:`MARKER`; a store's marker is its feature_map.json)."""
    k = _kind(kind)
    if k.marker != MARKER:
        raise ValueError(f"a {kind} is marked by its {k.marker}")
    atomic.write_json(Path(path) / MARKER, {"format": k.format, "version": 1})


def remove(path: str | Path, kind: KindName, *, shown: str | Path | None = None,
           error: type[MutualCTRError] = OutputError) -> bool:
    """Delete directory ``path`` if :func:`check_replaceable` allows it (False: it was absent).

    It is first renamed to ``.NAME.<owner>.del``, so it disappears at once; a ``kill -9``
    during the deletion leaves that name, which :func:`clean_stale` removes."""
    path = Path(path)
    if path.is_symlink():  # delete the target, keep the link
        path = resolve(path, shown=shown, error=error)
    if check_replaceable(path, kind, shown=shown, error=error) == "absent":
        return False
    gone = path.with_name(f".{path.name}.{atomic.owner_tag()}.del")
    try:
        os.replace(path, gone)
    except OSError as e:
        raise error(f"{shown or path}: cannot remove it ({e.strerror})") from None
    shutil.rmtree(gone, ignore_errors=True)
    return True


# -- output files (predict --out) ----------------------------------------------------------------
#: the header's last column of a predictions file (``mutualctr predict``), and its values
PREDICTIONS_COLUMN = "probability"
_PROBABILITY = re.compile(r"^(0\.[0-9]{6}|1\.000000)$")


def is_predictions_file(path: str | Path, rows: int = 1000) -> bool:
    """Whether ``path`` reads as a predictions CSV mutualctr wrote: a header whose last column
    is ``probability``, and rows (those in its first MiB, at most ``rows``) of as many fields,
    the last a probability written with 6 decimals. (A CSV cannot carry a marker without
    changing the format: its shape is the mark; forging it only gets a predictions file
    replaced.)"""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
            complete = len(head) < 1 << 20
        if b"\0" in head:
            return False
        lines = head.decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return False
    if not complete:
        lines = lines[:-1]  # cut by the 1 MiB read
    try:
        reader = csv.reader(line for line in lines if line)
        header = next(reader, None)
        if not header or header[-1] != PREDICTIONS_COLUMN:
            return False
        return all(len(r) == len(header) and _PROBABILITY.match(r[-1]) for r in itertools.islice(reader, rows))
    except csv.Error:
        return False


def _title(kind: str) -> str:
    return KINDS[kind].title or kind


def enclosing_output(path: str | Path) -> tuple[Path, str] | None:
    """The nearest directory above ``path`` that mutualctr wrote (a store, run, group,
    experiment, export, run cache), with its kind; None when there is none."""
    for up in Path(path).parents:
        for name in KINDS:
            if is_ours(up, name):  # type: ignore[arg-type]
                return up, name
    return None


def _refuse_inside(real: Path, shown, error: type[MutualCTRError]) -> None:
    inside = enclosing_output(real)
    if inside is not None:
        raise error(f"{shown}: is inside the mutualctr {_title(inside[1])} {inside[0]}, which holds only "
                    "what mutualctr writes there; pass a path outside it")


SYNTH_GENERATOR = "mutualctr.data.synth"


def synth_meta(path: str | Path) -> Path:
    """The sidecar ``FILE.meta.json`` that ``mutualctr data synth`` writes beside FILE."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def is_synth_file(path: str | Path) -> bool:
    """Whether ``path`` was written by ``mutualctr data synth``: its sidecar says so."""
    try:
        d = json.loads(synth_meta(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and d.get("generator") == SYNTH_GENERATOR


#: output file kinds: how an existing file is recognised as ours, and how messages name it
FILE_KINDS = {
    "predictions": (is_predictions_file, f"a predictions file mutualctr wrote (a CSV whose last column is "
                                         f"'{PREDICTIONS_COLUMN}')"),
    "synth": (is_synth_file, "a file mutualctr data synth wrote (with its .meta.json)"),
}


def claim_file(path: str | Path, kind: Literal["predictions", "synth"] = "predictions", *, inputs=(),
               shown: str | Path | None = None, error: type[MutualCTRError] = OutputError) -> Path:
    """The real path of an output file (``predict --out``, ``data synth --out``), checked by the
    one rule: it does not exist (or is empty), or it is a ``kind`` file mutualctr wrote
    (:data:`FILE_KINDS`); never one of ``inputs`` (the files the command reads), never inside a
    directory mutualctr wrote (a store, a run and its checkpoints, ...), never a device or FIFO.
    Write it with :func:`mutualctr.atomic.atomic_path` (a temporary beside it, then a rename)."""
    shown = path if shown is None else shown
    real = resolve_file(path, shown=shown, error=error)
    ours, what = FILE_KINDS[kind]
    if kind == "synth" and os.path.lexists(synth_meta(real)) and not is_synth_file(real):
        raise error(f"{synth_meta(shown)}: exists and was not written by mutualctr data synth; pass another "
                    "path (it is never replaced)")
    for i in inputs:
        if i is not None and os.path.lexists(i) and Path(i).resolve() == real:
            raise error(f"{shown}: is the input {i}; pass another path for the {kind} output")
    _refuse_inside(real, shown, error)
    if os.path.lexists(real):
        try:
            st = os.stat(real)
        except OSError as e:
            raise error(f"{shown}: cannot read it ({e.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{shown}: exists and is not a regular file; pass another path")
        if st.st_size and not ours(real):
            raise error(f"{shown}: exists and is not {what}; pass another path (it is never replaced)")
    return real


# -- a directory written at once (export --out) ----------------------------------------------------
@contextmanager
def claimed_dir(path: str | Path, kind: KindName, *, overwrite: bool, shown: str | Path | None = None,
                error: type[MutualCTRError] = OutputError) -> Iterator[Path]:
    """Hold output directory ``path`` for a command that writes it at once (through
    :func:`mutualctr.atomic.atomic_dir`): links followed, never inside another mutualctr
    directory; one writer; stale temporaries removed; refused unless it is absent, empty, or
    (with ``overwrite``) a ``kind`` we wrote holding nothing else. Yields the real path."""
    shown = path if shown is None else shown
    real = resolve(path, shown=shown, error=error)
    _refuse_inside(real, shown, error)
    with locked(real, shown=shown, error=error):
        clean_stale(real)
        if check_replaceable(real, kind, shown=shown, error=error) == "ours" and not overwrite:
            raise error(f"{shown}: holds {_a(_title(kind))} already; pass --overwrite to replace it")
        yield real


def claim_cache(path: str | Path, kind: KindName, *, shown: str | Path | None = None,
                error: type[MutualCTRError] = OutputError) -> Path:
    """A directory that several commands add entries to (an experiment's ``--runs`` cache):
    refused unless absent, empty or a ``kind`` we wrote holding nothing else; created and
    marked. Returns the real path. (No lock: experiments may share a cache; each job
    directory inside is written by one of them.)"""
    shown = path if shown is None else shown
    real = resolve(path, shown=shown, error=error)
    check_replaceable(real, kind, shown=shown, error=error)
    return real


def mark_cache(real: Path, kind: KindName) -> None:
    """Create (if needed) and mark a directory :func:`claim_cache` allowed."""
    real.mkdir(parents=True, exist_ok=True)
    if _json_format(real / MARKER) != _kind(kind).format:
        write_marker(real, kind)


_NAMES_CHECKPOINT = re.compile(r"; the last good checkpoint is .*$", re.S)


def discard_new(path: str | Path, kind: KindName, was: str, failure: BaseException,
                shown: str | Path | None = None) -> None:
    """After a failed job in a directory that was ``absent`` or ``empty`` when claimed and that
    holds no checkpoint yet: remove what the job wrote (nothing of the user's: :func:`remove`
    checks), so a failed command leaves no directory, and say so in ``failure``'s message. A
    directory with a checkpoint (a run that diverged after good epochs) is kept: its
    checkpoints still evaluate, and the message names them."""
    if was not in ("absent", "empty") or not os.path.isdir(path):
        return
    if any(Path(path).rglob("*.pt")):  # a good checkpoint (the message names it): never lost
        return
    try:
        remove(path, kind)
    except MutualCTRError:
        return  # something not ours appeared meanwhile: leave it all
    if was == "empty":
        os.mkdir(path)
    if failure.args and isinstance(failure.args[0], str) and _NAMES_CHECKPOINT.search(failure.args[0]):
        msg = _NAMES_CHECKPOINT.sub("", failure.args[0])
        failure.args = (f"{msg}; nothing kept ({shown or path} was new and is removed)", *failure.args[1:])


# -- one writer at a time -------------------------------------------------------------------------
_held: dict[Path, int] = {}
_held_guard = threading.Lock()


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        return "another process"
    if not text or not text[0].isdigit():
        return "another process"
    if len(text) > 1 and text[1] != socket.gethostname():
        return f"pid {text[0]} on host {text[1]}"
    return f"pid {text[0]}"


@contextmanager
def locked(path: str | Path, *, shown: str | Path | None = None,
           error: type[MutualCTRError] = OutputError) -> Iterator[Path]:
    """Hold the exclusive writer's lock of output ``path`` (re-entrant within a process).

    The lock is an ``flock`` on ``.NAME.lock`` beside ``path``, holding the writer's pid; the
    file is removed on release. A second writer raises ``error`` at once: ``PATH: another
    mutualctr process (pid N) is writing it``. Use the real path (:func:`resolve`)."""
    path = Path(path)
    shown = path if shown is None else shown
    key = Path(os.path.abspath(path))
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield lock_path(key)
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    lock = lock_path(key)
    try:
        key.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = _holder(fd)
                os.close(fd)
                raise error(f"{shown}: another mutualctr process ({who}) is writing it; wait for "
                            "it to finish or pass another path") from None
            try:  # the previous holder may have removed the file between our open and flock
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
    except OSError as e:
        where = e.filename if e.filename and e.filename != str(lock) else key.parent
        raise error(f"{shown}: cannot write in {where} ({e.strerror})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        with _held_guard:
            _held[key] = 1
        try:
            yield lock
        finally:
            with _held_guard:
                del _held[key]
    finally:
        try:
            os.unlink(lock)  # while still holding it: a waiter then sees another inode and retries
        except OSError:
            pass
        os.close(fd)


# -- temporaries of dead owners -----------------------------------------------------------------
def owner_alive(host: str, pid: int, start: int) -> bool:
    """Whether the process that made a temporary may still be running (True when unsure: another
    host, or no /proc to tell a reused pid)."""
    if host != atomic.host_id():
        return True
    st = atomic.process_stat(pid)
    if st is None:
        if os.path.isdir("/proc/self"):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass
        return True
    state, started = st
    if state in ("Z", "X"):  # killed, not yet reaped
        return False
    return not start or started == start


def _stale(directory: Path, name: str | None) -> list[tuple[Path, str, str]]:
    out = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return out
    for e in entries:
        m = _TEMP.match(e.name)
        if m is None or (name is not None and m["name"] != name):
            continue
        if not owner_alive(m["host"], int(m["pid"]), int(m["start"])):
            out.append((Path(e.path), m["name"], m["what"]))
    return out


def _rm(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except OSError:
            pass


def _clean(directory: Path, name: str | None) -> list[Path]:
    removed = []
    stale = _stale(directory, name)
    # a replace killed between its two renames parked the old directory as .old: put it back
    for p, n, what in sorted(stale, key=lambda t: -t[0].lstat().st_mtime):
        target = directory / n
        if what == "old" and not os.path.lexists(target):
            os.replace(p, target)
            continue
        _rm(p)
        removed.append(p)
    return removed


def clean_stale(path: str | Path) -> list[Path]:
    """Remove the temporaries of output ``path`` (its ``.NAME.<owner>.*`` siblings) whose owner
    process is gone; a parked ``.old`` goes back to ``path`` if ``path`` is missing. Returns
    what was removed. Call it holding :func:`locked`."""
    path = Path(path)
    return _clean(path.parent, path.name)


def clean_stale_in(directory: str | Path) -> list[Path]:
    """:func:`clean_stale` for every temporary directly inside ``directory`` (e.g. a run
    directory's files and its checkpoints/ folder)."""
    return _clean(Path(directory), None)


# -- a group's members ----------------------------------------------------------------------------
_MEMBER = re.compile(r"^m[0-9]+-.+$")


def link_members(group: str | Path, chosen: str | Path) -> list[Path]:
    """``GROUP/m{i}-{model}`` as relative symbolic links to the members in ``chosen`` (the
    chosen alpha's directory inside ``group``), each replaced in one rename; an entry of that
    name that is not a link (a member trained there) is left alone. Returns the links made
    (none where the file system has no symbolic links)."""
    group, chosen = Path(group), Path(chosen)
    made = []
    for member in sorted(p for p in chosen.iterdir() if _MEMBER.match(p.name) and p.is_dir()):
        link = group / member.name
        if os.path.lexists(link) and not link.is_symlink():
            continue
        tmp = group / f".{member.name}.{atomic.owner_tag()}.link.tmp"
        try:
            if os.path.lexists(tmp):
                tmp.unlink()
            os.symlink(os.path.relpath(member, group), tmp)
            os.replace(tmp, link)
        except OSError:
            return made
        made.append(link)
    return made


def group_members(group: str | Path) -> list[Path]:
    """Where the members of group directory ``group`` are, as paths under ``group``: its
    ``m{i}-{model}`` entries, else (a search without links) those of the chosen alpha named by
    its group.json, else those of every alpha tried."""
    group = Path(group)
    try:
        own = sorted(group / e for e in os.listdir(group) if _MEMBER.match(e) and (group / e).is_dir())
        if own:
            return own
        try:
            d = json.loads((group / "group.json").read_text())
            alphas = [f"alpha-{d['settings']['alpha']:g}"]
        except (OSError, ValueError, KeyError, TypeError):
            alphas = sorted(e for e in os.listdir(group) if e.startswith("alpha-"))
        return [group / a / e for a in alphas if (group / a).is_dir()
                for e in sorted(os.listdir(group / a)) if _MEMBER.match(e)]
    except OSError:
        return []


def missing_run(run: str | Path) -> str:
    """The message for a run directory that does not exist; inside a group, it names the
    group's members."""
    run = Path(run)
    msg = f"{run}: no such run directory"
    group = run.parent
    if not is_ours(group, "group"):
        return msg
    members = group_members(group)
    if not members:
        return f"{msg}; {group} is a mutualctr group with no members yet"
    return f"{msg}; {group} is a mutualctr group, its members are {', '.join(map(str, members))}"
