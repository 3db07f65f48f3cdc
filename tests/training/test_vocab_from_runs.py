"""Runs trained on a store evaluate and finetune on a store prepared --vocab-from it; any other
vocabulary is refused, and resuming stays bound to the store itself."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mutualctr.data.prepare import prepare
from mutualctr.data.store import Store
from mutualctr.errors import CheckpointError
from mutualctr.training import jobs as api
from mutualctr.training.inference import predict_logits
from mutualctr.training.rundir import ModelCheckpoint
from tests.conftest import group, tiny_config


@pytest.fixture(scope="module")
def family(tiny_store, tmp_path_factory):
    """Two runs on tiny_store; new rows encoded with its vocabulary (the child) and on their own."""
    from mutualctr.data.synth import generate

    root = tmp_path_factory.mktemp("vocab_from")
    # rows 6000.. of the generator that made tiny_store's 6,000 rows: the same hidden model, new rows
    generate(9000, root / "all.txt", seed=0, progress=False)
    raw = root / "day2.txt"
    raw.write_text("".join((root / "all.txt").read_text().splitlines(keepends=True)[6000:]))
    child = prepare("criteo", [raw], root / "child", vocab_from=tiny_store, progress=False).store
    own = prepare("criteo", [raw], root / "own", min_count=2, progress=False).store
    runs = []
    for i in (1, 2):
        runs.append(root / f"r{i}")
        api.train(tiny_store, runs[-1], tiny_config(seed=i, epochs=1), quiet=True).to_dict()
    return root, Store.open(tiny_store), child, own, runs


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mutualctr", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def _auc_by_hand(run, store: Store, split: str) -> float:
    model, _, _ = api.load_run(run)  # no store check: the weights as they are
    X, y = store.split(split)
    return roc_auc_score(np.asarray(y), predict_logits(model, np.asarray(X), 512, torch.device("cpu")))


def test_the_checkpoint_records_the_vocab_fingerprint(family):
    _, parent, child, _, runs = family
    ck = ModelCheckpoint.load(runs[0] / "checkpoints" / "best.pt")
    assert ck.fingerprint == parent.fingerprint != child.fingerprint
    assert ck.vocab_fingerprint == parent.vocab_fingerprint == child.vocab_fingerprint


def test_a_run_from_the_parent_evaluates_on_the_child(family):
    _, _, child, own, runs = family
    r = _cli("evaluate", "--run", runs[0], "--data", child.path, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["rows"] == child.rows("test")
    assert got["auc"] == pytest.approx(_auc_by_hand(runs[0], child, "test"), abs=1e-6)
    # the parent's ids mean the same on the child: the model still ranks the new rows (the child's
    # 2,400 train rows; 0.59 vs 0.61 on the parent's test split when written), unlike the same rows
    # encoded with a vocabulary of their own (0.48), where each id names another value
    on_child = _auc_by_hand(runs[0], child, "train")
    assert on_child > 0.55 and on_child > _auc_by_hand(runs[0], own, "train") + 0.05


def test_mutual_finetunes_runs_from_the_parent_on_the_child(family, tmp_path):
    _, parent, child, _, runs = family
    out = tmp_path / "g"
    r = _cli("mutual", "--init", *runs, "--data", child.path, "--alpha", "1", "--out", out, "--quiet",
             "--json", "--evals-per-epoch", "1")
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout)
    assert len(g["members"]) == 2
    # each member started from its run's weights, scored on the child's dev split
    start = json.loads((out / "start.json").read_text())
    for s, run in zip(start, runs):
        assert s["dev_auc"] == pytest.approx(_auc_by_hand(run, child, "dev"), abs=1e-6)
        assert s["test_auc"] == pytest.approx(_auc_by_hand(run, child, "test"), abs=1e-6)
    for d in sorted(out.glob("m*-*")):
        ck = ModelCheckpoint.load(d / "checkpoints" / "best.pt")
        assert ck.fingerprint == child.fingerprint and ck.vocab_fingerprint == child.vocab_fingerprint
        assert ck.init_from in {str(run.resolve()) for run in runs}
        # and the reverse: a run finetuned on the child evaluates on the parent
        assert api.evaluate(d, parent.path).to_dict()["auc"] == pytest.approx(_auc_by_hand(d, parent, "test"), abs=1e-6)


def test_another_vocabulary_is_refused(family, tmp_path, other_store):
    _, _, _, own, runs = family
    assert own.vocab_fingerprint != ModelCheckpoint.load(runs[0] / "checkpoints" / "best.pt").vocab_fingerprint
    for store in (own, Store.open(other_store)):
        with pytest.raises(CheckpointError, match=r"trained on a store with fingerprint .*another feature map"):
            api.evaluate(runs[0], store.path).to_dict()
        with pytest.raises(CheckpointError, match="another feature map"):
            api.mutual(store.path, tmp_path / "g", init=runs, group=group(), quiet=True).to_dict()
    assert not (tmp_path / "g" / "group.json").exists()
    r = _cli("evaluate", "--run", runs[0], "--data", own.path)
    assert r.returncode == 2 and "another feature map" in r.stderr and r.stderr.strip().count("\n") == 0


def test_resume_stays_bound_to_the_store_itself(family, tmp_path):
    import shutil

    _, _, child, _, runs = family
    run = tmp_path / "r1"
    shutil.copytree(runs[0], run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match="another feature map"):
        api.train(child.path, run, tiny_config(seed=1, epochs=1), resume=True, quiet=True).to_dict()
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_a_checkpoint_without_a_vocab_fingerprint_loads_and_stays_strict(family, tmp_path):
    _, parent, child, _, runs = family
    payload = torch.load(runs[0] / "checkpoints" / "best.pt", weights_only=True)
    del payload["vocab_fingerprint"]  # as written before it was recorded
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    assert ModelCheckpoint.load(old).vocab_fingerprint is None
    assert api.evaluate(old, parent.path).to_dict()["auc"] == pytest.approx(api.evaluate(runs[0], parent.path).to_dict()["auc"])
    with pytest.raises(CheckpointError, match="another feature map"):
        api.evaluate(old, child.path).to_dict()
