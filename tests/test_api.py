"""The Python front door: ``import mutualctr as mc`` reaches every documented function, results
are typed and round-trip to exactly the run files' JSON, and the quickstart example runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mutualctr as mc
from mutualctr.results import EnsembleResult, GroupResult, RunResult
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves_lazily():
    code = ("import sys, mutualctr as mc; assert 'torch' not in sys.modules; "
            "names = [n for n in mc.__all__ if n != '__version__']; [getattr(mc, n) for n in names]; "
            "print(len(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) >= 25
    with pytest.raises(AttributeError):
        mc.no_such_thing  # noqa: B018


@pytest.fixture(scope="module")
def two_runs(tiny_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    cfg = tiny_config(epochs=1)
    return [mc.train(tiny_store, root / f"r{s}", config=cfg, seed=s) for s in (1, 2)]


def test_train_returns_its_summary_typed(two_runs):
    r = two_runs[0]
    assert isinstance(r, RunResult) and r.seed == 1 and r.model == "deepfm"
    on_disk = json.loads((Path(r.run_dir) / "summary.json").read_text())
    assert r.to_dict() == on_disk and RunResult.from_dict(on_disk) == r


def test_mutual_ensemble_evaluate_predict_load_run(two_runs, tiny_store, tmp_path):
    g = mc.mutual(tiny_store, tmp_path / "g", init=[r.run_dir for r in two_runs], alpha=1.0, evals_per_epoch=2)
    assert isinstance(g, GroupResult) and g.settings.alpha == 1.0 and g.settings.evals_per_epoch == 2
    on_disk = json.loads((tmp_path / "g" / "group.json").read_text())
    assert g.to_dict() == on_disk and GroupResult.from_dict(on_disk) == g
    assert g.mean.test_auc == pytest.approx(np.mean([m.test_auc for m in g.members]))
    assert g.churn.before is not None and g.churn.after.mean_abs_diff >= 0

    e = mc.ensemble([m.run_dir for m in g.members], tiny_store)
    assert isinstance(e, EnsembleResult) and len(e.members) == 2 and e.split == "test"
    assert EnsembleResult.from_dict(e.to_dict()) == e

    s = mc.evaluate(g.members[0].run_dir, tiny_store)
    assert s.auc == pytest.approx(g.members[0].test_auc, abs=1e-12)
    loaded = mc.load_run(g.members[0].run_dir, tiny_store)
    assert not loaded.model.training and loaded.config.model_name == "deepfm"
    assert loaded.checkpoint.init_from == str(Path(two_runs[0].run_dir).resolve())
    from mutualctr.data.store import Store

    X, _ = Store.open(tiny_store).split("test")
    with torch.no_grad():
        z = loaded.model(torch.from_numpy(np.asarray(X[:64], dtype=np.int64)))
    assert z.shape == (64,)

    raw = tmp_path / "rows.txt"
    mc.synth(200, raw, seed=3)
    p = mc.predict(g.members[0].run_dir, raw, tmp_path / "p.csv", keep=["label"])
    assert p.rows == 200 and (tmp_path / "p.csv").is_file() and p.auc is not None


def test_auto_alpha_result_round_trips(two_runs, tiny_store, tmp_path):
    g = mc.mutual(tiny_store, tmp_path / "g", init=[r.run_dir for r in two_runs],
                  group=mc.MutualConfig(alpha_grid=[1.0, 100.0]))
    assert g.settings.alpha_auto is True and {1.0, 100.0} <= {p.alpha for p in g.alpha_search}
    assert GroupResult.from_dict(json.loads((tmp_path / "g" / "group.json").read_text())) == g


def test_errors_are_mutualctr_errors_with_one_line(tiny_store, tmp_path):
    with pytest.raises(mc.MutualCTRError, match="train.epochs must be >= 1"):
        mc.train(tiny_store, tmp_path / "r", model="lr", epochs=0)
    with pytest.raises(mc.MutualCTRError, match="give --model NAME or --config FILE"):
        mc.train(tiny_store, tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_quickstart_example_runs(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "chosen alpha" in p.stdout and "wrote 1,000 probabilities" in p.stdout
    assert (tmp_path / "preds.csv").read_text().splitlines()[0] == "label,probability"


def test_prepare_returns_a_typed_summary_that_agrees_with_the_store(tmp_path):
    raw = tmp_path / "rows.txt"
    mc.synth(3000, raw, seed=5)
    first = mc.prepare("criteo", raw, tmp_path / "store")
    s = first.summary
    assert isinstance(first, mc.PrepareResult) and isinstance(s, mc.PrepareSummary) and not first.reused
    fm = first.store.feature_map
    assert sum(s.rows.values()) == 3000 and s.rows == {k: len(first.store.split(k)[1]) for k in s.rows}
    for name, (_, y) in ((k, first.store.split(k)) for k in s.rows):
        assert s.click_rate[name] == pytest.approx(float(np.mean(y)))
    assert s.num_features == fm.num_features == sum(s.vocab_size.values())
    assert s.fingerprint == fm.fingerprint and s.rejected == 0 and s.seconds > 0
    again = mc.prepare("criteo", raw, tmp_path / "store")
    assert again.reused and again.summary.seconds is None and again.summary.rows == s.rows
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d and d["rows"] == s.rows and "seconds" not in again.summary.to_dict()
