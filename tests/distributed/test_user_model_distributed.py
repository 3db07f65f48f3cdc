"""torchrun with a model of one's own (the example DIN, outside src/) on a store with list and dense
fields, 2 gloo workers on CPU: data-parallel training and a DeepFM + DIN group one member per
worker, each equal to the same job in one process (the style of test_distributed.py)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from mutualctr.models.plugins import label
from mutualctr.training import jobs as api
from mutualctr.training.config import run_config_from_dict
from tests.distributed.test_distributed import _assert_runs_match, _cfg, _kinds_store, _spawn, _wait
from tests.training.test_user_model_jobs import PLUGINS

DIN = "mutualctr_plugins.din:DIN"


@pytest.fixture(autouse=True)
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _din_cfg() -> dict:
    """_cfg's loop (both L2 terms on, one thread, an uneven batch) with DIN over the kinds store."""
    d = _cfg("fm", batch_size=101)
    d["model"] = {"name": DIN, "target": "item", "sequence": "hist", "embed_dim": 4, "attention_hidden": [8],
                  "hidden": [16], "init_std": 0.01, "embedding_l2": 1e-3, "net_l2": 1e-4}
    return d


def test_user_model_data_parallel_and_one_member_per_worker_equal_one_process(tmp_path):
    store = _kinds_store(tmp_path)
    cdir = tmp_path / "cfgs"
    cdir.mkdir()
    (cdir / "deepfm.yaml").write_text(yaml.safe_dump(_cfg("deepfm", batch_size=101)))
    (cdir / "DIN.yaml").write_text(yaml.safe_dump(_din_cfg()))  # DIR/<ClassName>.yaml
    group = {"models": ["deepfm", DIN], "seeds": [1, 2], "epochs": 2, "evals_per_epoch": 2,
             "config_dir": str(cdir), "alpha": 1.0}
    jobs = [{"op": "train", "name": "dp", "store": str(store), "out": str(tmp_path / "dp"), "config": _din_cfg()},
            {"op": "mutual", "name": "g", "store": str(store), "out": str(tmp_path / "g"), "kwargs": group}]
    for rc, err in _wait(_spawn({"jobs": jobs, "result": str(tmp_path / "result")}, tmp_path, paths=(PLUGINS,))):
        assert rc == 0, err[-3000:]
    r0, r1 = (json.loads((tmp_path / f"result.{r}").read_text()) for r in range(2))

    single = api.train(store, tmp_path / "s", run_config_from_dict(_din_cfg()), quiet=True).to_dict()
    assert r0["dp"]["model"] == DIN and r0["dp"]["test_auc"] == r1["dp"]["test_auc"]
    _assert_runs_match(tmp_path / "s", tmp_path / "dp", single, r0["dp"], weights_atol=1e-4)

    one = api.mutual_from_flags(store, tmp_path / "sg", quiet=True, **{**group, "config_dir": cdir}).to_dict()
    assert [m["model"] for m in r0["g"]["members"]] == ["deepfm", DIN]
    assert json.loads((tmp_path / "g" / "group.json").read_text())["settings"]["workers"] == 2
    for i, (s, m) in enumerate(zip(one["members"], r0["g"]["members"])):
        name = f"m{i}-{label(s['model'])}"  # m1-DIN
        _assert_runs_match(tmp_path / "sg" / name, tmp_path / "g" / name, s, m, weights_atol=1e-5)
