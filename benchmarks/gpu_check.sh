#!/usr/bin/env bash
# The first look at a GPU, in under 8 minutes: the CUDA-marked tests, then the speed table of
# benchmarks/gpu_speed.py (DeepFM, DCN, PNN, FiBiNET: fp32, bf16, compile; the 4-member group
# looped and vectorised; evaluation rows/s), printed as one JSON (also OUT/gpu_check.json).
#
#   bash benchmarks/gpu_check.sh                       # on a CUDA machine, from any folder
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh   # the same code on the CPU, tiny sizes
#
# Environment: PYTHON (default: python, else python3), GPU_CHECK_OUT (default
# bench_out/gpu_check), GPU_CHECK_MODELS (default deepfm,dcn,pnn,fibinet),
# GPU_CHECK_COMPILE_MODELS (default: the models; deepfm in a dry run), GPU_CHECK_TOTAL (seconds
# for all the parts, default 440).
#
# It installs nothing but this checkout (`pip install -e .`), and only when the checkout's
# code cannot be imported with the environment as it is (src/ is put on PYTHONPATH first).
# Every part runs in its own process under its own time limit (timeout(1)); a part that runs
# out of time keeps the rows it measured, and the parts after it still run. The limits add up
# to at most TOTAL seconds from the start. Exit status: 0 when every part succeeded, 2 when
# there is no CUDA device (and no dry run), 1 otherwise.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
PY=${PYTHON:-$(command -v python || command -v python3)}
OUT=${GPU_CHECK_OUT:-$ROOT/bench_out/gpu_check}
DRY=${GPU_CHECK_DRY_RUN:-0}
MODELS=${GPU_CHECK_MODELS:-deepfm,dcn,pnn,fibinet}
if [ "$DRY" = 1 ]; then COMPILE_MODELS=${GPU_CHECK_COMPILE_MODELS:-deepfm}; else COMPILE_MODELS=${GPU_CHECK_COMPILE_MODELS:-$MODELS}; fi
TOTAL=${GPU_CHECK_TOTAL:-440}  # seconds for the parts from the start (each may overrun its limit by 5 s): under 8 minutes
START=$SECONDS
export GPU_CHECK_DRY_RUN=$DRY
export PYTHONPATH="$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
DRYFLAG=()
if [ "$DRY" = 1 ]; then
    DRYFLAG=(--dry-run)
    export OMP_NUM_THREADS=1
fi

mkdir -p "$OUT" || exit 1
rm -f "$OUT"/gpu_speed.*.json "$OUT"/gpu_check.status.tsv "$OUT"/gpu_check.json "$OUT"/tests.log
STATUS=$OUT/gpu_check.status.tsv
FAILED=0
log() { echo "[gpu_check $((SECONDS - START)) s] $*" >&2; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STATUS"; [ "$2" = 0 ] || FAILED=1; }

# ---- the environment: this checkout importable, and a device ---------------------------------
CHECK_IMPORTS="import mutualctr, mutualctr.cli, mutualctr.training.jobs, torch, numpy, pyarrow, yaml, scipy"
t=$SECONDS
if ! "$PY" -c "$CHECK_IMPORTS" 2>"$OUT/setup.log"; then
    log "the checkout does not import as it is ($(tail -n 1 "$OUT/setup.log")); pip install -e ."
    timeout 90 "$PY" -m pip install -q --no-build-isolation -e . >>"$OUT/setup.log" 2>&1 \
        || timeout 90 "$PY" -m pip install -q -e . >>"$OUT/setup.log" 2>&1
    if ! "$PY" -c "$CHECK_IMPORTS" 2>>"$OUT/setup.log"; then
        record setup 1 $((SECONDS - t)) -
        log "cannot import mutualctr and its dependencies; see $OUT/setup.log"
        "$PY" -m benchmarks.gpu_speed --merge "$OUT" | tee "$OUT/gpu_check.json"
        exit 1
    fi
fi
record setup 0 $((SECONDS - t)) -
if [ "$DRY" != 1 ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    log "torch sees no CUDA device (torch $("$PY" -c 'import torch; print(torch.__version__)')); GPU_CHECK_DRY_RUN=1 rehearses on the CPU"
    exit 2
fi

# ---- the parts, each under its limit ----------------------------------------------------------
# cap LIMIT: min(LIMIT, what is left of TOTAL)
cap() {
    local left=$((TOTAL - (SECONDS - START)))
    echo $(($1 < left ? $1 : left))
}

# run NAME LIMIT COMMAND...: the command under cap(LIMIT) seconds
run() {
    local name=$1 limit rc t
    limit=$(cap "$2")
    shift 2
    if [ "$limit" -lt 10 ]; then
        log "$name: skipped (the check's $TOTAL s are spent)"
        record "$name" skipped 0 "$limit"
        return
    fi
    log "$name: up to $limit s"
    t=$SECONDS
    timeout -k 5 "$limit" "$@" 1>&2  # stdout carries only the final JSON
    rc=$?
    record "$name" "$rc" $((SECONDS - t)) "$limit"
    [ "$rc" = 0 ] || log "$name: exit $rc$([ "$rc" = 124 ] && echo ' (its time limit)')"
}

# speed PART LIMIT [MODELS]: a gpu_speed part that starts no new row 15 s before its limit
speed() {
    local part=$1 limit models=${3:-$MODELS}
    limit=$(cap "$2")
    run "$part" "$limit" "$PY" -m benchmarks.gpu_speed --part "$part" --out "$OUT" --models "$models" \
        --seconds $((limit > 30 ? limit - 15 : limit / 2)) ${DRYFLAG[@]+"${DRYFLAG[@]}"}
}

if "$PY" -c "import pytest" 2>/dev/null; then
    run tests 100 sh -c '"$0" -m pytest -m cuda tests -rs -p no:cacheprovider --durations=5 >"$1" 2>&1' "$PY" "$OUT/tests.log"
else
    log "tests: skipped, pytest is not installed in this environment (pip install pytest to run them)"
    echo "pytest is not installed" >"$OUT/tests.log"
    record tests no-pytest 0 -
fi
speed data 45
speed train 60
speed group 60
speed eval 40
speed compile 150 "$COMPILE_MODELS"  # last: a first torch.compile is the slowest, least predictable part

log "done; merging"
"$PY" -m benchmarks.gpu_speed --merge "$OUT" | tee "$OUT/gpu_check.json"
exit $FAILED
