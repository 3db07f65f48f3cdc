"""The models on MovieLens 100k with the shipped ml100k schema (issue 25: genres multi-valued,
history a 20-item sequence, release_year dense): all seven train, a 2-member mutual group runs,
export --check passes and predict on the raw rows equals the store's scores. Small: the first
4,000 rows (time order), one epoch. Skipped without the shared data (only read, never copied)."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest

from mutualctr import api
from mutualctr.data.prepare import prepare
from mutualctr.metrics import sigmoid
from mutualctr.models import MODELS
from mutualctr.training import jobs
from tests.conftest import tiny_config
from tests.data.helpers import SHARED_DATA

ML100K = SHARED_DATA / "movielens" / "ml100k_ctr.csv.gz"
ROWS = 4000
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not ML100K.is_file(), reason=f"{ML100K} is absent")]


@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ml100k_models")
    raw = tmp / "ml_head.csv"
    with gzip.open(ML100K, "rt", newline="") as f, open(raw, "w") as out:
        for i, line in enumerate(f):
            if i > ROWS:
                break
            out.write(line)
    store = prepare("ml100k", [raw], tmp / "st", split="sequential", progress=False).store
    return store, raw, tmp


@pytest.fixture(scope="module")
def runs(ml):
    store, _, tmp = ml
    out = {}
    for name in MODELS:
        out[name] = tmp / f"run_{name}"
        api.train(store.path, out[name], config=tiny_config(name, epochs=1), threads=1)
    return out


def test_all_seven_models_train(ml, runs):
    store = ml[0]
    for name, run in runs.items():
        s = api.evaluate(run, store.path, "test")
        assert s.rows == ROWS // 10 and 0.3 < s.auc < 1.0, (name, s)


def test_predict_on_raw_rows_equals_the_store_scores(ml, runs, tmp_path):
    store, raw, _ = ml
    model, _, _ = jobs.load_run(runs["deepfm"], store)
    X, _ = store.split("test")
    want = sigmoid(jobs.predict_logits(model, X, 0, "cpu"))
    api.predict(runs["deepfm"], raw, tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as f:
        got = np.array([float(r[0]) for r in list(csv.reader(f))[1:]])
    assert len(got) == ROWS
    np.testing.assert_allclose(got[-len(want):], want, rtol=1e-5, atol=1e-6)  # predict writes 6+ digits


def test_mutual_group_of_two(ml, tmp_path):
    store = ml[0]
    res = api.mutual(store.path, tmp_path / "g", models=["deepfm", "dcn"], seeds=[1, 2], alpha=0.5,
                     epochs=1, threads=1)
    assert [m.model for m in res.members] == ["deepfm", "dcn"]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_check(ml, runs, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    from mutualctr.serving.export import export_run

    res = export_run(runs["fibinet"], tmp_path / "ex", format=fmt, check=True)
    assert res.check.passed and res.check.rows == ROWS // 10
