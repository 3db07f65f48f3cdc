"""Checkpoint files: atomic writes, clear errors for missing, corrupt and foreign files."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mutualctr import atomic
from mutualctr.errors import CheckpointError

FORMAT = 1


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with torch.save to a temporary file, then rename onto ``path``."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    atomic.write_bytes(path, buf.getvalue())


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a mutualctr checkpoint (format {FORMAT})")
    return obj


def check_store(ckpt: dict[str, Any], store, path: str | Path) -> None:
    """Fail clearly when a checkpoint was trained on a store with another feature map."""
    want = ckpt.get("fingerprint")
    if want != store.fingerprint:
        raise CheckpointError(
            f"{path}: trained on a store with fingerprint {str(want)[:12]}, but {store.path} has "
            f"{store.fingerprint[:12]} (another feature map); use the store the run was trained on"
        )
