"""Output directories: what is ours to replace, one writer at a time, temporaries of dead owners.

The rules every command that writes a directory (``prepare``, ``train``, ``mutual``,
``experiment``) follows (docs/reliability.md):

- **Ours only.** A directory is replaced or cleared only if it is absent, empty, or carries the
  marker of its kind (:data:`KINDS`) *and* holds nothing but entries that kind writes. Anything
  else is refused naming the path and an entry that is not ours, ``--overwrite`` or not.
- **Paths.** A symbolic link is followed (its target is written, the link stays); a dangling
  link, an existing file, and the current directory or one of its parents are refused.
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

import fnmatch
import json
import os
import re
import shutil
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

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


KINDS: dict[str, Kind] = {k.name: k for k in (
    # a store's feature map has always carried its format marker
    Kind("store", "feature_map.json", "mutualctr-store",
         ("feature_map.json", "train.[Xy].npy", "dev.[Xy].npy", "test.[Xy].npy", "vocab",
          # the list and dense fields' arrays (issue 25)
          *(f"{split}.{part}.npy" for split in ("train", "dev", "test")
            for part in ("bags.[0-9][0-9][0-9]", "values", "missing")))),
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
)}

KindName = Literal["store", "run", "group", "ensemble", "experiment"]

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


def is_ours(path: str | Path, kind: KindName) -> bool:
    """Whether ``path`` is a directory carrying ``kind``'s marker (or, for directories written
    before markers existed, all of its legacy files)."""
    k, path = _kind(kind), Path(path)
    if not path.is_dir():
        return False
    if _json_format(path / k.marker) == k.format:
        return True
    return bool(k.legacy) and all((path / f).is_file() for f in k.legacy)


def foreign_entries(path: str | Path, kind: KindName) -> list[str]:
    """Top-level entries of directory ``path`` that ``kind`` never writes (sorted)."""
    k = _kind(kind)
    allowed = (*k.entries, k.marker, MARKER)
    return sorted(e.name for e in os.scandir(path)
                  if not any(fnmatch.fnmatchcase(e.name, pat) for pat in allowed)
                  and not _OURS_HIDDEN.match(e.name))


def check_replaceable(path: str | Path, kind: KindName, *, shown: str | Path | None = None,
                      error: type[MutualCTRError] = OutputError) -> Literal["absent", "empty", "ours"]:
    """What replacing or clearing directory ``path`` would destroy: ``absent``, ``empty`` (only
    our hidden temporaries/locks) or ``ours`` (a ``kind`` we wrote, nothing else inside).
    Anything else raises ``error`` naming the path and an entry that is not ours."""
    path = Path(path)
    shown = path if shown is None else shown
    if not path.exists() and not path.is_symlink():
        return "absent"
    if not path.is_dir():
        raise error(f"{shown}: is a file, not a directory; pass another path")
    try:
        foreign = foreign_entries(path, kind)
        empty = not any(not _OURS_HIDDEN.match(e) for e in os.listdir(path))
    except OSError as e:
        raise error(f"{shown}: cannot read it ({e.strerror})") from None
    if empty:
        return "empty"
    more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
    if not is_ours(path, kind):
        what = f"it holds {foreign[0]!r}{more}" if foreign else "no marker"
        raise error(f"{shown}: exists and is not a mutualctr {kind} ({what}); pass another path "
                    f"(--overwrite replaces only a {kind} that mutualctr wrote)")
    if foreign:
        raise error(f"{shown}: is a mutualctr {kind} but also holds {foreign[0]!r}{more}, which "
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
    import fcntl

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
