"""Running examples/serve_export.py the way a serving machine would: without mutualctr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serve_export.py"


def serve(*args) -> subprocess.CompletedProcess:
    """The reference encoder in a fresh interpreter in which mutualctr cannot be imported."""
    code = ("import runpy, sys; sys.modules['mutualctr'] = None; "
            f"sys.argv = ['serve_export.py'] + {[str(a) for a in args]!r}; "
            f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
