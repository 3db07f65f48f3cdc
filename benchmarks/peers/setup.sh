#!/usr/bin/env bash
# Create the peers' own virtual environment (not the project's): FuxiCTR 2.3.10 and
# DeepCTR-Torch 0.3.0 on the same CPU torch 2.13.0 as mutualctr.
#
#   bash benchmarks/peers/setup.sh [VENV]      # default bench_out/peers-venv
#
# torch is installed FIRST and then pinned by a constraints file, so that no dependency of the
# peers can pull a multi-GB CUDA build of torch. Not part of CI.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${1:-$ROOT/bench_out/peers-venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
CONSTRAINTS="$VENV/constraints.txt"
printf 'torch==2.13.0\n' > "$CONSTRAINTS"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install torch==2.13.0
"$VENV/bin/pip" install -c "$CONSTRAINTS" fuxictr==2.3.10 'polars<2'
"$VENV/bin/pip" install -c "$CONSTRAINTS" deepctr-torch==0.3.0
"$VENV/bin/pip" install -c "$CONSTRAINTS" scikit-learn pandas numpy pyyaml
"$VENV/bin/python" -c "import torch, fuxictr, deepctr_torch; print('peers venv ok: torch', torch.__version__, 'fuxictr', fuxictr.__version__ if hasattr(fuxictr, '__version__') else '2.3.10', 'deepctr_torch', deepctr_torch.__version__)"
