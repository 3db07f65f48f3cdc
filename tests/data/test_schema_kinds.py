"""Schema YAML of the list, dense and hashed kinds (issue 25): strict keys, errors naming the key."""

from __future__ import annotations

import pytest

from mutualctr.config import ConfigError
from mutualctr.data.schema import (DENSE, HASHED, MULTI, SEQUENCE, DenseSpec, HashedSpec,
                                   MultiValuedSpec, SequenceSpec, load_schema, schema_from_dict)

RICH = """\
label: y
categorical: [item]
multi_valued: {genres: {max_length: 3, pooling: sum}}
sequence: {history: {max_length: 4, separator: ";", vocab_from: item}}
dense: {price: {transform: log1p}, score: {}}
hashed: {user: {buckets: 1000}}
"""


def _load(tmp_path, text):
    (tmp_path / "s.yaml").write_text(text)
    return load_schema(tmp_path / "s.yaml")


def test_kinds_read_with_their_defaults(tmp_path):
    s = _load(tmp_path, RICH)
    assert s.multi_valued == {"genres": MultiValuedSpec(max_length=3, separator="|", pooling="sum")}
    assert s.sequence == {"history": SequenceSpec(max_length=4, separator=";", vocab_from="item")}
    assert s.dense == {"price": DenseSpec("log1p"), "score": DenseSpec("none")}
    assert s.hashed == {"user": HashedSpec(1000)}
    r = s.resolve(["y", "user", "item", "genres", "history", "price", "score"])
    assert r.fields() == [("user", HASHED, "user"), ("item", "categorical", "item"),
                          ("genres", MULTI, "genres"), ("history", SEQUENCE, "history"),
                          ("price", DENSE, "price"), ("score", DENSE, "score")]
    assert r.spec("genres").pooling == "sum" and r.spec("item") is None


def test_schema_without_kinds_records_as_before():
    d = schema_from_dict({"categorical": ["a"]}).as_dict()
    assert not {"multi_valued", "sequence", "dense", "hashed"} & set(d)
    d = schema_from_dict({"hashed": {"a": {"buckets": 5}}}).as_dict()
    assert d["hashed"] == {"a": {"buckets": 5}} and "dense" not in d
    assert schema_from_dict(d).hashed == {"a": HashedSpec(5)}  # the recorded form reads back


@pytest.mark.parametrize("text,msg", [
    ("hashed: {u: {bucket: 3}}", r"unknown key hashed\.u\.bucket \(allowed: buckets\)"),
    ("multi_valued: {g: {max_length: 2, pool: mean}}", r"unknown key multi_valued\.g\.pool"),
    ("sequence: {h: {max_length: 2, vocab: item}}", r"unknown key sequence\.h\.vocab "),
    ("dense: {p: {transform: log}}", r"dense\.p\.transform: expected one of 'none' \| 'log1p'"),
    ("hashed: {u: {buckets: 0}}", r"hashed\.u\.buckets: must be >= 1, got 0"),
    ("hashed: {u: {buckets: -5}}", r"hashed\.u\.buckets: must be >= 1, got -5"),
    ("hashed: {u: {}}", r"missing required key hashed\.u\.buckets"),
    ("multi_valued: {g: {max_length: 0}}", r"multi_valued\.g\.max_length: must be >= 1, got 0"),
    ("multi_valued: {g: {}}", r"missing required key multi_valued\.g\.max_length"),
    ("multi_valued: {g: {max_length: 2, separator: ','}}",
     r"multi_valued\.g\.separator: ',' is also the column separator"),
    ("format: tsv\nsequence: {g: {max_length: 2, separator: \"\\t\"}}",
     r"sequence\.g\.separator: '\\t' is also the column separator"),
    ("multi_valued: {g: {max_length: 2, separator: ''}}", r"multi_valued\.g\.separator: must not be empty"),
    ("multi_valued: {g: {max_length: 2, pooling: max}}", r"multi_valued\.g\.pooling: expected one of"),
    ("numeric: [item]\nsequence: {h: {max_length: 2, vocab_from: item}}",
     r"sequence\.h\.vocab_from: 'item' is not a categorical field \(it is under numeric\)"),
    ("hashed: {item: {buckets: 9}}\nsequence: {h: {max_length: 2, vocab_from: item}}",
     r"sequence\.h\.vocab_from: 'item' is not a categorical field \(it is under hashed\)"),
    ("sequence: {h: {max_length: 2, vocab_from: h}}", r"'h' is not a categorical field \(it is under sequence\)"),
    ("columns: [label, item, h]\ncategorical: [item]\nsequence: {h: {max_length: 2, vocab_from: itm}}",
     r"sequence\.h\.vocab_from: no column 'itm' \(columns: label, item, h\)"),
    ("categorical: [g]\nmulti_valued: {g: {max_length: 2}}", r"multi_valued: 'g' is already listed under categorical"),
    ("columns: [label, a]\ndense: {p: {}}", r"dense: 'p' is not one of columns"),
])
def test_bad_kind_keys_name_the_key(tmp_path, text, msg):
    with pytest.raises(ConfigError, match=msg):
        _load(tmp_path, text)


def test_vocab_from_checked_once_the_header_is_known(tmp_path):
    s = _load(tmp_path, "categorical: [item]\nsequence: {h: {max_length: 2, vocab_from: itm}}")
    with pytest.raises(ConfigError, match=r"sequence\.h\.vocab_from: no column 'itm'"):
        s.resolve(["label", "item", "h"])
    s = _load(tmp_path, "others: drop\nsequence: {h: {max_length: 2, vocab_from: item}}")
    with pytest.raises(ConfigError, match=r"'item' is not a categorical field \(it is under others: drop\)"):
        s.resolve(["label", "item", "h"])
    s = _load(tmp_path, "others: categorical\nsequence: {h: {max_length: 2, vocab_from: item}}")
    assert s.resolve(["label", "item", "h"]).sequence["h"].vocab_from == "item"
