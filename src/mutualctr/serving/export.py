"""Export a trained run for serving: the model as ONNX or TorchScript, plus an encoder spec.

An export directory (written through a temporary directory and a rename; docs/export.md)::

    export.json    manifest: format marker, model, files, input/output, run, store, check
    model.onnx     --format onnx (torch's exporter; needs ``pip install 'mutualctr[export]'``)
    model.pt       --format torchscript (torch alone)
    encoder.json   the encoder spec: raw rows -> the model's ids, without mutualctr

The model takes ``ids`` (int64 ``(B, F)`` global ids, B dynamic) and returns ``probability``
(float32 ``(B,)``, the sigmoid of the run's logit). The encoder spec restates what
:mod:`mutualctr.data.transform` and :mod:`mutualctr.data.encode` do to a raw row (what
``mutualctr predict`` does): the input layout, the fields in model order with the raw column
each reads, each field's vocabulary (value -> local id), the numeric and hour rules, and the
OOV / missing ids. The numeric rule ``floor(ln(v)^2)`` is given as a table of thresholds found
by bisection on :func:`mutualctr.data.transform.bucket` itself, so a serving encoder needs
integer (or float) comparisons only, and no logarithm that could round differently.
``examples/serve_export.py`` is a reference encoder and scorer that imports no mutualctr.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import logging
import math
import os
import re
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from mutualctr import __version__, outdir
from mutualctr.atomic import atomic_dir
from mutualctr.config import ConfigError
from mutualctr.errors import MutualCTRError

FORMAT = "mutualctr-export"
VERSION = 1
ENCODER_FORMAT = "mutualctr-encoder"
ENCODER_VERSION = 1
MANIFEST = "export.json"
ENCODER = "encoder.json"
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
INPUT, OUTPUT = "ids", "probability"
TOLERANCE = 1e-5
#: packages of the ``export`` extra: torch's ONNX exporter imports onnx and onnxscript,
#: ``--check`` scores with onnxruntime
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
CHECK_BATCH = 1 << 16
_HOUR_PARTS = {"hour-of-day": "hour_of_day", "weekday": "weekday", "weekend": "weekend"}


class ExportError(MutualCTRError):
    """A run cannot be exported, the output directory is not ours, or --check failed."""


@dataclass
class CheckResult:
    """Scores of a store split through the exported artefact vs the eager model."""

    split: str
    rows: int
    runtime: str  # what scored the artefact: onnxruntime X / torch.jit (torch X)
    max_abs_diff: float  # max |p_exported - p_eager| over the rows
    eager_auc: float  # = ``mutualctr evaluate``'s AUC
    exported_auc: float
    eager_logloss: float
    exported_logloss: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


@dataclass
class ExportResult:
    out: Path
    format: str
    model: str
    files: list[str]
    num_fields: int
    num_features: int
    check: CheckResult | None = None


# ---- the encoder spec -------------------------------------------------------------------

_INT64_MAX = int(np.iinfo(np.int64).max)
_FLOAT_MAX = float(np.finfo(np.float64).max)


def _tokens(values: np.ndarray) -> np.ndarray:
    """The tokens :func:`mutualctr.data.transform.bucket` gives ``values`` (int64 or float64)."""
    from mutualctr.data.transform import bucket

    with np.errstate(all="ignore"):  # bucket floors huge floats before it overwrites them
        return bucket(pa.array(values)).to_numpy(zero_copy_only=False)


def log_squared_thresholds(count: int, values: str = "integer") -> list:
    """``T[k-1]`` = the smallest ``v > 2`` whose bucket ``floor(ln(v)^2)`` is ``>= k``, for
    ``k = 1 .. count`` (capped at the bucket of the largest int64 / float64).

    For ``v > 2`` the token is then ``bisect_right(T, v)``: exact for every ``v`` below
    ``T[-1]``, and ``count`` or more above it. ``values='integer'``: ``T`` holds ints (bisection
    on the integers); ``'number'``: floats (bisection on the float64 bit patterns, whose order
    is the numbers' order for positive floats). The bisection calls the store's own
    :func:`~mutualctr.data.transform.bucket`, and each threshold is checked against it.
    """
    integer = values == "integer"
    if not integer and values != "number":
        raise ConfigError(f"numeric_values: expected 'integer' or 'number', got {values!r}")
    if integer:
        lo0, hi0 = 2, _INT64_MAX
        as_values = lambda b: b  # noqa: E731
    else:
        lo0 = int(np.float64(2.0).view(np.int64))
        hi0 = int(np.float64(_FLOAT_MAX).view(np.int64))
        as_values = lambda b: b.view(np.float64)  # noqa: E731
    top = int(_tokens(as_values(np.array([hi0], np.int64)))[0])
    count = max(0, min(int(count), top))
    k = np.arange(1, count + 1, dtype=np.int64)
    lo = np.full(count, lo0, np.int64)  # bucket(lo) < k (lo0 stands for "2", never evaluated)
    hi = np.full(count, hi0, np.int64)  # bucket(hi) >= k
    while count:
        open_ = hi - lo > 1
        if not open_.any():
            break
        mid = lo + (hi - lo) // 2
        ge = _tokens(as_values(mid)) >= k
        hi = np.where(open_ & ge, mid, hi)
        lo = np.where(open_ & ~ge, mid, lo)
    ok = _tokens(as_values(hi)) >= k
    prev = hi - 1
    has_prev = prev > lo0
    ok &= ~has_prev | (_tokens(as_values(np.where(has_prev, prev, hi))) < k)
    ok &= np.diff(hi, prepend=lo0) > 0
    if not ok.all():
        bad = int(k[~ok][0])
        raise ExportError(f"cannot tabulate the numeric buckets: bucket {bad} has no clean "
                          "threshold (this numpy's log is not monotone there)")
    return [int(x) for x in hi] if integer else [float(x) for x in as_values(hi)]


def encoder_spec(store) -> dict[str, Any]:
    """The encoder spec (a JSON-able dict) of a store: see docs/export.md for every key."""
    from mutualctr.data.schema import CATEGORICAL, NUMERIC, schema_from_dict
    from mutualctr.data.store import FIRST, MISSING, OOV

    fm = store.feature_map
    schema = schema_from_dict(fm.schema)
    fields = []
    for i, f in enumerate(fm.fields):
        vocab = store.vocab(i).to_pylist()
        if len(vocab) + FIRST != f.vocab_size:
            raise ExportError(f"{store.path}: vocab/{i:03d}.arrow holds {len(vocab)} values, the "
                              f"feature map says {f.vocab_size - FIRST}")
        if f.kind == CATEGORICAL:
            transform: dict[str, Any] = {"name": "text"}
        elif f.kind == NUMERIC:
            top = max([0, *vocab])
            transform = {"name": "log_squared", "values": schema.numeric_values,
                         "thresholds": log_squared_thresholds(top + 1, schema.numeric_values)}
        elif f.kind in _HOUR_PARTS:
            transform = {"name": "yymmddhh", "part": _HOUR_PARTS[f.kind]}
        else:
            raise ExportError(f"{store.path}: field {f.name}: unknown kind {f.kind!r}")
        fields.append({"name": f.name, "kind": f.kind, "column": f.column, "offset": f.offset,
                       "size": f.vocab_size, "min_count": f.min_count, "transform": transform,
                       "vocab": vocab})
    return {
        "format": ENCODER_FORMAT,
        "version": ENCODER_VERSION,
        "dataset": fm.dataset,
        "store_fingerprint": fm.fingerprint,
        "input": {"format": schema.format, "separator": schema.sep, "header": schema.header,
                  "quoting": schema.quoting, "columns": list(schema.columns),
                  "label": schema.label, "label_map": dict(schema.label_map)},
        "ids": {"dtype": "int64", "num_fields": fm.num_fields, "num_features": fm.num_features,
                "oov": OOV, "missing": MISSING, "first": FIRST},
        "fields": fields,
    }


# ---- the model ----------------------------------------------------------------------------

class Probability(nn.Module):
    """``ids (B, F)`` int64 -> ``sigmoid(model(ids))`` ``(B,)`` float32: what is exported."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(ids))


class _FMFormula(nn.Module):
    """:class:`~mutualctr.models.layers.FactorizationMachine` without its autograd.Function:
    the same arithmetic (``_FMTerm.forward``), which TorchScript's tracer can record (it cannot
    record a Python autograd.Function)."""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        from mutualctr.models.layers import _FMTerm

        return _FMTerm.forward(emb)


def serving_module(model: nn.Module) -> Probability:
    """A CPU, eval-mode, frozen copy of ``model`` wrapped in :class:`Probability`.

    In eval mode with frozen weights every embedding takes the plain ``F.embedding`` path and
    DCN's cross network its formula; the FM term's autograd.Function is swapped for its own
    forward (:class:`_FMFormula`). ``model`` itself is left as it is.
    """
    from mutualctr.models.layers import FactorizationMachine

    m = copy.deepcopy(model).cpu().eval()
    m.requires_grad_(False)
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FactorizationMachine):
                setattr(parent, name, _FMFormula())
    return Probability(m).eval()


def _missing(packages) -> list[str]:
    out = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            out.append(name)
    return out


def require_onnx(packages=ONNX_PACKAGES) -> None:
    """ExportError (one line) when a package of the ``export`` extra is not installed."""
    missing = _missing(packages)
    if missing:
        raise ExportError(f"--format onnx needs {', '.join(ONNX_PACKAGES)} (missing: "
                          f"{', '.join(missing)}): pip install 'mutualctr[export]'")


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' warnings and their registry's log lines (torchvision ops ...)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.fx.experimental.symbolic_shapes")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # graph dumps of a failure
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def write_onnx(module: nn.Module, path: Path, num_fields: int) -> int:
    """``module`` as ONNX at ``path`` (torch.export-based exporter, dynamic batch); the opset."""
    require_onnx(("onnx", "onnxscript"))
    example = torch.zeros(2, num_fields, dtype=torch.int64)
    with torch.no_grad(), _quiet():
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=[INPUT],
                                    output_names=[OUTPUT],
                                    dynamic_shapes={"ids": {0: torch.export.Dim("batch")}},
                                    verbose=False)
        program.save(str(path))
    return next((int(o.version) for o in program.model_proto.opset_import if o.domain == ""), 0)


def write_torchscript(module: nn.Module, path: Path, num_fields: int) -> None:
    """``module`` traced (``torch.jit.trace``, batch-size independent ops only) at ``path``."""
    example = torch.zeros(2, num_fields, dtype=torch.int64)
    with torch.no_grad(), _quiet():
        traced = torch.jit.trace(module, (example,), check_trace=False)
        traced.save(str(path))


def load_scorer(out: Path, manifest: dict[str, Any]) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A function ``ids (n, F) int64 -> probabilities (n,) float32`` over an export's model
    file, and the name of what runs it."""
    path = Path(out) / manifest["model_file"]
    if manifest["model_format"] == "onnx":
        require_onnx(("onnxruntime",))
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return (lambda X: session.run([OUTPUT], {INPUT: X})[0]), f"onnxruntime {ort.__version__}"
    with _quiet():
        traced = torch.jit.load(str(path), map_location="cpu")

    def score(X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return traced(torch.from_numpy(X)).numpy()

    return score, f"torch.jit (torch {torch.__version__})"


def score_rows(score: Callable[[np.ndarray], np.ndarray], X: np.ndarray,
               batch: int = CHECK_BATCH) -> np.ndarray:
    out = np.empty(len(X), np.float32)
    for s in range(0, len(X), batch):
        out[s:s + batch] = score(np.ascontiguousarray(X[s:s + batch], dtype=np.int64))
    return out


def check_export(out: Path, manifest: dict[str, Any], model: nn.Module, store,
                 split: str = "test", tolerance: float = TOLERANCE) -> CheckResult:
    """Score ``split`` through the export in ``out`` and through ``model`` (as ``evaluate``)."""
    from mutualctr.metrics import auc, logloss
    from mutualctr.training.inference import predict_logits

    X, y = store.split(split)
    y = np.asarray(y)
    if len(y) == 0:
        raise ExportError(f"{store.path}: the {split} split has no rows to check the export on")
    logits = predict_logits(model, X, 0, torch.device("cpu"))
    eager = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    score, runtime = load_scorer(out, manifest)
    got = score_rows(score, X)
    diff = np.abs(got.astype(np.float64) - eager)
    max_diff = float(diff.max()) if np.isfinite(diff).all() else math.inf
    return CheckResult(split=split, rows=int(len(y)), runtime=runtime, max_abs_diff=max_diff,
                       eager_auc=auc(y, logits), exported_auc=auc(y, got),
                       eager_logloss=logloss(y, eager), exported_logloss=logloss(y, got),
                       tolerance=tolerance)


# ---- export -------------------------------------------------------------------------------

def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """An export directory's manifest, or None when ``out`` holds no export of ours."""
    path = Path(out) / MANIFEST
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("format") == FORMAT else None


def export_run(run: str | Path, out: str | Path, format: str = "onnx",
               store_path: str | Path | None = None, check: bool = False,
               tolerance: float = TOLERANCE, overwrite: bool = False) -> ExportResult:
    """Export the best model of ``run`` and its store's encoder spec into directory ``out``.

    ``store_path``: the store (default: the one the run was trained on; its fingerprint must
    match). ``check``: score the store's test split through the written artefact and fail
    (ExportError, nothing written) when a probability differs from the eager model's by more
    than ``tolerance``. ``overwrite`` replaces an earlier export, never another directory.
    """
    from mutualctr.data.store import Store
    from mutualctr.training.jobs import load_run
    from mutualctr.training.rundir import check_store, model_checkpoint_path

    if format not in MODEL_FILES:
        raise ConfigError(f"format: expected {' or '.join(MODEL_FILES)}, got {format!r}")
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise ConfigError(f"tolerance: must be a positive number, got {tolerance}")
    shown = out
    with outdir.claimed_dir(out, "export", overwrite=overwrite, error=ExportError) as real:
        if format == "onnx":
            require_onnx(ONNX_PACKAGES if check else ("onnx", "onnxscript"))
        model, cfg, ck = load_run(run)
        ck_path = model_checkpoint_path(run)
        if store_path is None:
            store_path = ck.store_path
            if not store_path:
                raise ExportError(f"{ck_path}: names no store; pass --data STORE")
        store = Store.open(store_path)
        check_store(ck.fingerprint, store, ck_path)
        manifest = _manifest(run, format, cfg, ck, store)
        result, files = _write(real, shown, run, format, model, store, manifest, check, tolerance)
    fm = store.feature_map
    return ExportResult(out=Path(out), format=format, model=cfg.model_name, files=files,
                        num_fields=fm.num_fields, num_features=fm.num_features, check=result)


def _manifest(run, format: str, cfg, ck, store) -> dict[str, Any]:
    fm = store.feature_map
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_format": format,
        "model_file": MODEL_FILES[format],
        "encoder_file": ENCODER,
        "model": cfg.model_name,
        "input": {"name": INPUT, "dtype": "int64", "shape": ["batch", fm.num_fields]},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["batch"],
                   "meaning": "click probability, sigmoid of the model's logit"},
        "run": str(Path(run).resolve()),
        "checkpoint": {"step": ck.step, "epoch": ck.epoch, "dev": ck.dev, "init_from": ck.init_from},
        "store": {"path": str(Path(store.path).resolve()), "fingerprint": store.fingerprint,
                  "dataset": fm.dataset},
        "num_fields": fm.num_fields,
        "num_features": fm.num_features,
        "versions": {"mutualctr": __version__, "torch": torch.__version__},
    }


def _write_model(tmp: Path, run, format: str, model: nn.Module, num_fields: int,
                 manifest: dict[str, Any]) -> None:
    module = serving_module(model)
    try:
        if format == "onnx":
            import onnx

            opset = write_onnx(module, tmp / MODEL_FILES[format], num_fields)
            manifest["onnx_opset"] = opset
            manifest["versions"]["onnx"] = onnx.__version__
            manifest["exporter"] = "torch.onnx.export(dynamo=True)"
        else:
            write_torchscript(module, tmp / MODEL_FILES[format], num_fields)
            manifest["exporter"] = "torch.jit.trace"
    except MutualCTRError:
        raise
    except Exception as e:  # the exporters (and a user model's forward) raise many kinds
        raise ExportError(f"{run}: cannot export model {manifest['model']} as {format}: {_failure(e)}") from e


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _failure(e: BaseException) -> str:
    """An export failure in one line: its innermost cause (the exporters wrap it) and the line of
    the model's code that raised it (the last frame outside torch, the standard library and this
    module), which names the operation the exporter cannot record."""
    inner, seen = e, 0
    while (inner.__cause__ or inner.__context__) is not None and seen < 20:
        inner, seen = inner.__cause__ or inner.__context__, seen + 1
    text = _ANSI.sub("", str(inner)).strip()
    message = f"{type(inner).__name__}: {(text.splitlines() or [''])[0]}"
    skip = (os.path.dirname(torch.__file__), os.path.dirname(os.__file__), os.path.dirname(__file__))
    frames = [f for f in traceback.extract_tb(inner.__traceback__) if not f.filename.startswith(skip)]
    if not frames:
        return message
    f = frames[-1]
    return f"{message} (at {Path(f.filename).name}:{f.lineno} in {f.name}: {(f.line or '').strip()})"


def _write(real: Path, out, run, format: str, model: nn.Module, store, manifest: dict[str, Any],
           check: bool, tolerance: float) -> tuple[CheckResult | None, list[str]]:
    """Write the export into a temporary directory that then replaces ``real`` (the directory
    :func:`mutualctr.outdir.claimed_dir` holds). ``export.json`` lists every file written with
    its size and sha256 (``files``): what ``--overwrite`` checks before replacing it."""
    spec = encoder_spec(store)
    result = None
    try:
        with atomic_dir(real) as tmp:
            _write_model(tmp, run, format, model, store.feature_map.num_fields, manifest)
            (tmp / ENCODER).write_text(json.dumps(spec, separators=(",", ":")) + "\n")
            if check:
                result = check_export(tmp, manifest, model, store, tolerance=tolerance)
                if not result.passed:
                    raise ExportError(
                        f"{out}: --check failed: max |p_exported - p_eager| {result.max_abs_diff:.3g} "
                        f"> tolerance {tolerance:g} on {result.rows:,} {result.split} rows "
                        f"(AUC {result.exported_auc:.5f} vs {result.eager_auc:.5f}); nothing written")
                manifest["check"] = asdict(result)
            manifest["files"] = outdir.manifest_files(tmp, [p.name for p in tmp.iterdir()])
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=float) + "\n")
            files = sorted(p.name for p in tmp.iterdir())
    except OSError as e:
        raise ExportError(f"{out}: cannot write the export: {e}") from e
    return result, files
