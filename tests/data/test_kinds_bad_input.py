"""Bad input to the list, dense and hashed kinds (issue 25): one line naming file, line, column
or key, exit 2, nothing written; over-long lists are cut and counted, not refused."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mutualctr.data.prepare import prepare
from mutualctr.errors import DataError

from . import kinds_cases as kc


def _no_store(tmp_path):
    assert not (tmp_path / "st").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".st")]


def _prep(tmp_path, table, **kw):
    schema, raw = kc.write(tmp_path, table)
    return prepare(schema, [raw], tmp_path / "st", progress=False, **kw)


@pytest.mark.parametrize("col,cell,msg", [
    ("genres", "Action||War", r"d\.csv:9: column genres: 'Action\|\|War' has an empty item"),
    ("genres", "Action|", r"d\.csv:9: column genres: 'Action\|' has an empty item"),
    ("hist", "|3", r"d\.csv:9: column hist: '\|3' has an empty item"),
    ("price", "12x", r"d\.csv:9: column price: '12x' is not a number"),
    ("price", "nan", r"d\.csv:9: column price: 'nan' is not a number"),
    ("price", "1e999", r"d\.csv:9: column price: '1e999' is out of range"),
    ("clicks", "-1", r"d\.csv:9: column clicks: -1\.0 is <= -1 \(transform log1p needs values > -1\)"),
])
def test_bad_cells_name_file_line_column(tmp_path, col, cell, msg):
    table = kc.rows(40)
    table[7][kc.COLUMNS.index(col)] = cell  # line 9 (after the header)
    with pytest.raises(DataError, match=msg):
        _prep(tmp_path, table)
    _no_store(tmp_path)
    r = _prep(tmp_path, table, on_bad_rows="skip")  # or skipped and counted
    assert r.summary.rejected == 1 and r.summary.rejected_lines[0].endswith("d.csv:9")


def test_long_lists_are_cut_and_counted_and_empty_lists_are_missing(tmp_path):
    table = kc.rows(40)
    table[0][3] = "Action|Comedy|Drama|Noir"  # genres, max_length 2
    table[0][4] = "1|2|3|4|5|6"  # hist, max_length 3: the last three kept
    table[1][3] = table[1][4] = ""
    r = _prep(tmp_path, table, split="sequential")
    fm = r.store.feature_map
    item, genres = fm.field("item"), fm.field("genres")
    a = r.store.split_arrays("train")
    vocab = r.store.vocab("item").to_pylist()
    assert a.bags["hist"][0].tolist() == [item.offset + 2 + vocab.index(v) for v in ("4", "5", "6")]
    g = r.store.vocab("genres").to_pylist()
    assert a.bags["genres"][0].tolist() == [genres.offset + 2 + g.index("Action"),
                                            genres.offset + 2 + g.index("Comedy")]
    assert a.bags["genres"][1].tolist() == [genres.missing_index, 0]
    assert a.bags["hist"][1].tolist() == [item.missing_index, 0, 0]
    lists = r.summary.lists
    assert lists["hist"]["truncated"] == sum(len(kc.items(t[4])) > 3 for t in table)
    assert lists["genres"]["empty"] == sum(t[3] == "" for t in table) >= 1
    assert r.store.feature_map.counts["lists"] == lists


def test_list_declared_on_a_numeric_parquet_column(tmp_path):
    pq.write_table(pa.table({"y": [0, 1] * 10, "g": list(range(20))}), tmp_path / "d.parquet")
    (tmp_path / "s.yaml").write_text("format: parquet\nlabel: y\nmulti_valued: {g: {max_length: 2}}\n")
    with pytest.raises(DataError, match=r"d\.parquet: column g: declared multi_valued but its parquet "
                                        r"type is int64, neither a list nor text to split at '\|'"):
        prepare(tmp_path / "s.yaml", [tmp_path / "d.parquet"], tmp_path / "st", progress=False)
    _no_store(tmp_path)


def test_parquet_null_item_and_text_column(tmp_path):
    rows = [["a", "b"], ["c"], None, ["a"]] * 5
    bad = list(rows)
    bad[5] = ["a", None]
    (tmp_path / "s.yaml").write_text("format: parquet\nlabel: y\nmulti_valued: {g: {max_length: 2}}\n")
    pq.write_table(pa.table({"y": [0, 1] * 10, "g": pa.array(bad, pa.list_(pa.string()))}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d\.parquet:6: column g: .* has an empty item"):
        prepare(tmp_path / "s.yaml", [tmp_path / "d.parquet"], tmp_path / "st", progress=False)
    _no_store(tmp_path)
    # a string column is split at the separator, like a text file's cell
    text = ["|".join(r) if r else None for r in rows]
    pq.write_table(pa.table({"y": [0, 1] * 10, "g": text}), tmp_path / "t.parquet")
    pq.write_table(pa.table({"y": [0, 1] * 10, "g": pa.array(rows, pa.list_(pa.string()))}), tmp_path / "l.parquet")
    a = prepare(tmp_path / "s.yaml", [tmp_path / "t.parquet"], tmp_path / "a", progress=False).store
    b = prepare(tmp_path / "s.yaml", [tmp_path / "l.parquet"], tmp_path / "b", progress=False).store
    assert (a.split_arrays("train").bags["g"] == b.split_arrays("train").bags["g"]).all()


def _cli(tmp_path, *args):
    import os
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "mutualctr", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_one_line_exit_2_and_summary(tmp_path):
    schema, raw = kc.write(tmp_path, kc.rows(40))
    (tmp_path / "bad.yaml").write_text(kc.SCHEMA.replace("buckets: 13", "buckets: 0"))
    p = _cli(tmp_path, "prepare", "--dataset", "bad.yaml", "--input", "d.csv", "--out", "st", "--quiet")
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "hashed.user.buckets: must be >= 1, got 0" in p.stderr
    _no_store(tmp_path)
    p = _cli(tmp_path, "prepare", "--dataset", "s.yaml", "--input", "d.csv", "--out", "st", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "lists: genres: " in p.stdout and "rows cut to max_length" in p.stdout
