"""The example DIN (examples/mutualctr_plugins, outside src/) and DeepFM in one mutual group on
MovieLens 100k (the shipped schema: DIN attends over `history`): interrupted and resumed equal to
the uninterrupted group, and the DIN member exported with --check. Small: the first 4,000 rows,
one epoch of pretraining. Skipped without the shared data (only read, never copied)."""

from __future__ import annotations

import importlib.util
import json

import pytest

import mutualctr as mc
from mutualctr.training import jobs
from mutualctr.training.config import run_config_from_dict, run_config_to_dict
from mutualctr.training.rundir import GroupCheckpoint
from tests.conftest import group, interrupted_at_step, tiny_config
from tests.training.test_realdata_ml100k_models import ML100K, ROWS, ml  # noqa: F401 (the store fixture)
from tests.training.test_user_model_jobs import PLUGINS

DIN = "mutualctr_plugins.din:DIN"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not ML100K.is_file(), reason=f"{ML100K} is absent")]


@pytest.fixture(scope="module", autouse=True)
def example_on_path():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(PLUGINS))
        yield


def din_config(seed: int = 1):
    """tiny_config's loop and optimizer with the DIN (target item_id, sequence history: its defaults)."""
    data = run_config_to_dict(tiny_config("fm", seed=seed, epochs=1))
    data["model"] = {"name": DIN, "embed_dim": 4, "attention_hidden": [8], "hidden": [16]}
    return run_config_from_dict(data)


def test_din_and_deepfm_group_resumes_equal_and_din_exports(ml, tmp_path):
    store = ml[0].path
    init = [tmp_path / "din", tmp_path / "deepfm"]
    din = jobs.train(store, init[0], din_config(seed=3), quiet=True)
    assert din.model == DIN and din.test_auc > 0.55
    jobs.train(store, init[1], tiny_config("deepfm", seed=4, epochs=1), quiet=True)
    settings = group(evals_per_epoch=2)
    full = jobs.mutual(store, tmp_path / "full", init=init, group=settings, quiet=True).to_dict()
    assert [m["model"] for m in full["members"]] == [DIN, "deepfm"]
    with interrupted_at_step(10):  # 13 steps an epoch: after the mid-epoch checkpoint
        jobs.mutual(store, tmp_path / "cut", init=init, group=settings, quiet=True)
    assert GroupCheckpoint.load(tmp_path / "cut" / "checkpoints" / "last.pt").loop.step == 6
    res = jobs.mutual(store, tmp_path / "cut", init=init, group=settings, resume=True, quiet=True).to_dict()
    for a, b in zip(full["members"], res["members"]):
        assert (a["test_auc"], a["test_logloss"], a["start"]) == (b["test_auc"], b["test_logloss"], b["start"])
    assert res["churn"] == full["churn"]
    member = tmp_path / "cut" / "m0-DIN"
    # ONNX where the export extra is installed (8 s of the test's ~25), else TorchScript
    fmt = "onnx" if all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnxscript")) else "torchscript"
    e = mc.export(member, tmp_path / "x", format=fmt, check=True)
    assert e.check.passed and e.check.rows == ROWS // 10
    manifest = json.loads((tmp_path / "x" / "export.json").read_text())
    assert manifest["model"] == DIN and [d["name"] for d in manifest["inputs"]] == [
        "ids", "bag_genres", "bag_history", "values", "missing"]
