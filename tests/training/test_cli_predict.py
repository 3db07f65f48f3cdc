import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from mutualctr.data.store import Store
from mutualctr.errors import DataError
from mutualctr.training import jobs as api
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def run(tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    api.train(tiny_store, out, tiny_config(epochs=2), quiet=True)
    return out


def _raw_file(tmp_path, rows=300):
    from mutualctr.data.synth import generate

    raw = tmp_path / "new_rows.txt"
    generate(rows, raw, seed=9, progress=False)
    return raw


def test_predict_writes_probabilities_next_to_kept_columns(run, tiny_store, tmp_path):
    raw = _raw_file(tmp_path)
    res = api.predict(run, raw, tmp_path / "preds.csv", keep=["label", "C1"])
    with open(tmp_path / "preds.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["label", "C1", "probability"]
    assert len(rows) == 301 and res.rows == 300
    raw_lines = raw.read_text().splitlines()
    assert [r[0] for r in rows[1:]] == [l.split("\t")[0] for l in raw_lines]
    assert [r[1] for r in rows[1:]] == [l.split("\t")[14] for l in raw_lines]
    p = np.array([float(r[2]) for r in rows[1:]])
    assert ((p > 0) & (p < 1)).all()
    # the same rows scored through the store's encoding give the same probabilities
    from mutualctr.data.encode import encode_file
    from mutualctr.training.inference import predict_logits
    import torch

    store = Store.open(tiny_store)
    model, _, _ = api.load_run(run, store)
    enc = encode_file(store, raw)
    want = 1 / (1 + np.exp(-predict_logits(model, enc.X, 128, torch.device("cpu")).astype(np.float64)))
    np.testing.assert_allclose(p, want, atol=1e-6)
    assert 0 <= res.auc <= 1


def test_predict_rejects_rows_with_wrong_columns(run, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1\t2\t3\n")
    with pytest.raises(DataError, match="bad.txt"):
        api.predict(run, bad, tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mutualctr", *map(str, args)], capture_output=True, text=True)


def test_cli_evaluate_json_and_errors(run, tiny_store, tmp_path):
    r = _cli("evaluate", "--run", run, "--data", tiny_store, "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert set(obj) == {"auc", "logloss", "rows", "calibration"}  # no group_by in the store: no gauc
    assert obj["auc"] == pytest.approx(api.evaluate(run, tiny_store).auc)
    r = _cli("evaluate", "--run", tmp_path / "nope", "--data", tiny_store)
    assert r.returncode == 2 and "no such run" in r.stderr
    r = _cli("train", "--data", tmp_path / "nostore", "--model", "deepfm", "--out", tmp_path / "x")
    assert r.returncode == 2 and "nostore" in r.stderr
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: {name: deepfm}\ntrain: {epochs: 1, batchsize: 10}\n")
    r = _cli("train", "--data", tiny_store, "--config", cfg, "--out", tmp_path / "y")
    assert r.returncode == 2 and "batchsize" in r.stderr and "bad.yaml" in r.stderr


def test_cli_mutual_json(run, tiny_store, tmp_path):
    r = _cli("mutual", "--data", tiny_store, "--init", run, run, "--out", tmp_path / "g", "--quiet", "--json",
             "--evals-per-epoch", "1")
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout)
    assert len(g["members"]) == 2 and "relaimp_test" in g["members"][0]
    # the default alpha is auto: one group per alpha of the grid (two identical members: a flat curve)
    assert [p["alpha"] for p in g["alpha_search"]] == [1.0, 10.0, 100.0, 1000.0]
    assert g["settings"]["alpha"] == 1.0 and g["settings"]["alpha_auto"] is True
    r = _cli("ensemble", "--runs", run, run, "--data", tiny_store, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["auc"] == pytest.approx(api.evaluate(run, tiny_store).auc)


def test_cli_evaluate_defaults_to_the_runs_store(run, tiny_store):
    """Like predict and export, evaluate reads the store the run was trained on."""
    a = _cli("evaluate", "--run", run, "--json")
    b = _cli("evaluate", "--run", run, "--data", tiny_store, "--json")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)
    (run / "store.json").rename(run / "store.json.away")  # then the checkpoint names it
    try:
        c = _cli("evaluate", "--run", run, "--json")
    finally:
        (run / "store.json.away").rename(run / "store.json")
    assert c.returncode == 0 and json.loads(c.stdout) == json.loads(b.stdout), c.stderr


@pytest.mark.parametrize("args", [["evaluate"], ["predict", "--input", "x", "--out", "y"],
                                  ["export", "--out", "y"], ["ensemble", "--data", "x", "--runs"]])
def test_a_missing_run_fails_before_torch_is_imported(args, tmp_path):
    argv = ["mutualctr", *args, str(tmp_path / "nope")] if args[0] == "ensemble" else \
        ["mutualctr", args[0], "--run", str(tmp_path / "nope"), *args[1:]]
    code = ("import sys\nfrom mutualctr.cli import main\nsys.argv = %r\ntry:\n    main()\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n" % argv)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["2", "False"], r.stdout + r.stderr
    assert r.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory"
