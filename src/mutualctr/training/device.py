"""Where and how a run computes: the device, bf16 autocast, and torch.compile's prerequisites."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import time
import warnings

import torch

from mutualctr.errors import ConfigError, TrainingError
from mutualctr.runtime import DEVICES
from mutualctr.training.config import PRECISIONS


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:  # before torch sees it (its error lists twenty device types)
        raise ConfigError(f"device: expected one of {' | '.join(map(repr, DEVICES))}, got {name!r}")
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


def resolve_precision(precision: str, device: torch.device, resuming: bool = False) -> str:
    """fp32 or bf16 for ``train.precision`` on ``device``: ``auto`` is bf16 where it is native;
    an explicit ``bf16`` where it is not is refused rather than run at a fraction of the speed,
    except when ``resuming`` a job that started in bf16 elsewhere: it continues as it started,
    emulated, with a warning (a resume never changes what a job computes)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} ({', '.join(PRECISIONS)})")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        kind = torch.device(device).type.upper()
        if not resuming:
            raise TrainingError(f"--precision bf16: this {kind} has no native bf16 (no AMX or AVX512-BF16; "
                                "emulated bf16 runs many times slower than fp32); use --precision fp32, or auto "
                                "to take bf16 only where it is native")
        warnings.warn(f"this job started in bf16 and resumes in bf16, emulated on this {kind} (no AMX or "
                      "AVX512-BF16): many times slower than fp32", stacklevel=2)
    return precision


def autocast(precision: str, device: torch.device):
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"unknown precision {precision!r} (fp32 or bf16; resolve auto first)")
    return contextlib.nullcontext()


def has_compiler(device: torch.device) -> bool:
    """Whether torch.compile can run on ``device``: on CPU, inductor's C++ backend needs a C++
    compiler (``$CXX``, else ``g++``) on PATH."""
    return torch.device(device).type != "cpu" or shutil.which(os.environ.get("CXX", "g++")) is not None


def require_compiler(device: torch.device) -> None:
    """``train.compile``: fail before anything is written when there is no C++ compiler to run."""
    if not has_compiler(device):
        cxx = os.environ.get("CXX", "g++")
        raise TrainingError(f"train.compile needs a C++ compiler for torch.compile on CPU: {cxx!r} "
                            "is not on PATH (install g++ or set CXX), or train without --compile")


# train.compile: auto compiles runs of at least this many planned training steps, past the
# break-even of the compile pause against the faster steps even with a cold inductor cache
# (docs/performance.md, "Compile where it pays")
COMPILE_AUTO_STEPS = 5000


def resolve_compile(setting: bool | str, planned_steps: int, device: torch.device, vectorize: bool) -> bool:
    """``train.compile`` as a yes or no: ``auto`` is yes for runs of at least
    :data:`COMPILE_AUTO_STEPS` steps, not vectorised, with a C++ compiler where the device needs one."""
    if setting != "auto":
        return bool(setting)
    return not vectorize and planned_steps >= COMPILE_AUTO_STEPS and has_compiler(device)


def compile_models(models, device: torch.device, vectorize: bool) -> None:
    """Each model's forward through ``torch.compile``, in place (state_dict keys and
    checkpoints stay those of the plain model)."""
    if vectorize:
        raise TrainingError("train.compile and --vectorize do not combine: the vectorised group calls "
                            "the members' layers functionally, around their compiled forward; use one")
    require_compiler(device)
    for model in models:
        model.compile()


MALLOC_ENV = "MUTUALCTR_SYSTEM_MALLOC"  # set to 1: leave the C allocator's settings as they are
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc reuse the memory a training step frees instead of returning it to the kernel.

    A CPU step allocates and frees the same tensors every time ((B, F*D) activations and their
    gradients: 10 MB at B=4000, d=624; FiBiNET's (B, P, D) pair tensors: 95 MB). glibc's
    defaults give some of them back (``munmap``, heap trimming; every block over 32 MB is its
    own ``mmap``) and take them again on the next step, and each 4 KB page of a fresh block
    costs a page fault plus zeroing on first write: 3-13k faults (8-22 ms of kernel time) a step
    for DeepFM, DCN and PNN here, 102-116k (280 ms, 1.3x the step) for FiBiNET
    (docs/performance.md, "DCN and PNN cut to their matrix products"). Serving every block from
    the heap (no ``mmap``) and never trimming it keeps the pages mapped; the cost is that the
    process holds its peak heap until it exits.
    (A thread's arena still maps what its heaps cannot hold: glibc falls back to ``mmap``.)
    Process-wide, once, glibc only; ``MUTUALCTR_SYSTEM_MALLOC=1`` leaves it alone.
    Returns whether the settings are applied (decided at the first call)."""
    if os.environ.get(MALLOC_ENV, "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    import ctypes  # lazy: Linux only
    import platform  # lazy: Linux only

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


class CPUContentionWarning(UserWarning):
    """torch runs more CPU threads than other processes leave cores free. Its text advises the
    Python API's ``threads=N``; ``cli`` is the same advice for the command line (``--threads N``),
    which the CLI prints instead."""

    def __init__(self, message: str, cli: str | None = None):
        super().__init__(message)
        self.cli = message if cli is None else cli


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (Linux ``/proc/stat``; None elsewhere).
    Steal counts as busy: a vCPU the hypervisor gave away is as unavailable as one in use."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks + [0] * (8 - len(ticks))
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_cpu_load(window: float = 0.25) -> float | None:
    """How many cores other processes kept busy over the next ``window`` seconds: all busy
    CPU time minus this process's own, per second. None where ``/proc/stat`` is unreadable."""
    before, mine = _busy_cpu_seconds(), os.times()
    t0 = time.monotonic()
    time.sleep(window)
    after, mine_after = _busy_cpu_seconds(), os.times()
    if before is None or after is None:
        return None
    own = (mine_after.user + mine_after.system) - (mine.user + mine.system)
    return max(0.0, (after - before - own) / (time.monotonic() - t0))


def contention_advice(threads: int, cores: int, others: float, *, cli: bool = True) -> str | None:
    """The warning for ``threads`` torch threads on ``cores`` cores of which other processes
    keep ``others`` busy, or None when they fit. torch's OpenMP threads meet at a barrier after
    every parallel op, so one thread descheduled by another process stalls them all (figures:
    docs/performance.md, "Threads on a shared CPU"). One thread never waits on another. It names
    the flag (``--threads N``), or with ``cli=False`` the API's parameter (``threads=N``)."""
    free = cores - others
    if threads <= 1 or threads <= free + 0.5:
        return None
    fit = max(1, int(free + 0.5))
    return (f"torch runs {threads} CPU threads, but other processes keep {others:.1f} of this machine's "
            f"{cores} cores busy: the threads wait on each other and training runs slower than with fewer "
            f"threads; pass {f'--threads {fit}' if cli else f'threads={fit}'} (train.threads: {fit}) while "
            "the cores are shared (docs/performance.md, \"Threads on a shared CPU\")")


_CONTENTION_CHECKED: set[int] = set()


def warn_if_cpu_contended(threads: int) -> None:
    """Warn (CPUContentionWarning) when ``threads`` torch threads would share their cores with
    other busy processes; measured once per process and thread count (a 0.25 s sample).
    ``MUTUALCTR_CPU_CHECK=0`` in the environment turns the check off (the test suite does)."""
    if threads <= 1 or threads in _CONTENTION_CHECKED or os.environ.get("MUTUALCTR_CPU_CHECK", "1") == "0":
        return
    _CONTENTION_CHECKED.add(threads)
    others = others_cpu_load()
    if others is None:
        return
    cores = len(os.sched_getaffinity(0))
    advice = contention_advice(threads, cores, others, cli=False)
    if advice:
        warnings.warn(CPUContentionWarning(advice, contention_advice(threads, cores, others)),
                      stacklevel=_caller_level())


def _caller_level() -> int:
    """The ``stacklevel`` (for a warning issued by our caller) of the first frame outside
    mutualctr: the line of the user's script that called ``mc.train`` / ``mc.mutual``."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
