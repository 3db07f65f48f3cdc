"""Where and how a run computes: the device, bf16 autocast, and torch.compile's prerequisites."""

from __future__ import annotations

import contextlib
import os
import shutil

import torch

from mutualctr.errors import TrainingError
from mutualctr.training.config import PRECISIONS


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def autocast(precision: str, device: torch.device):
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} ({' or '.join(PRECISIONS)})")
    return contextlib.nullcontext()


def require_compiler(device: torch.device) -> None:
    """``train.compile`` on CPU runs inductor's C++ backend: fail before anything is written
    when there is no C++ compiler to run."""
    if torch.device(device).type != "cpu":
        return
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise TrainingError(f"train.compile needs a C++ compiler for torch.compile on CPU: {cxx!r} "
                            "is not on PATH (install g++ or set CXX), or train without --compile")


def compile_models(models, device: torch.device, vectorize: bool) -> None:
    """Each model's forward through ``torch.compile``, in place (state_dict keys and
    checkpoints stay those of the plain model)."""
    if vectorize:
        raise TrainingError("train.compile and --vectorize do not combine: the vectorised group calls "
                            "the members' layers functionally, around their compiled forward; use one")
    require_compiler(device)
    for model in models:
        model.compile()
