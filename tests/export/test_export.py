"""mutualctr export: exported models score as the eager ones, and raw rows encoded with the
encoder spec by examples/serve_export.py (run without mutualctr) give predict's ids and scores."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from mutualctr.data.encode import encode_file
from mutualctr.data.prepare import prepare
from mutualctr.data.store import Store
from mutualctr.data.transform import bucket
from mutualctr.errors import CheckpointError
from mutualctr.serving import ExportError, export_run, log_squared_thresholds, read_manifest
from mutualctr.training import jobs as api
from mutualctr.training.inference import predict_logits
from tests.conftest import group, tiny_config
from tests.export.helpers import EXAMPLE
from tests.export.helpers import serve as _serve

ONNX_MISSING = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(bool(ONNX_MISSING), reason=(
    f"{', '.join(ONNX_MISSING)} not installed (pip install 'mutualctr[export]' or -r requirements.lock)"))
MODELS = ["lr", "fm", "deepfm", "dcn", "dcnv2", "pnn", "fibinet"]
CPU = torch.device("cpu")


def _example():
    spec = importlib.util.spec_from_file_location("serve_export", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _probs(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def runs(tiny_store, tmp_path_factory):
    """One tiny run per model (DeepFM with BatchNorm and dropout: eval mode must be exported)
    and a member of a mutual finetune of the DeepFM and DCN runs. Larger init and lr than the
    defaults: after one epoch the probabilities spread (std 0.01-0.06), so that a part of a model
    left out of the export would show far above the 1e-5 tolerance."""
    root = tmp_path_factory.mktemp("export_runs")
    out = {}
    for name in MODELS:
        kw = {"mlp": {"hidden": [16], "batch_norm": True, "dropout": 0.2}} if name == "deepfm" else {}
        api.train(tiny_store, root / name, tiny_config(name, epochs=1, lr=1e-2, init_std=0.05, **kw),
                  quiet=True)
        out[name] = root / name
    api.mutual(tiny_store, root / "group", init=[out["deepfm"], out["dcn"]],
               group=group(evals_per_epoch=1, lr=1e-3), quiet=True)
    out["mutual"] = root / "group" / "m0-deepfm"
    return out


def _score_artefact(out: Path, X: np.ndarray) -> np.ndarray:
    """Probabilities of an export's model file, loaded here with onnxruntime / torch.jit."""
    m = json.loads((out / "export.json").read_text())
    path = out / m["model_file"]
    if m["model_format"] == "onnx":
        import onnxruntime as ort

        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (inp,), (outp,) = s.get_inputs(), s.get_outputs()
        assert (inp.name, inp.type, outp.name, outp.type) == ("ids", "tensor(int64)", "probability", "tensor(float)")
        assert isinstance(inp.shape[0], str) and inp.shape[1] == X.shape[1]  # dynamic batch
        return lambda ids: s.run(None, {"ids": ids})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ts = torch.jit.load(str(path))
    return lambda ids: ts(torch.from_numpy(ids)).detach().numpy()


CASES = [pytest.param(name, fmt, marks=[needs_onnx] if fmt == "onnx" else [], id=f"{name}-{fmt}")
         for name in MODELS + ["mutual"] for fmt in ("onnx", "torchscript")]


@pytest.mark.parametrize("name,fmt", CASES)
def test_exported_model_scores_as_the_eager_model(runs, tiny_store, tmp_path, name, fmt):
    res = export_run(runs[name], tmp_path / "e", format=fmt, check=True)
    out = tmp_path / "e"
    assert res.files == sorted(["encoder.json", "export.json", "model.onnx" if fmt == "onnx" else "model.pt"])
    store = Store.open(tiny_store)
    model, cfg, _ = api.load_run(runs[name], store)
    X, y = store.split("test")
    X = np.asarray(X, dtype=np.int64)
    eager = _probs(predict_logits(model, X, 0, CPU))
    assert eager.std() > 3e-3  # the scores differ from row to row, or equality would say little
    score = _score_artefact(out, X)
    got = score(X)
    assert got.shape == (len(X),) and got.dtype == np.float32
    diff = float(np.abs(got - eager).max())
    assert diff <= 1e-5
    # batch size is free: single rows and an odd batch give the same numbers (up to float32
    # rounding: BLAS takes other paths for other batch sizes)
    for part in (np.concatenate([score(X[i:i + 1]) for i in range(3)]), score(X[:7])):
        np.testing.assert_allclose(part, got[:len(part)], atol=1e-6)
        assert np.abs(part - eager[:len(part)]).max() <= 1e-5
    # --check measured the same thing, with evaluate's AUC as the eager one
    c = res.check
    assert c.rows == len(X) and c.max_abs_diff == pytest.approx(diff, abs=1e-9)
    assert c.eager_auc == api.evaluate(runs[name], tiny_store).auc
    assert abs(c.exported_auc - c.eager_auc) < 1e-3
    m = read_manifest(out)
    assert m["model"] == cfg.model_name and m["input"]["shape"] == ["batch", store.feature_map.num_fields]
    assert m["check"]["max_abs_diff"] == c.max_abs_diff and m["store"]["fingerprint"] == store.fingerprint


# ---- the encoder spec and the reference encoder -----------------------------------------

def test_threshold_tables_reproduce_the_store_buckets():
    ex = _example()
    rng = np.random.default_rng(0)
    T = log_squared_thresholds(5000, "integer")
    assert len(T) == int(bucket(pa.array([2**63 - 1])).to_numpy()[0])  # capped at int64's bucket
    ints = np.unique(np.concatenate([
        np.arange(-50, 20000), np.array(T) - 1, np.array(T), np.minimum(np.array(T) + 1, 2**63 - 1),
        rng.integers(3, 2**63 - 1, 20000, dtype=np.int64), 10 ** rng.uniform(0, 18.9, 20000).astype(np.int64)]))
    want = bucket(pa.array(ints)).to_numpy()
    t = {"values": "integer", "thresholds": T}
    assert [ex.log_squared_token(str(v), t) for v in ints.tolist()] == want.tolist()

    T = log_squared_thresholds(600, "number")
    Tf = np.array(T)
    floats = np.concatenate([rng.uniform(-5, 3, 5000), 10 ** rng.uniform(0.3, math.log10(T[-1]), 20000),
                             Tf, np.nextafter(Tf, 0), np.nextafter(Tf, np.inf), [2.0, np.nextafter(2.0, 3)]])
    floats = floats[floats < T[-1]]
    want = bucket(pa.array(floats)).to_numpy()
    t = {"values": "number", "thresholds": T}
    assert [ex.log_squared_token(repr(x), t) for x in floats.tolist()] == want.tolist()


def _edge_rows(spec: dict, base: list[str]) -> list[list[str]]:
    """Criteo rows with missing cells, unseen values and numeric bucket boundaries."""
    T = spec["fields"][0]["transform"]["thresholds"]
    edges = ["-3", "0", "1", "2", "3", "4", "-0", "007", "9223372036854775807", "-9223372036854775808",
             str(T[-1]), str(T[-1] - 1), str(T[-1] * 1000)] + [str(v) for t in T[:6] for v in (t - 1, t)]
    rows = [[base[0]] + [""] * 39]  # everything missing
    for s in range(0, len(edges), 13):
        nums = (edges[s:s + 13] + edges[:13])[:13]
        rows.append(["1"] + nums + [f"unseen{s}_{c}" for c in range(26)])
    mixed = list(base)
    mixed[14], mixed[20], mixed[3] = "", "never-seen", ""
    return rows + [mixed]


@needs_onnx
def test_reference_encoder_gives_predict_ids_and_probabilities(runs, tiny_store, tmp_path):
    from mutualctr.data.synth import generate

    out = tmp_path / "e"
    export_run(runs["deepfm"], out)
    spec = json.loads((out / "encoder.json").read_text())
    raw = tmp_path / "new.txt"
    generate(300, raw, seed=9, progress=False)
    lines = [ln.split("\t") for ln in raw.read_text().splitlines()]
    rows = lines + _edge_rows(spec, lines[0])
    raw.write_text("".join("\t".join(r) + "\n" for r in rows) + "\n\n")  # trailing blank lines
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text("".join("\t".join(r[1:]) + "\n" for r in rows))
    store = Store.open(tiny_store)
    for path, keep in ((raw, ["label", "C1"]), (unlabeled, ["C1"])):
        r = _serve(out, path, "--out", tmp_path / "ref.csv", "--ids-out", tmp_path / "ids.npy",
                   *sum((["--keep", k] for k in keep), []))
        assert r.returncode == 0, r.stderr
        ids = np.load(tmp_path / "ids.npy")
        want = encode_file(store, path).X
        assert ids.dtype == np.int64 and ids.shape == want.shape == (len(rows), 39)
        assert np.array_equal(ids, want)  # bit for bit, OOV and missing included
        local = ids - np.array([f["offset"] for f in spec["fields"]])
        assert (local == 0).any() and (local == 1).any()  # the file does hold OOV and missing cells
        api.predict(runs["deepfm"], path, tmp_path / "pred.csv", keep=keep)
        ref, pred = _read_csv(tmp_path / "ref.csv"), _read_csv(tmp_path / "pred.csv")
        assert [r[:-1] for r in ref] == [r[:-1] for r in pred] and ref[0] == pred[0]
        p_ref = np.array([float(r[-1]) for r in ref[1:]])
        p_pred = np.array([float(r[-1]) for r in pred[1:]])
        assert np.abs(p_ref - p_pred).max() <= 1e-6 + 1e-12  # 6 decimals of float32 vs float64 p


def test_reference_encoder_rejects_what_predict_rejects(runs, tiny_store, tmp_path):
    from mutualctr.errors import DataError

    out = tmp_path / "e"
    export_run(runs["fm"], out, format="torchscript")
    good = "\t".join(["0"] + ["1"] * 13 + ["a"] * 26)
    cases = {"int": good.replace("\t1\t", "\tabc\t", 1), "label": "7" + good[1:], "width": "0\t1\t2"}
    for kind, bad in cases.items():
        path = tmp_path / f"{kind}.txt"
        path.write_text(f"{good}\n{good}\n{bad}\n")
        with pytest.raises(DataError) as e:
            encode_file(Store.open(tiny_store), path)
        r = _serve(out, path, "--ids-out", tmp_path / "x.npy")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
        where = str(e.value).split(": ")[0] + ": " + str(e.value).split(": ")[1]  # file:3: column X
        assert where in r.stderr, (kind, r.stderr, str(e.value))
        assert not (tmp_path / "x.npy").exists()


def test_reference_encoder_with_torchscript_export(runs, tiny_store, tmp_path):
    from mutualctr.data.synth import generate

    out = tmp_path / "e"
    export_run(runs["fm"], out, format="torchscript")
    raw = tmp_path / "new.txt.gz"
    generate(200, raw, seed=5, progress=False)
    r = _serve(out, raw, "--out", tmp_path / "ref.csv")
    assert r.returncode == 0, r.stderr
    api.predict(runs["fm"], raw, tmp_path / "pred.csv")
    ref, pred = _read_csv(tmp_path / "ref.csv"), _read_csv(tmp_path / "pred.csv")
    assert len(ref) == len(pred) == 201
    assert max(abs(float(a[0]) - float(b[0])) for a, b in zip(ref[1:], pred[1:])) <= 1e-6 + 1e-12


SHOP_SCHEMA = """\
name: shop
format: csv
separator: ","
header: true
quoting: true
label: clicked
label_map: {-1: 0, 1: 1}
categorical: [user, item]
numeric: [price]
numeric_values: number
hour: [ts]
drop: [row_id]
"""


def _shop_file(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    hours = ["14102100", "14102523", "14102609", "14113112", "15022906", "14100100"]
    prices = ["2", "2.5", "+4.5", ".5", "1e3", "-2.7", "2.0000001", "3", "0", "12.25", "1e30", "7."]
    lines = ["row_id,clicked,user,item,price,ts"]
    for i in range(n):
        item = ["", '""', f'"i,{int(rng.integers(0, 6))}"', f"i{int(rng.integers(0, 9))}",
                '"say ""hi"""'][i % 5]
        price = "" if i % 13 == 0 else prices[int(rng.integers(0, len(prices)))]
        if i % 7 == 0:
            price = f"{rng.gamma(2, 30):.3f}"
        lines.append(f"r{i},{rng.choice(['-1', '1'])},u{int(rng.integers(0, 25 + seed))},{item},{price},"
                     f"{'' if i % 17 == 0 else hours[i % len(hours)]}")
    path.write_text("\n".join(lines) + "\n")
    return path


@needs_onnx
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # 1e30 in bucket()
def test_reference_encoder_on_a_csv_schema_with_quotes_decimals_and_hours(tmp_path):
    (tmp_path / "shop.yaml").write_text(SHOP_SCHEMA)
    train = _shop_file(tmp_path / "shop.csv", 600, seed=0)
    store = prepare(tmp_path / "shop.yaml", [train], tmp_path / "store", min_count=1, progress=False).store
    api.train(store.path, tmp_path / "run", tiny_config("lr", epochs=1), quiet=True)
    out = tmp_path / "e"
    res = export_run(tmp_path / "run", out, check=True)
    assert res.check.max_abs_diff <= 1e-5
    spec = json.loads((out / "encoder.json").read_text())
    assert [f["name"] for f in spec["fields"]] == ["user", "item", "price", "ts.hour_of_day", "ts.weekday",
                                                   "ts.weekend"]
    assert spec["fields"][2]["transform"]["values"] == "number"
    new = _shop_file(tmp_path / "new.csv", 300, seed=3)  # unseen users
    r = _serve(out, new, "--out", tmp_path / "ref.csv", "--ids-out", tmp_path / "ids.npy", "--keep", "row_id")
    assert r.returncode == 0, r.stderr
    want = encode_file(store, new).X
    assert np.array_equal(np.load(tmp_path / "ids.npy"), want)
    api.predict(tmp_path / "run", new, tmp_path / "pred.csv", keep=["row_id"])
    ref, pred = _read_csv(tmp_path / "ref.csv"), _read_csv(tmp_path / "pred.csv")
    assert [r[0] for r in ref] == [r[0] for r in pred]
    assert max(abs(float(a[1]) - float(b[1])) for a, b in zip(ref[1:], pred[1:])) <= 1e-6 + 1e-12


# ---- errors: one line, nothing half-written ---------------------------------------------

def test_export_refuses_foreign_directories_and_keeps_exports_unless_overwrite(runs, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ExportError, match="not a mutualctr export"):
            export_run(runs["lr"], foreign, format="torchscript", overwrite=overwrite)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    out = tmp_path / "e"
    export_run(runs["lr"], out, format="torchscript")
    before = (out / "export.json").read_text()
    with pytest.raises(ExportError, match="--overwrite"):
        export_run(runs["fm"], out, format="torchscript")
    assert (out / "export.json").read_text() == before
    export_run(runs["fm"], out, format="torchscript", overwrite=True)
    assert read_manifest(out)["model"] == "fm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "foreign"]  # no temporary left


def test_failed_check_and_wrong_store_write_nothing(runs, other_store, tmp_path):
    # float32 probabilities cannot all equal float64 ones to 1e-12: the check must fail
    with pytest.raises(ExportError, match="--check failed"):
        export_run(runs["deepfm"], tmp_path / "e", format="torchscript", check=True, tolerance=1e-12)
    with pytest.raises(CheckpointError, match="fingerprint"):
        export_run(runs["deepfm"], tmp_path / "e", format="torchscript", store_path=other_store)
    assert list(tmp_path.iterdir()) == []


def _main(capsys, *args) -> tuple[int, str, str]:
    """``mutualctr ARGS`` in this process, through main() (which turns errors into exit 2)."""
    from mutualctr.cli import main

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["mutualctr", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_missing_export_extra_is_one_clear_line(runs, tmp_path, capsys):
    with pytest.MonkeyPatch.context() as mp:  # a None entry: `import onnxscript` fails
        mp.setitem(sys.modules, "onnxscript", None)
        with pytest.raises(ExportError, match=r"pip install 'mutualctr\[export\]'"):
            export_run(runs["lr"], tmp_path / "e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "onnxruntime", None)
        code, out, err = _main(capsys, "export", "--run", runs["lr"], "--out", tmp_path / "e", "--check")
    assert code == 2 and "missing: onnxruntime" in err and "mutualctr[export]" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "e").exists()


def test_cli_export_check_json(runs, tiny_store, tmp_path, capsys):
    code, out, err = _main(capsys, "export", "--run", runs["pnn"], "--out", tmp_path / "e", "--format",
                           "torchscript", "--check", "--data", tiny_store, "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["model"] == "pnn" and obj["check"]["max_abs_diff"] <= 1e-5
    assert obj["check"]["eager_auc"] == api.evaluate(runs["pnn"], tiny_store).auc
    code, out, err = _main(capsys, "export", "--run", runs["pnn"], "--out", tmp_path / "f", "--format", "tflite")
    assert code == 2 and "tflite" in err and not (tmp_path / "f").exists()
