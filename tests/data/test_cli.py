"""`mutualctr prepare` and `mutualctr data synth`."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from mutualctr.cli import app
from mutualctr.data.schema import load_schema
from mutualctr.data.store import Store
from mutualctr.resources import schema_names, schema_path

from .helpers import criteo_rows, write_tsv


def test_prepare_and_synth_commands(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["data", "synth", "--rows", "3000", "--out", str(tmp_path / "s.txt"),
                              "--seed", "2", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "ceiling AUC" in res.output and (tmp_path / "s.txt.meta.json").is_file()
    res = runner.invoke(app, ["prepare", "--dataset", "criteo", "--input", str(tmp_path / "s.txt"),
                              "--out", str(tmp_path / "st"), "--min-count", "2", "--quiet"])
    assert res.exit_code == 0, res.output
    for word in ("prepared store", "train", "2,400", "click rate", "C26", "rows rejected: 0"):
        assert word in res.output
    res = runner.invoke(app, ["prepare", "--dataset", "criteo", "--input", str(tmp_path / "s.txt"),
                              "--out", str(tmp_path / "st"), "--min-count", "2", "--quiet"])
    assert "reused existing store" in res.output
    assert Store.open(tmp_path / "st").feature_map.settings["min_count"] == 2


def test_errors_are_one_line_exit_2(tmp_path):
    rows = criteo_rows(20)
    rows[4][0] = "yes"
    raw = write_tsv(tmp_path / "c.txt", rows)
    p = subprocess.run([sys.executable, "-m", "mutualctr", "prepare", "--dataset", "criteo",
                        "--input", str(raw), "--out", str(tmp_path / "o"), "--quiet"],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0
    assert f"{raw}:5: column label: 'yes' is not a label" in p.stderr
    assert "fits the layout" not in p.stderr  # the file fits its schema: no hint at another one
    p = subprocess.run([sys.executable, "-m", "mutualctr", "prepare", "--dataset", "criteo",
                        "--input", str(raw), "--out", str(tmp_path / "o"), "--quiet",
                        "--on-bad-rows", "skip"], capture_output=True, text=True)
    assert p.returncode == 0 and f"{raw}:5" in p.stdout


def test_example_schemas_load():
    assert schema_names() == ["avazu_noheader", "criteo_csv", "example_shop", "ml100k"]
    for name in schema_names():
        s = load_schema(schema_path(name))
        if s.columns:  # else the columns come from the file's header
            assert s.fields()


def test_prepare_prints_each_one_class_split_on_its_own_line(tmp_path):
    rows = criteo_rows(40)
    for r in rows:
        r[0] = "0"  # no clicks anywhere: every split is one class
    raw = write_tsv(tmp_path / "c.txt", rows)
    res = CliRunner().invoke(app, ["prepare", "--dataset", "criteo", "--input", str(raw), "--out",
                                   str(tmp_path / "st"), "--quiet"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert lines == [f"warning: every label of the {s} split ({n} rows) is 0 (no clicks); its AUC is undefined"
                     for s, n in (("train", 32), ("dev", 4), ("test", 4))]


def _criteo_csv(path, rows=60):
    """Criteo columns, comma-separated, with a header and float-formatted integers."""
    head = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    lines = [",".join(head)]
    for r in range(rows):
        lines.append(",".join([str(r % 2)] + [f"{(r * i) % 40}.0" for i in range(1, 14)]
                              + [f"{(r + i) % 5:08x}" for i in range(26)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_shipped_schemas_are_listed_and_taken_by_name(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["schemas"])
    assert res.exit_code == 0, res.output
    for name in schema_names():
        assert f"{name}: " in res.output and str(schema_path(name)) in res.output
    assert "criteo_csv: Criteo columns in a comma-separated file with a header" in res.output
    raw = _criteo_csv(tmp_path / "c.csv")
    res = runner.invoke(app, ["prepare", "--dataset", "criteo_csv", "--input", str(raw),
                              "--out", str(tmp_path / "st"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert Store.open(tmp_path / "st").feature_map.dataset == "criteo_csv"
    (tmp_path / "criteo_csv").write_text("label: label\ncategorical: [C1]\nothers: drop\n")
    assert load_schema(str(tmp_path / "criteo_csv")).categorical == ["C1"]  # a file of that name wins


def test_a_file_that_fits_a_shipped_schema_gets_a_hint_and_no_stdout(tmp_path):
    raw = _criteo_csv(tmp_path / "c.csv")
    p = subprocess.run([sys.executable, "-m", "mutualctr", "prepare", "--dataset", "criteo",
                        "--input", str(raw), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip() == (f"error: {raw}:1: expected 40 columns, found 1 ({raw} fits the layout of "
                                "'criteo_csv': try --dataset criteo_csv; mutualctr schemas lists the "
                                "shipped schemas)")
