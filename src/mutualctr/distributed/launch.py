"""``--nproc K``: run the same command under torchrun on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence


def strip_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == name:
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        out.append(a)
    return out


def launch(nproc: int, argv: Sequence[str] | None = None, extra: Sequence[str] = ()) -> int:
    """Run ``mutualctr <argv>`` (minus ``--nproc``) as ``nproc`` torchrun workers on this machine.

    Equivalent to ``torchrun --standalone --nproc_per_node=K -m mutualctr ...``. Each worker gets
    ``OMP_NUM_THREADS = cores // K`` unless it is set. Returns torchrun's exit code (non-zero
    when any worker failed; torchrun then stops the others).
    """
    argv = strip_option(sys.argv[1:] if argv is None else argv, "--nproc")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           *extra, "-m", "mutualctr", *argv]
    return subprocess.run(cmd, env=env).returncode
