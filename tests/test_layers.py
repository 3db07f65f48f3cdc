"""The layering of docs/architecture.md, as import contracts (pyproject.toml, [tool.importlinter]).

`lint-imports` builds the import graph of src/mutualctr (function-level imports included) and
checks two contracts: layers import downward only, and no two modules of a package import each
other in a cycle. The second test proves the contracts bite: an upward import planted in a copy
of the package breaks them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([*LINT, str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    p = _lint(ROOT / "src")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 kept, 0 broken" in p.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path):
    shutil.copytree(ROOT / "src" / "mutualctr", tmp_path / "mutualctr",
                    ignore=shutil.ignore_patterns("__pycache__"))
    models_init = tmp_path / "mutualctr" / "models" / "__init__.py"
    models_init.write_text(models_init.read_text() + "\nfrom mutualctr.training import jobs  # planted\n")
    p = _lint(tmp_path)
    assert p.returncode != 0
    assert "mutualctr.models is not allowed to import mutualctr.training" in p.stdout
