"""Bad input: clear errors naming file, line and column; or skipped and counted."""

from __future__ import annotations

import gzip
import re

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
    assert s.rejected == 4
    assert sum(s.rows.values()) == 296
    assert sorted(int(x.rsplit(":", 1)[1]) for x in s.rejected_lines) == [10, 100, 200, 250]
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
    assert r.summary.rejected == 1 and r.summary.rejected_lines == [f"{raw}:12"]


def test_header_only_without_newline_and_crlf(tmp_path):
    (tmp_path / "s.yaml").write_text("label: label\ncategorical: [a]\n")
    raw = tmp_path / "t.csv"
    raw.write_text("label,a")
    with pytest.raises(DataError, match=r"t\.csv: empty file \(no data rows\)"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "o", progress=False)
    raw.write_bytes(b"label,a\r\n1,x\r\n0,y\r\n2,z")
    with pytest.raises(DataError, match=r"t\.csv:4: column label: '2'"):
        prepare(tmp_path / "s.yaml", [raw], tmp_path / "o", progress=False)


NUMBER_SCHEMA = "label: y\nnumeric: [x]\ncategorical: [c]\nnumeric_values: number\n"


@pytest.mark.parametrize("value, message", [
    ("1e400", "is out of range"), ("-1e300", "is out of range"), ("-9.3e18", "is out of range"),
    ("nan", "is not a number"), ("inf", "is not a number"), ("1e5x", "is not a number"),
    ("1e308", None), ("-0.0", None), (".5", None), ("+2.5", None), ("-9.2e18", None),
])
def test_number_column_edges(tmp_path, value, message):
    (tmp_path / "s.yaml").write_text(NUMBER_SCHEMA)
    lines = ["y,x,c"] + [f"{i % 2},{i},a{i % 3}" for i in range(40)]
    lines[4] = f"1,{value},a"
    raw = tmp_path / "t.csv"
    raw.write_text("\n".join(lines) + "\n")
    run = lambda **kw: prepare(tmp_path / "s.yaml", [raw], tmp_path / "store", progress=False, **kw)  # noqa: E731
    if message is None:
        assert run().summary.rejected == 0
        return
    with pytest.raises(DataError, match=rf"t\.csv:5: column x: '{re.escape(value)}' {message}"):
        run()
    _no_store(tmp_path)
    assert run(on_bad_rows="skip").summary.rejected_lines == [f"{raw}:5"]


def test_parquet_numeric_edges(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "s.yaml").write_text("format: parquet\n" + NUMBER_SCHEMA)
    cases = [(pa.array([2**64 - 1] + list(range(39)), pa.uint64()), "18446744073709551615 is out of range"),
             (pa.array([-1e300] + [float(i) for i in range(39)]), "-1e\\+300 is out of range"),
             (pa.array([float("inf")] + [float(i) for i in range(39)]), "inf is not a number")]
    for x, message in cases:
        pq.write_table(pa.table({"y": [i % 2 for i in range(40)], "x": x,
                                 "c": [f"a{i % 3}" for i in range(40)]}), tmp_path / "t.parquet")
        with pytest.raises(DataError, match=rf"t\.parquet:1: column x: {message}"):
            prepare(tmp_path / "s.yaml", [tmp_path / "t.parquet"], tmp_path / "store", progress=False)
        _no_store(tmp_path)


def test_hex_and_signs_do_not_depend_on_the_chunk(tmp_path):
    """arrow's integer cast reads '0x10' as 16 and refuses '+5': both used to depend on whether
    another value of the chunk failed (then '+5' crashed with ArrowInvalid)."""
    for other in ("7", "12x"):
        rows = criteo_rows(50)
        rows[3][1], rows[5][1], rows[8][1] = "0x10", "+5", other
        raw = write_tsv(tmp_path / "c.txt", rows)
        r = _prep(tmp_path, raw, on_bad_rows="skip", overwrite=True)
        want = [f"{raw}:4"] + ([f"{raw}:9"] if other == "12x" else [])
        assert r.summary.rejected_lines == want


def test_overflow_in_a_file_to_predict(tmp_path):
    from mutualctr.data.encode import encode_file

    store = _prep(tmp_path, write_tsv(tmp_path / "c.txt", criteo_rows(50))).store
    rows = [r[1:] for r in criteo_rows(10, seed=5)]  # unlabeled
    rows[6][0] = "99999999999999999999999"
    new = write_tsv(tmp_path / "new.txt", rows)
    with pytest.raises(DataError, match=r"new\.txt:7: column I1: '9+' is out of range \(integers"):
        encode_file(store, new)
    assert encode_file(store, new, on_bad_rows="skip").rejected_lines == [7]


@pytest.mark.parametrize("split", ["random", "sequential"])
def test_a_split_without_rows_is_refused(tmp_path, split):
    raw = write_tsv(tmp_path / "c.txt", criteo_rows(5))
    with pytest.raises(DataError, match=rf"c\.txt: 5 rows give train \d, dev \d, test \d \({split} "
                       r"80/10/10 split\): the (dev|test) split would be empty"):
        _prep(tmp_path, raw, split=split)
    _no_store(tmp_path)
    assert _prep(tmp_path, write_tsv(tmp_path / "c.txt", criteo_rows(10)), split=split).store.rows("test") == 1


def test_input_directory_and_store_file_are_named_as_such(tmp_path):
    from mutualctr.data.store import Store
    from mutualctr.errors import StoreError

    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"d: is a directory, not a file"):
        _prep(tmp_path, tmp_path / "d")
    raw = write_tsv(tmp_path / "c.txt", criteo_rows(20))
    with pytest.raises(StoreError, match=r"c\.txt: is a file, not a store directory"):
        Store.open(raw)


def test_parquet_float_categoricals_beyond_int64_keep_their_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "s.yaml").write_text("format: parquet\nlabel: y\ncategorical: [c]\n")
    # 2**60 is an exact integer; an int64 cast of 1e20 wraps (it gave 7766279631452241920); the
    # text of 2**60 and 3 used to change to float text in a chunk that also held 2.5
    c = [3.0, 1e20, 2.0**60, 2.5, None] * 10
    pq.write_table(pa.table({"y": [i % 2 for i in range(50)], "c": c}), tmp_path / "t.parquet")
    st = prepare(tmp_path / "s.yaml", [tmp_path / "t.parquet"], tmp_path / "store", progress=False).store
    assert sorted(st.vocab("c").to_pylist()) == sorted(["3", "1e+20", "1152921504606846976", "2.5"])
    missing = st.feature_map.fields[0].missing_index
    assert sum(int((st.split(s)[0][:, 0] == missing).sum()) for s in st.splits) == 10  # the Nones
