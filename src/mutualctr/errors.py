"""Error types. Each message names the file, line, column or key at fault."""

import os
import stat


class MutualCTRError(Exception):
    """Base class for the errors mutualctr reports to users as one clear line."""


class ConfigError(MutualCTRError, ValueError):
    """A configuration value is unknown, missing, of the wrong type or out of range (also a
    ``ValueError``, which it was before it became a ``MutualCTRError``)."""


class DataError(MutualCTRError):
    """Bad raw input: wrong columns, bad values, empty or truncated file."""


class StoreError(MutualCTRError):
    """A prepared store is missing, incomplete, foreign or does not match."""


class CheckpointError(MutualCTRError):
    """A checkpoint or run directory is missing, corrupt or does not match the store."""


class TrainingError(MutualCTRError):
    """Training cannot go on (non-finite loss, ...)."""


class OutputError(MutualCTRError):
    """An output path cannot be written: foreign content, another writer, read-only, ..."""


def input_problem(path) -> str | None:
    """Why ``path`` cannot be read as an input file, as the end of a message (``is a FIFO (a
    named pipe), not a regular file``), or None for a regular file (links followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as e:
        return f"cannot read it ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    kinds = {stat.S_ISFIFO: "a FIFO (a named pipe)", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    kind = next((name for test, name in kinds.items() if test(mode)), "not a regular file")
    return f"is {kind}, not a regular file; give a file"
