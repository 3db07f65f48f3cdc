"""Bad input: clear errors naming file, line and column; or skipped and counted."""

from __future__ import annotations

import gzip

import pytest

from mutualctr.config import ConfigError
from mutualctr.data import reader as reader_mod
from mutualctr.data.prepare import prepare
from mutualctr.errors import DataError

from .helpers import criteo_rows, write_tsv


def _prep(tmp_path, raw, **kw):
    return prepare("criteo", [raw], tmp_path / "store", min_count=1, progress=False, **kw)


def _no_store(tmp_path):
    assert not (tmp_path / "store").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".store")]


@pytest.mark.parametrize("small_blocks", [False, True])
def test_wrong_number_of_columns(tmp_path, monkeypatch, small_blocks):
    if small_blocks:
        monkeypatch.setattr(reader_mod, "BLOCK_SIZE", 2048)
    rows = criteo_rows(200)
    rows[150] = rows[150][:30]
    raw = write_tsv(tmp_path / "c.txt", rows)
    with pytest.raises(DataError, match=rf"c\.txt:151: expected 40 columns, found 30"):
        _prep(tmp_path, raw)
    _no_store(tmp_path)


def test_too_many_columns_with_header(tmp_path):
    raw = tmp_path / "t.csv"
    raw.write_text("label,a\n1,x\n0,y\n1,z,extra\n")
    (tmp_path / "s.yaml").write_text("label: label\ncategorical: [a]\n")
    with pytest.raises(DataError, match=r"t\.csv:4: expected 2 columns, found 3"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "store", progress=False)


def test_non_integer_in_integer_field(tmp_path):
    rows = criteo_rows(50)
    rows[6][3] = "12x"  # I3 on line 7
    raw = write_tsv(tmp_path / "c.txt", rows)
    with pytest.raises(DataError, match=r"c\.txt:7: column I3: '12x' is not an integer"):
        _prep(tmp_path, raw)
    _no_store(tmp_path)


def test_label_not_binary(tmp_path):
    rows = criteo_rows(50)
    rows[2][0] = "2"
    raw = write_tsv(tmp_path / "c.txt", rows)
    with pytest.raises(DataError, match=r"c\.txt:3: column label: '2' is not a label"):
        _prep(tmp_path, raw)
    rows[2][0] = ""
    raw = write_tsv(tmp_path / "c.txt", rows)
    with pytest.raises(DataError, match=r"c\.txt:3: column label: an empty value"):
        _prep(tmp_path, raw)


def test_empty_and_missing_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.txt: empty file"):
        _prep(tmp_path, tmp_path / "empty.txt")
    (tmp_path / "empty.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match=r"empty\.gz: empty file"):
        _prep(tmp_path, tmp_path / "empty.gz")
    (tmp_path / "h.csv").write_text("label,a\n")
    (tmp_path / "s.yaml").write_text("label: label\ncategorical: [a]\n")
    with pytest.raises(DataError, match=r"h\.csv: empty file \(no data rows\)"):
        prepare(tmp_path / "s.yaml", [tmp_path / "h.csv"], tmp_path / "store", progress=False)
    with pytest.raises(DataError, match=r"nope\.txt: no such file"):
        _prep(tmp_path, tmp_path / "nope.txt")
    _no_store(tmp_path)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(write_tsv(tmp_path / "c.txt", criteo_rows(3000)).read_bytes())
    (tmp_path / "t.txt.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.txt\.gz: truncated or corrupt compressed file"):
        _prep(tmp_path, tmp_path / "t.txt.gz")
    _no_store(tmp_path)


def test_skip_counts_and_reports_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_mod, "BLOCK_SIZE", 4096)
    rows = criteo_rows(300)
    rows[9] = rows[9][:12]  # line 10: width
    rows[99][5] = "x"  # line 100: non-integer
    rows[199][0] = "7"  # line 200: label
    rows[249] = rows[249] + ["extra"]  # line 250: width
    raw = write_tsv(tmp_path / "c.txt", rows)
    r = _prep(tmp_path, raw, on_bad_rows="skip")
    s = r.summary
    assert s["rejected"] == 4
    assert sum(s["rows"].values()) == 296
    assert sorted(int(x.rsplit(":", 1)[1]) for x in s["rejected_lines"]) == [10, 100, 200, 250]
    assert r.store.feature_map.counts["rejected"] == 4
    # the kept rows are the good ones, in the same splits as they would be otherwise
    good = [row for i, row in enumerate(rows) if i not in (9, 99, 199, 249)]
    assert sum(r.store.split(n)[1].sum() for n in ("train", "dev", "test")) == \
        sum(int(g[0]) for g in good)


def test_bad_line_numbers_in_second_file(tmp_path):
    a = write_tsv(tmp_path / "a.txt", criteo_rows(40))
    rows = criteo_rows(40, seed=1)
    rows[20][30] = rows[20][30]  # fine
    rows[33][2] = "1.5"
    b = write_tsv(tmp_path / "b.txt", rows)
    with pytest.raises(DataError, match=r"b\.txt:34: column I2: '1\.5' is not an integer"):
        prepare("criteo", [a, b], tmp_path / "store", progress=False)


def test_schema_yaml_errors(tmp_path):
    raw = tmp_path / "t.csv"
    raw.write_text("label,a\n1,x\n")
    (tmp_path / "s.yaml").write_text("label: label\ncategorical: [a]\nseperator: ';'\n")
    with pytest.raises(ConfigError, match="unknown key seperator"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "store", progress=False)
    (tmp_path / "s.yaml").write_text("label: label\ncategorical: [a]\nmin_count: lots\n")
    with pytest.raises(ConfigError, match="min_count: expected an integer"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "store", progress=False)
    (tmp_path / "s.yaml").write_text("label: label\nformat: xlsx\n")
    with pytest.raises(ConfigError, match="format"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "store", progress=False)
    (tmp_path / "s.yaml").write_text("label: label\n")  # column a assigned nowhere
    with pytest.raises(ConfigError, match="column 'a' is not listed"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "store", progress=False)
    with pytest.raises(ConfigError, match="not 'criteo', 'avazu'"):
        prepare("kriteo", [raw], tmp_path / "store", progress=False)
    (tmp_path / "s.yaml").write_text("label: label\ncategorical: [a, b]\ncolumns: [label, a]\n")
    with pytest.raises(ConfigError, match="'b' is not one of columns"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "store", progress=False)


def test_header_mismatch(tmp_path):
    raw = tmp_path / "t.csv"
    raw.write_text("label,b\n1,x\n")
    (tmp_path / "s.yaml").write_text("label: label\ncolumns: [label, a]\ncategorical: [a]\n")
    with pytest.raises(DataError, match=r"t\.csv:1: missing column 'a'"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "store", progress=False)


def test_invalid_utf8(tmp_path):
    rows = criteo_rows(30)
    raw = tmp_path / "c.txt"
    lines = ["\t".join(r).encode() for r in rows]
    lines[11] = lines[11].replace(rows[11][20].encode(), b"ab\xffcd", 1) if rows[11][20] else \
        b"\t".join([*(x.encode() for x in rows[11][:20]), b"ab\xffcd", *(x.encode() for x in rows[11][21:])])
    raw.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"c\.txt:12: column C7: .* is not valid UTF-8"):
        _prep(tmp_path, raw)
    r = _prep(tmp_path, raw, on_bad_rows="skip")
    assert r.summary["rejected"] == 1 and r.summary["rejected_lines"] == [f"{raw}:12"]


def test_header_only_without_newline_and_crlf(tmp_path):
    (tmp_path / "s.yaml").write_text("label: label\ncategorical: [a]\n")
    raw = tmp_path / "t.csv"
    raw.write_text("label,a")
    with pytest.raises(DataError, match=r"t\.csv: empty file \(no data rows\)"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "o", progress=False)
    raw.write_bytes(b"label,a\r\n1,x\r\n0,y\r\n2,z")
    with pytest.raises(DataError, match=r"t\.csv:4: column label: '2'"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "o", progress=False)
