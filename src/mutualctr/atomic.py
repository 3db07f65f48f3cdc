"""Atomic file and directory writes: write to a temporary sibling, fsync, rename.

A crash at any point leaves either the old content or the new, never a half-written file
that looks complete.

Temporaries are named ``.NAME.<owner>.<random>.tmp`` (a directory being replaced is parked as
``.NAME.<owner>.old`` until the new one is in place), where ``<owner>`` is :func:`owner_tag`:
this host, pid and process start. A ``kill -9`` leaves them behind; the next writer removes the
ones whose owner is gone (:func:`mutualctr.outdir.clean_stale`).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1)
def host_id() -> str:
    """8 hex digits naming this host (temporaries on a shared filesystem name their host)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def process_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of process ``pid`` from Linux's
    /proc, None where it is gone or /proc is missing. With the pid the start identifies a
    process: a pid reused by a later process has a later start."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    try:
        fields = stat[stat.rindex(")") + 2:].split()
        return fields[0], int(fields[19])
    except (ValueError, IndexError):
        return None


def owner_tag() -> str:
    """``<host>-<pid>-<start>`` of this process (start 0 where /proc is missing)."""
    return _tag(os.getpid())


@functools.lru_cache(maxsize=4)
def _tag(pid: int) -> str:
    st = process_stat(pid)
    return f"{host_id()}-{pid}-{st[1] if st else 0}"


def _follow(path: Path) -> Path:
    """``path`` with a symbolic link followed: writing through a link replaces its target."""
    if path.is_symlink():
        if not path.exists():
            raise OSError(errno.ENOENT, "dangling symbolic link", str(path))
        return path.resolve()
    return path


def _prefix(path: Path) -> str:
    return f".{path.name}.{owner_tag()}."


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # (not thread-safe; only where /proc cannot tell)
    os.umask(mask)
    return mask


def _default_mode(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700: give the result the mode a plain open/mkdir would
    (stores and runs are shared between people)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = _follow(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file meant, not the temporary that could not be made
        raise OSError(e.errno, f"cannot write {path.name} there ({e.strerror})", str(path.parent)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        _default_mode(tmp_path, directory=False)
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path``.

    An existing ``path`` is moved aside first and removed only after the new one is in
    place, so an interruption never leaves neither. A symbolic link is followed: its target
    is replaced and the link kept. Whether ``path`` may be replaced at all is the caller's
    question (:mod:`mutualctr.outdir`).
    """
    path = _follow(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        _default_mode(tmp, directory=True)
        yield tmp
        _fsync_dir(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.{owner_tag()}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
