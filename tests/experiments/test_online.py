"""``experiment online`` on a small synthetic time-ordered table: periods, growing stores, the
three arms, the tables; an interrupted experiment resumes to the same tables (issue 27)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mutualctr.config import ConfigError
from mutualctr.data.synth import generate
from mutualctr.experiments.online import OnlineSettings, run_online
from mutualctr.training.config import run_config_to_dict
from tests.conftest import interrupted_at_step, tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    generate(3600, root / "raw.txt", seed=3, progress=False)
    configs = root / "configs"
    configs.mkdir()
    for model in ("deepfm", "dcn"):
        (configs / f"{model}.yaml").write_text(yaml.safe_dump(run_config_to_dict(tiny_config(model, epochs=1))))
    st = OnlineSettings(dataset="criteo", periods=3, models=["deepfm", "dcn"], alpha=1.0, lr=1e-3, epochs=1,
                        threads=1, config_dir=str(configs))
    return root, st, run_online(root / "raw.txt", root / "full", st)


def test_online_tables_arms_and_new_ids(setup):
    root, st, r = setup
    arms = {(row["period"], row["arm"]) for row in r["rows"]}
    assert arms == {(1, "pretrained"), (2, "pretrained"), (2, "incremental"), (2, "mutual"), (2, "control")}
    for row in r["rows"]:
        assert 0 < row["auc"] < 1 and row["rows"] == 1200 and row["ece"] >= 0
        assert (row["version_churn"] is None) == (row["arm"] == "pretrained")
    assert all(row["version_churn"] > 0 for row in r["rows"] if row["arm"] == "incremental")
    assert len(r["new_ids"]) == 2 and all(0 < s["new_values"] < 1 for s in r["new_ids"])
    text = Path(r["tables"]).read_text()
    assert "| 2 | mutual |" in text and "mutual - incremental" in text and "rows with a new value" in text
    assert (root / "full" / "online.png").stat().st_size > 1000
    assert (root / "full" / "stores" / "p2" / "feature_map.json").is_file()


def test_interrupted_online_experiment_resumes_to_the_same_tables(setup):
    root, st, full = setup
    with interrupted_at_step(18):  # in period 1's mutual update (pretraining and incremental: 16 steps)
        run_online(root / "raw.txt", root / "cut", st)
    assert not (root / "cut" / "tables.md").exists()
    again = run_online(root / "raw.txt", root / "cut", st)
    assert Path(again["tables"]).read_text() == Path(full["tables"]).read_text()


def test_online_bad_input(setup, tmp_path):
    root, st, _ = setup
    from dataclasses import replace

    with pytest.raises(ConfigError, match=r"--periods 40: .* 3,600 rows, 90 per period; a period needs at least 200 "
                                          r"\(at most 18 periods here\)"):
        run_online(root / "raw.txt", tmp_path / "x", replace(st, periods=40))
    assert not (tmp_path / "x" / "periods").exists()
    with pytest.raises(ConfigError, match="at least 3"):
        run_online(root / "raw.txt", tmp_path / "y", replace(st, periods=2))
    with pytest.raises(ConfigError, match="other settings"):
        run_online(root / "raw.txt", root / "full", replace(st, alpha=2.0))
