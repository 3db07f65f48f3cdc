"""Calibration, grouped AUC and version churn in the commands (issue 27): ``evaluate --json``,
``churn``, group.json; the schema's ``group_by`` (strict)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import mutualctr as mc
from mutualctr.cli import app
from mutualctr.config import ConfigError
from mutualctr.data.schema import CRITEO_CAT, CRITEO_INT, schema_from_dict
from mutualctr.data.store import Store
from mutualctr.metrics import calibration, gauc, sigmoid, version_churn
from mutualctr.results import Scores, VersionChurn
from mutualctr.training.inference import predict_logits
from tests.conftest import tiny_config

CRITEO_COLS = ["label", *CRITEO_INT, *CRITEO_CAT]


def _criteo(**kw):
    return schema_from_dict({"format": "tsv", "header": False, "quoting": False, "columns": CRITEO_COLS,
                             "numeric": CRITEO_INT, "categorical": CRITEO_CAT, "min_count": 2, **kw})


def test_group_by_must_name_a_one_id_field():
    assert _criteo(group_by="C3").group_by == "C3"
    assert "group_by" not in _criteo().as_dict()  # unset: recorded (and fingerprinted) as before
    assert _criteo(group_by="C3").as_dict()["group_by"] == "C3"
    with pytest.raises(ConfigError, match=r"group_by: 'user' is not a field \(no such column"):
        _criteo(group_by="user")
    with pytest.raises(ConfigError, match="group_by: 'label' is not a one-id field"):
        _criteo(group_by="label")
    with pytest.raises(ConfigError, match="group_by: 'x' is not a field"):
        schema_from_dict({"categorical": ["a"], "group_by": "x"})  # columns not known yet, not listed
    with pytest.raises(ConfigError, match="is under drop"):
        _criteo(group_by="C26", categorical=CRITEO_CAT[:-1], drop=["C26"])


@pytest.fixture(scope="module")
def grouped(tiny_store, tmp_path_factory):
    """The tiny store's raw rows prepared again with ``group_by: C3``, and a run on it."""
    from mutualctr.data.prepare import prepare

    root = tmp_path_factory.mktemp("grouped")
    schema = root / "criteo_grouped.yaml"
    schema.write_text(json.dumps({"format": "tsv", "header": False, "quoting": False, "columns": CRITEO_COLS,
                                  "numeric": CRITEO_INT, "categorical": CRITEO_CAT, "min_count": 2,
                                  "group_by": "C3"}))
    raw = [Path(tiny_store).parent / "synth_6000_0.txt"]  # the rows conftest prepared
    prepare(str(schema), raw, root / "store", split="random", seed=0, progress=False)
    run = mc.train(root / "store", root / "run", config=tiny_config(epochs=1), seed=1)
    return root / "store", Path(run.run_dir)


def test_evaluate_json_has_calibration_and_gauc_by_the_schemas_field(grouped):
    store_path, run = grouped
    store = Store.open(store_path)
    assert store.feature_map.group_by == "C3"
    res = CliRunner().invoke(app, ["evaluate", "--run", str(run), "--data", str(store_path), "--json"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    assert Scores.from_dict(ev).to_dict() == ev
    X, y = store.split("test")
    z = predict_logits(mc.load_run(run, store_path).model, X, 0, "cpu")
    cal = calibration(y, sigmoid(z))
    assert ev["calibration"]["ece"] == pytest.approx(cal["ece"], abs=1e-6)
    assert ev["calibration"]["ratio"] == pytest.approx(cal["ratio"], rel=1e-5)
    assert sum(b["rows"] for b in ev["calibration"]["bins"]) == ev["rows"]
    col = [store.feature_map.fields[i].name for i in store.feature_map.id_fields].index("C3")
    g = gauc(y, z, X[:, col])
    assert ev["gauc"]["field"] == "C3" and ev["gauc"]["groups_scored"] == g["groups_scored"] > 1
    assert ev["gauc"]["gauc"] == pytest.approx(g["gauc"], abs=1e-6)
    plain = CliRunner().invoke(app, ["evaluate", "--run", str(run), "--data", str(store_path)])
    assert "ECE" in plain.output and "gAUC by C3" in plain.output


def test_churn_command_between_two_runs(grouped, tmp_path):
    store_path, run = grouped
    other = mc.train(store_path, tmp_path / "other", config=tiny_config(epochs=1), seed=2).run_dir
    cli = CliRunner()
    res = cli.invoke(app, ["churn", "--run", other, "--against", str(run), "--json"])  # store: --run's
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert VersionChurn.from_dict(d).to_dict() == d
    store = Store.open(store_path)
    X, y = store.split("test")
    z_new, z_old = (predict_logits(mc.load_run(r, store_path).model, X, 0, "cpu") for r in (other, run))
    want = version_churn(z_new, z_old)
    assert d["mean_abs_diff"] == pytest.approx(want["mean_abs_diff"], abs=1e-6) and d["mean_abs_diff"] > 0
    assert d["rank_moved"] == pytest.approx(want["rank_moved"], abs=1e-9)
    assert d["new"]["auc"] != d["old"]["auc"] and d["rows"] == len(y)
    same = json.loads(cli.invoke(app, ["churn", "--run", str(run), "--against", str(run), "--json"]).stdout)
    assert same["mean_abs_diff"] == 0.0 and same["rank_moved"] == 0.0
    res = cli.invoke(app, ["churn", "--run", str(run), "--against", str(tmp_path / "nope")])
    assert res.exit_code == 2
