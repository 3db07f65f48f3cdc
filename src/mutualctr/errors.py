"""Error types. Each message names the file, line, column or key at fault."""


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
