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


# ---- periods by a time column (calendar months), with list fields that grow --------------------

_TIMED = ("label: y\ncategorical: [user, item]\nmulti_valued: {tags: {max_length: 3, separator: '|'}}\n"
          "sequence: {hist: {max_length: 4, separator: '|', vocab_from: item}}\ndrop: [ts]\ngroup_by: user\n")
_MONTHS = (("2020-01", 1577836800, 500), ("2020-02", 1580515200, 600), ("2020-03", 1583020800, 500),
           ("2020-04", 1585699200, 250))  # (month, its first second, rows)


def _timed_table(path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    lines = ["y,user,item,tags,hist,ts"]
    for m, (_, start, rows) in enumerate(_MONTHS):
        for t in np.sort(rng.integers(start, start + 27 * 86400, rows)):
            item = rng.integers(10 * m, 10 * m + 40)
            tags = "|".join(f"t{x}" for x in rng.integers(2 * m, 2 * m + 8, rng.integers(0, 4)))
            hist = "|".join(f"i{x}" for x in rng.integers(10 * m, 10 * m + 40, rng.integers(0, 5)))
            lines.append(f"{int(rng.random() < 0.2 + 0.5 * (item % 3 == 0))},u{rng.integers(0, 150)},i{item},{tags},{hist},{t}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def timed(setup):
    root, st, _ = setup
    (root / "timed.yaml").write_text(_TIMED)
    _timed_table(root / "timed.csv")
    return root, OnlineSettings(dataset=str(root / "timed.yaml"), periods=3, models=["deepfm", "dcn"], lr=1e-3,
                                threads=1, config_dir=st.config_dir, time_column="ts", period="month")


def test_periods_by_calendar_month_with_growing_list_fields(timed):
    root, st = timed
    r = run_online(root / "timed.csv", root / "bymonth", st)
    assert r["periods"] == [{"name": m, "rows": n} for m, _, n in _MONTHS[:3]]  # the first 3 months; April left out
    files = sorted((root / "bymonth" / "periods").glob("period-*.txt"))
    assert [len(f.read_text().splitlines()) - 1 for f in files] == [500, 600, 500]
    assert files[1].read_text().splitlines()[1] == (root / "timed.csv").read_text().splitlines()[501]
    assert {row["rows"] for row in r["rows"] if row["period"] == 2} == {500}
    assert all(s["new_values"] > 0 and s["rows_with_new"] > 0 for s in r["new_ids"])  # items and tags grew
    assert all(0 < row["gauc"] < 1 for row in r["rows"])  # group_by on a store with list fields
    import mutualctr as mc

    e = mc.evaluate(root / "bymonth" / "runs" / "p0" / "m0-deepfm", root / "bymonth" / "stores" / "p1")
    assert e.gauc is not None and 0 < e.gauc.gauc < 1
    text = Path(r["tables"]).read_text()
    assert "Periods (months of column ts): 0 = 2020-01 (500 rows), 1 = 2020-02 (600 rows), 2 = 2020-03" in text
    fm = (root / "bymonth" / "stores" / "p2" / "feature_map.json").read_text()
    assert '"grown": true' in fm and '"tags"' in fm


def test_period_names():
    from mutualctr.experiments.periods import period_of

    assert period_of("874724710", "month", False) == "1997-09"
    assert period_of("874724710.5", "day", False) == "1997-09-20"
    assert period_of("874724710", "week", False) == "1997-W38"
    assert period_of("14102123", "day", True) == "2014-10-21"  # a YYMMDDHH hour column (Avazu)


def test_periods_by_time_bad_input(timed, tmp_path):
    import os
    import subprocess
    import sys
    from dataclasses import replace

    root, st = timed
    with pytest.raises(ConfigError, match=r"^--periods 5: .*timed.csv has 4 months by its column ts \(2020-01 \.\. "
                                          r"2020-04\); at most 4 periods here$"):
        run_online(root / "timed.csv", tmp_path / "a", replace(st, periods=5))
    lines = (root / "timed.csv").read_text().splitlines()
    (tmp_path / "t.csv").write_text("\n".join(lines[:-100]) + "\n")  # April: 150 rows
    with pytest.raises(ConfigError, match=r"the month 2020-04 of .*t.csv has 150 rows; a period needs at least 200"):
        run_online(tmp_path / "t.csv", tmp_path / "b", replace(st, periods=4))
    (tmp_path / "late.csv").write_text("\n".join(lines[:700] + [lines[3]] + lines[700:]) + "\n")
    with pytest.raises(ConfigError, match=r"late.csv:701: column ts: '\d+' \(2020-01\) comes after a row of 2020-02; "
                                          "the rows must be in time order"):
        run_online(tmp_path / "late.csv", tmp_path / "c", st)
    (tmp_path / "bad.csv").write_text("\n".join(lines[:10] + [lines[10].rsplit(",", 1)[0] + ",soon"]) + "\n")
    with pytest.raises(ConfigError, match=r"bad.csv:11: column ts: 'soon' is not Unix seconds"):
        run_online(tmp_path / "bad.csv", tmp_path / "d", st)
    with pytest.raises(ConfigError, match="no column 'when'"):
        run_online(root / "timed.csv", tmp_path / "e", replace(st, time_column="when"))
    with pytest.raises(ConfigError, match="--period month: needs --time-column"):
        run_online(root / "timed.csv", tmp_path / "f", replace(st, time_column=None))
    assert not any((tmp_path / d).exists() for d in "abcdef")  # nothing written
    p = subprocess.run([sys.executable, "-m", "mutualctr", "experiment", "online", "--data", str(root / "timed.csv"),
                        "--dataset", st.dataset, "--out", str(tmp_path / "g"), "--periods", "9", "--time-column", "ts",
                        "--period", "month", "--models", "deepfm,dcn", "--threads", "1"],
                       capture_output=True, text=True, env=os.environ, timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "at most 4 periods here" in p.stderr


def test_periods_cut_before_the_index_are_kept(setup, tmp_path):
    """An experiment cut before periods.json existed resumes on its period files as they are."""
    import json
    import os
    import shutil

    from mutualctr.data.schema import load_schema
    from mutualctr.experiments.periods import cut_periods

    root, st, _ = setup
    shutil.copytree(root / "full" / "periods", tmp_path / "periods")
    (tmp_path / "periods" / "periods.json").unlink()
    stamps = {f.name: os.stat(f).st_mtime_ns for f in (tmp_path / "periods").iterdir()}
    files, names = cut_periods(root / "raw.txt", load_schema("criteo"), 3, tmp_path / "periods")
    assert {f.name: os.stat(f).st_mtime_ns for f in files} == stamps  # not rewritten
    assert names == json.loads((root / "full" / "periods" / "periods.json").read_text()) == [
        {"name": "rows 1-1200", "rows": 1200}, {"name": "rows 1201-2400", "rows": 1200},
        {"name": "rows 2401-3600", "rows": 1200}]


def test_periods_by_day_of_an_hour_column_without_header(tmp_path):
    """A headerless tsv whose time column is a YYMMDDHH hour (Avazu): cut by day."""
    from mutualctr.data.schema import Schema
    from mutualctr.experiments.periods import cut_periods

    schema = Schema(format="tsv", header=False, quoting=False, columns=["y", "hour", "a"], label="y",
                    categorical=["a"], hour=["hour"])
    lines = [f"{i % 2}\t1410{21 + i // 250:02d}{i % 24:02d}\ta{i % 5}" for i in range(1000)]  # 4 days of 250
    (tmp_path / "h.tsv").write_text("\n".join(lines) + "\n")
    files, names = cut_periods(tmp_path / "h.tsv", schema, 3, tmp_path / "p", "hour", "day")
    assert names == [{"name": f"2014-10-{d}", "rows": 250} for d in (21, 22, 23)]
    assert files[0].read_text().splitlines() == lines[:250] and files[2].read_text().splitlines() == lines[500:750]
