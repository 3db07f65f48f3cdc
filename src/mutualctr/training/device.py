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


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 natively: a CUDA GPU that supports it, or a CPU with
    AMX or AVX512-BF16. Elsewhere oneDNN emulates bf16, many times slower than fp32 (13x for a
    DeepFM step on an AVX2-only AMD EPYC, docs/performance.md)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 or bf16 for ``train.precision`` on ``device``: ``auto`` is bf16 where it is native;
    an explicit ``bf16`` where it is not is refused rather than run at a fraction of the speed."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} ({', '.join(PRECISIONS)})")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        raise TrainingError(f"--precision bf16: this {torch.device(device).type.upper()} has no native bf16 "
                            "(no AMX or AVX512-BF16; emulated bf16 runs many times slower than fp32); "
                            "use --precision fp32, or auto to take bf16 only where it is native")
    return precision


def autocast(precision: str, device: torch.device):
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"unknown precision {precision!r} (fp32 or bf16; resolve auto first)")
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
