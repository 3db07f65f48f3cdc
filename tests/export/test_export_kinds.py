"""Export of a run on a store with hashed, multi-valued, sequence and dense fields (issue 25):
the extra model inputs, the encoder spec's keys for each kind, and --check in both formats."""

from __future__ import annotations

import json

import pytest

from mutualctr import api
from mutualctr.data.prepare import prepare
from mutualctr.serving.export import export_run
from tests.conftest import tiny_config
from tests.data import kinds_cases as kc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kx")
    schema, raw = kc.write(tmp, kc.rows(300, seed=4))
    store = prepare(schema, [raw], tmp / "st", split="sequential", progress=False).store
    api.train(store.path, tmp / "run", config=tiny_config("fibinet", epochs=1), threads=1)
    return tmp / "run"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_check_passes_with_the_extra_inputs(run, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    res = export_run(run, tmp_path / "ex", format=fmt, check=True)
    assert res.check.passed and res.check.rows == 30
    assert res.check.exported_auc == pytest.approx(res.check.eager_auc, abs=1e-6)
    man = json.loads((tmp_path / "ex" / "export.json").read_text())
    assert [d["name"] for d in man["inputs"]] == ["ids", "bag_genres", "bag_hist", "values", "missing"]
    assert [d["dtype"] for d in man["inputs"]] == ["int64", "int64", "int64", "float32", "bool"]
    assert man["inputs"][1]["shape"] == ["batch", 2] and man["inputs"][3]["shape"] == ["batch", 3]


def test_encoder_spec_describes_each_kind(run, tmp_path):
    export_run(run, tmp_path / "ex", format="torchscript")
    spec = json.loads((tmp_path / "ex" / "encoder.json").read_text())
    by = {f["name"]: f for f in spec["fields"]}
    assert spec["ids"]["pad"] == 0
    assert by["user"]["transform"] == {"name": "xxh64", "buckets": 13, "seed": 0,
                                       "formula": "offset + 2 + xxh64(utf8(text), seed) mod buckets"}
    g, h = by["genres"]["transform"], by["hist"]["transform"]
    assert (g["separator"], g["max_length"], g["keep"], g["pooling"], g["input"]) == ("|", 2, "first", "sum", "bag_genres")
    assert (h["max_length"], h["keep"], h["vocab_from"]) == (3, "last", "item")
    assert by["hist"]["vocab"] == by["item"]["vocab"] and by["hist"]["offset"] == by["item"]["offset"]
    price = by["price"]["transform"]
    assert price["name"] == "dense" and price["transform"] == "standardize" and price["std"] > 0
    assert by["clicks"]["transform"] == {"name": "dense", "transform": "log1p"}


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_reference_encoder_scores_raw_rows_as_predict(run, tmp_path, fmt):
    """examples/serve_export.py (no mutualctr) on the raw rows: the same probabilities as
    mutualctr predict (6 decimals), lists cut and padded, hashes and dense transforms applied."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    import csv

    from tests.export.helpers import serve

    export_run(run, tmp_path / "ex", format=fmt)
    raw = run.parent / "d.csv"
    api.predict(run, raw, tmp_path / "p.csv")
    r = serve(tmp_path / "ex", raw, "--out", tmp_path / "ref.csv")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "p.csv") as f, open(tmp_path / "ref.csv") as g:
        want = [float(x[0]) for x in list(csv.reader(f))[1:]]
        got = [float(x[0]) for x in list(csv.reader(g))[1:]]
    assert len(got) == len(want) == 300
    assert max(abs(a - b) for a, b in zip(got, want)) <= 1.5e-6


def test_reference_encoder_names_a_bad_dense_cell(run, tmp_path):
    from tests.export.helpers import serve

    export_run(run, tmp_path / "ex", format="torchscript")
    lines = (run.parent / "d.csv").read_text().splitlines()
    cells = lines[3].split(",")
    cells[5] = "abc"  # price
    (tmp_path / "bad.csv").write_text("\n".join([lines[0], lines[1], ",".join(cells)]) + "\n")
    r = serve(tmp_path / "ex", tmp_path / "bad.csv", "--out", tmp_path / "o.csv")
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'bad.csv'}:3: column price: 'abc' is not a number"
