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


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    import ast

    src = path.read_text()
    lines = src.splitlines()
    found = []
    for fn in ast.walk(ast.parse(src)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    # its line, and the comment and import lines right above it (one block)
                    i, said = node.lineno - 1, [lines[node.lineno - 1]]
                    while i > 0 and lines[i - 1].strip().startswith(("#", "import ", "from ")):
                        i -= 1
                        said.append(lines[i])
                    found.append((node.lineno, "\n".join(said)))
    return found


def test_a_function_level_import_says_why():
    """Imports sit at module level; one inside a function stays only to keep `mutualctr --help`
    and the error paths fast or to load an optional dependency, with a `# lazy: why` comment
    on its line or above its block of imports (docs/architecture.md)."""
    silent = [f"{p.relative_to(ROOT)}:{line}" for p in sorted((ROOT / "src" / "mutualctr").rglob("*.py"))
              for line, said in _function_level_imports(p) if "# lazy:" not in said]
    assert not silent, "function-level imports without a '# lazy: why' comment:\n" + "\n".join(silent)
