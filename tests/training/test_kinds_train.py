"""Training on a store with hashed, multi-valued, sequence and dense fields (issue 25): train,
resume, evaluate, predict on raw rows, a mutual group (loop and vectorised), distillation and
ensemble all read the store's batches."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from mutualctr import api
from mutualctr.data.prepare import prepare
from mutualctr.metrics import sigmoid
from mutualctr.training import jobs
from tests.conftest import interrupted_at_step, tiny_config
from tests.data import kinds_cases as kc

N = 400  # sequential split: the last 40 rows are the test split


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kinds")
    schema, raw = kc.write(tmp, kc.rows(N, seed=5))
    store = prepare(schema, [raw], tmp / "st", split="sequential", progress=False).store
    run = tmp / "run"
    api.train(store.path, run, config=tiny_config("deepfm", epochs=2), threads=1)
    return store, raw, run


def test_train_evaluate_and_predict_on_raw_rows_equal_the_store(kinds, tmp_path):
    store, raw, run = kinds
    ev = api.evaluate(run, store.path, "test")
    assert ev.rows == 40 and 0.0 <= ev.auc <= 1.0
    model, _, ck = jobs.load_run(run, store)
    assert ck.layout["roles"] == ["id", "id", "bag", "bag", "dense", "dense", "dense"]
    X, y = store.split("test")
    want = sigmoid(jobs.predict_logits(model, X, 0, "cpu"))
    api.predict(run, raw, tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as f:
        got = np.array([float(r[0]) for r in list(csv.reader(f))[1:]])
    assert len(got) == N
    np.testing.assert_allclose(got[-40:], want, rtol=1e-5, atol=1e-7)


def test_resume_after_interruption_equals_uninterrupted(kinds, tmp_path):
    store = kinds[0]
    cfg = tiny_config("dcn", epochs=3, evals_per_epoch=2)
    full = api.train(store.path, tmp_path / "full", config=cfg, threads=1).to_dict()
    with interrupted_at_step(4):  # mid-epoch 2 (2 steps an epoch), after a checkpoint
        api.train(store.path, tmp_path / "cut", config=cfg, threads=1)
    resumed = api.train(store.path, tmp_path / "cut", config=cfg, resume=True, threads=1).to_dict()
    for k in ("dev_auc", "dev_logloss", "test_auc", "test_logloss", "best_step", "steps"):
        assert resumed[k] == full[k], k


@pytest.mark.parametrize("vectorize", [False, True])
def test_mutual_group_and_ensemble(kinds, tmp_path, vectorize):
    store, _, run = kinds
    res = api.mutual(store.path, tmp_path / "g", models=["deepfm", "deepfm"], seeds=[1, 2], alpha=0.5,
                     epochs=1, vectorize=vectorize, threads=1)
    assert len(res.members) == 2 and all(0.0 <= m.test_auc <= 1.0 for m in res.members)
    ens = api.ensemble([m.run_dir for m in res.members], store.path)
    assert [m.auc for m in ens.members] == pytest.approx([m.test_auc for m in res.members])


def test_distill_from_a_trained_run(kinds, tmp_path):
    store, _, run = kinds
    res = api.distill(store.path, tmp_path / "d", teacher=run, student="lr", epochs=1, threads=1)
    assert len(res.members) == 1


def test_a_run_scores_a_store_prepared_with_vocab_from_its_store(kinds, tmp_path):
    """New rows encoded with the run's store (prepare --vocab-from) are scored by the run as
    predict scores the same raw rows."""
    store, _, run = kinds
    _, raw = kc.write(tmp_path, kc.rows(200, seed=11), name="new.csv")
    child = prepare(tmp_path / "s.yaml", [raw], tmp_path / "child", split="sequential", progress=False,
                    vocab_from=store.path).store
    assert child.vocab_fingerprint == store.vocab_fingerprint
    ev = api.evaluate(run, child.path, "test")
    model, _, _ = jobs.load_run(run, child)
    api.predict(run, raw, tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as f:
        got = np.array([float(r[0]) for r in list(csv.reader(f))[1:]])
    X, _ = child.split("test")
    np.testing.assert_allclose(got[-len(X):], sigmoid(jobs.predict_logits(model, X, 0, "cpu")), rtol=1e-5, atol=1e-7)
    assert ev.rows == 20
