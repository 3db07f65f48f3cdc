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
from mutualctr.data.fields import HASH_SEED
from mutualctr.data.loader import Batch
from mutualctr.data.schema import CATEGORICAL, NUMERIC, schema_from_dict
from mutualctr.data.store import FIRST, MISSING, OOV, SplitArrays, Store
from mutualctr.data.transform import bucket
from mutualctr.errors import MutualCTRError
from mutualctr.metrics import auc, logloss
from mutualctr.training.inference import predict_logits
from mutualctr.training.jobs import load_run
from mutualctr.training.rundir import model_checkpoint_path

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
    fm = store.feature_map
    schema = schema_from_dict(fm.schema)
    fields = []
    for i, f in enumerate(fm.fields):
        vocab = store.vocab(i).to_pylist()
        if f.spec is not None:  # hashed, list and dense fields (issue 25)
            fields.append(_kind_field(f, vocab, schema))
            continue
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
                "oov": OOV, "missing": MISSING, "first": FIRST, "pad": fm.pad_index},
        "fields": fields,
    }


def _kind_field(f, vocab: list, schema) -> dict[str, Any]:
    """The encoder spec entry of a hashed, multi-valued, sequence or dense field."""
    spec = dict(f.spec)
    if f.kind == "hashed":
        transform: dict[str, Any] = {"name": "xxh64", "buckets": spec["buckets"], "seed": HASH_SEED,
                                     "formula": "offset + 2 + xxh64(utf8(text), seed) mod buckets"}
    elif f.kind == "dense":
        transform = {"name": "dense", **spec}
    else:  # multi-valued / sequence: items split, cut, each a vocabulary id; input bag_<name>
        transform = {"name": "list", "separator": spec["separator"], "max_length": spec["max_length"],
                     "keep": "last" if f.kind == "sequence" else "first", "input": f"bag_{f.name}",
                     "pooling": spec.get("pooling", "mean"), "vocab_from": spec.get("vocab_from"),
                     "empty": "one item: the missing id", "pad": 0}
    return {"name": f.name, "kind": f.kind, "column": f.column, "offset": f.offset,
            "size": f.vocab_size, "min_count": f.min_count, "transform": transform, "vocab": vocab}


# ---- the model ----------------------------------------------------------------------------

class Probability(nn.Module):
    """``ids (B, F)`` int64 -> ``sigmoid(model(ids))`` ``(B,)`` float32: what is exported."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(ids))


class BatchProbability(Probability):
    """The model of a store with list or dense fields: inputs ``ids (B, n_id)`` int64, one
    ``bag_<field> (B, max_length)`` int64 per list field (padded with 0, field order), then
    ``values (B, n_dense)`` float32 and ``missing (B, n_dense)`` bool when it has dense fields
    (:func:`model_inputs`); output ``sigmoid(model(batch))`` ``(B,)``."""

    def __init__(self, model: nn.Module, bags: list[str], dense: bool) -> None:
        super().__init__(model)
        self.bags, self.dense = list(bags), dense

    def forward(self, ids: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        bags = dict(zip(self.bags, rest))
        lengths = {k: (v != 0).sum(dim=1) for k, v in bags.items()}
        values, missing = (rest[len(bags)], rest[len(bags) + 1]) if self.dense else (None, None)
        batch = Batch(ids, bags, lengths, values, missing, ids.new_zeros(ids.shape[0], dtype=torch.float32))
        return torch.sigmoid(self.model(batch))


def model_inputs(fm) -> list[dict[str, Any]]:
    """The exported model's inputs in order: ``{"name", "dtype", "shape"}`` each (see
    :class:`BatchProbability`; a store of one-id fields: ``ids`` alone)."""
    n_id = len(fm.id_fields)
    out = [{"name": INPUT, "dtype": "int64", "shape": ["batch", n_id]}]
    for i in fm.bag_fields:
        f = fm.fields[i]
        out.append({"name": f"bag_{f.name}", "dtype": "int64", "shape": ["batch", f.spec["max_length"]],
                    "field": f.name})
    if fm.dense_fields:
        n = len(fm.dense_fields)
        out += [{"name": "values", "dtype": "float32", "shape": ["batch", n]},
                {"name": "missing", "dtype": "bool", "shape": ["batch", n]}]
    return out


def _examples(inputs: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
    dtypes = {"int64": torch.int64, "float32": torch.float32, "bool": torch.bool}
    out = []
    for d in inputs:
        t = torch.zeros(2, d["shape"][1], dtype=dtypes[d["dtype"]])
        if d["name"].startswith("bag_"):
            t[:, 0] = 1  # one item a row (id 1 exists in every store with list fields)
        out.append(t)
    return tuple(out)


def input_arrays(X, inputs: list[dict[str, Any]], sel) -> dict[str, np.ndarray]:
    """Rows ``sel`` of a split (an id matrix, or a SplitArrays) as the named model inputs."""
    if not isinstance(X, SplitArrays):
        return {INPUT: np.ascontiguousarray(X[sel], dtype=np.int64)}
    out = {INPUT: np.ascontiguousarray(X.X[sel], dtype=np.int64)}
    for d in inputs:
        if "field" in d:
            out[d["name"]] = np.ascontiguousarray(X.bags[d["field"]][sel], dtype=np.int64)
    if X.values is not None:
        out["values"] = np.array(X.values[sel], dtype=np.float32, copy=True)  # writable
        out["missing"] = np.array(X.missing[sel], dtype=np.bool_, copy=True)
    return out


def serving_module(model: nn.Module, fm=None) -> Probability:
    """A CPU, eval-mode, frozen copy of ``model`` wrapped in :class:`Probability`.

    In eval mode with frozen weights every embedding takes the plain ``F.embedding`` path, and
    the layers with a hand-written backward (FM, inner products, bilinear) their forward ops
    without the autograd.Function, which TorchScript's tracer cannot record. ``model`` itself is
    left as it is. ``fm``: the store's feature map; with list or dense fields the module is a
    :class:`BatchProbability`.
    """
    m = copy.deepcopy(model).cpu().eval()
    m.requires_grad_(False)
    if fm is not None and (fm.bag_fields or fm.dense_fields):
        return BatchProbability(m, [fm.fields[i].name for i in fm.bag_fields], bool(fm.dense_fields)).eval()
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


def write_onnx(module: nn.Module, path: Path, num_fields: int,
               inputs: list[dict[str, Any]] | None = None) -> int:
    """``module`` as ONNX at ``path`` (torch.export-based exporter, dynamic batch); the opset.
    ``inputs``: :func:`model_inputs` (default: ``ids (B, num_fields)`` alone)."""
    require_onnx(("onnx", "onnxscript"))
    inputs = inputs or [{"name": INPUT, "dtype": "int64", "shape": ["batch", num_fields]}]
    examples = _examples(inputs)
    batch = torch.export.Dim("batch")
    dynamic = {"ids": {0: batch}} if len(inputs) == 1 else {"ids": {0: batch}, "rest": tuple({0: batch} for _ in inputs[1:])}
    with torch.no_grad(), _quiet():
        program = torch.onnx.export(module, examples, dynamo=True, input_names=[d["name"] for d in inputs],
                                    output_names=[OUTPUT], dynamic_shapes=dynamic, verbose=False)
        program.save(str(path))
    return next((int(o.version) for o in program.model_proto.opset_import if o.domain == ""), 0)


def write_torchscript(module: nn.Module, path: Path, num_fields: int,
                      inputs: list[dict[str, Any]] | None = None) -> None:
    """``module`` traced (``torch.jit.trace``, batch-size independent ops only) at ``path``;
    ``inputs`` as for :func:`write_onnx` (positional, in that order)."""
    inputs = inputs or [{"name": INPUT, "dtype": "int64", "shape": ["batch", num_fields]}]
    with torch.no_grad(), _quiet():
        traced = torch.jit.trace(module, _examples(inputs), check_trace=False)
        traced.save(str(path))


def load_scorer(out: Path, manifest: dict[str, Any]) -> tuple[Callable[[Any], np.ndarray], str]:
    """A function ``ids (n, F) int64 -> probabilities (n,) float32`` over an export's model
    file (or, for a model with several inputs, ``{input name: array}`` ->), and the name of
    what runs it."""
    path = Path(out) / manifest["model_file"]
    names = [d["name"] for d in manifest.get("inputs") or [manifest["input"]]]

    def named(X) -> dict[str, np.ndarray]:
        return X if isinstance(X, dict) else {INPUT: X}

    if manifest["model_format"] == "onnx":
        require_onnx(("onnxruntime",))
        import onnxruntime as ort  # lazy: optional dependency (mutualctr[export])

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return (lambda X: session.run([OUTPUT], named(X))[0]), f"onnxruntime {ort.__version__}"
    with _quiet():
        traced = torch.jit.load(str(path), map_location="cpu")

    def score(X) -> np.ndarray:
        with torch.no_grad():
            return traced(*(torch.from_numpy(named(X)[n]) for n in names)).numpy()

    return score, f"torch.jit (torch {torch.__version__})"


def score_rows(score: Callable[[Any], np.ndarray], X, batch: int = CHECK_BATCH,
               inputs: list[dict[str, Any]] | None = None) -> np.ndarray:
    """Probabilities of every row of ``X`` (an id matrix, or a SplitArrays with ``inputs``)."""
    out = np.empty(len(X), np.float32)
    for s in range(0, len(X), batch):
        arrays = input_arrays(X, inputs or [], slice(s, s + batch))
        out[s:s + batch] = score(arrays if len(arrays) > 1 else arrays[INPUT])
    return out


def check_export(out: Path, manifest: dict[str, Any], model: nn.Module, store,
                 split: str = "test", tolerance: float = TOLERANCE) -> CheckResult:
    """Score ``split`` through the export in ``out`` and through ``model`` (as ``evaluate``)."""
    X, y = store.split(split)
    y = np.asarray(y)
    if len(y) == 0:
        raise ExportError(f"{store.path}: the {split} split has no rows to check the export on")
    logits = predict_logits(model, X, 0, torch.device("cpu"))
    eager = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    score, runtime = load_scorer(out, manifest)
    got = score_rows(score, X, inputs=manifest.get("inputs"))
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

    ``store_path``: the store (default: the one the run was trained on); another store is
    accepted when it has the run's vocabulary (``prepare --vocab-from``) or grew from the run's
    store (``prepare --grow``, any number of days later): then the export takes that store's
    encoder spec and the run's tables grown to it, a value new since the run's store scored with
    its field's OOV row (as the run scores it on its own store). ``check``: score the store's
    test split through the written artefact and fail (ExportError, nothing written) when a probability differs from the eager model's by more
    than ``tolerance``. ``overwrite`` replaces an earlier export, never another directory.
    """
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
        if ck.fingerprint != store.fingerprint:  # checked: of its vocabulary, or grown from its store
            model = load_run(run, store)[0]
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
        "input": {"name": INPUT, "dtype": "int64", "shape": ["batch", len(fm.id_fields)]},
        **({"inputs": model_inputs(fm)} if fm.bag_fields or fm.dense_fields else {}),
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["batch"],
                   "meaning": "click probability, sigmoid of the model's logit"},
        "run": str(Path(run).resolve()),
        "checkpoint": {"step": ck.step, "epoch": ck.epoch, "dev": ck.dev, "init_from": ck.init_from,
                       **({"trained_on": ck.fingerprint} if ck.fingerprint != store.fingerprint else {})},
        "store": {"path": str(Path(store.path).resolve()), "fingerprint": store.fingerprint,
                  "dataset": fm.dataset},
        "num_fields": fm.num_fields,
        "num_features": fm.num_features,
        "versions": {"mutualctr": __version__, "torch": torch.__version__},
    }


def _write_model(tmp: Path, run, format: str, model: nn.Module, num_fields: int,
                 manifest: dict[str, Any], fm=None) -> None:
    module = serving_module(model, fm)
    inputs = manifest.get("inputs")
    try:
        if format == "onnx":
            import onnx  # lazy: optional dependency (mutualctr[export])

            opset = write_onnx(module, tmp / MODEL_FILES[format], num_fields, inputs)
            manifest["onnx_opset"] = opset
            manifest["versions"]["onnx"] = onnx.__version__
            manifest["exporter"] = "torch.onnx.export(dynamo=True)"
        else:
            write_torchscript(module, tmp / MODEL_FILES[format], num_fields, inputs)
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
            _write_model(tmp, run, format, model, store.feature_map.num_fields, manifest, store.feature_map)
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
