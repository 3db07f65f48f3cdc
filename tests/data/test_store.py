"""Store: open/validation, reuse by fingerprint, overwrite, atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mutualctr.data import fields as fields_mod
from mutualctr.data import prepare as prepare_mod
from mutualctr.data.prepare import prepare
from mutualctr.data.store import Store
from mutualctr.errors import StoreError

from .helpers import criteo_rows, write_tsv


@pytest.fixture
def raw(tmp_path):
    return write_tsv(tmp_path / "c.txt", criteo_rows(300))


def test_reuse_same_inputs_and_settings(tmp_path, raw, monkeypatch):
    out = tmp_path / "store"
    first = prepare("criteo", [raw], out, min_count=2, progress=False)
    stamp = (out / "feature_map.json").stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("re-read the inputs")

    monkeypatch.setattr(prepare_mod.StoreBuilder, "build", boom)
    again = prepare("criteo", [raw], out, min_count=2, progress=False)
    assert again.reused and again.store.fingerprint == first.store.fingerprint
    assert (out / "feature_map.json").stat().st_mtime_ns == stamp
    assert again.summary.rows == first.summary.rows
    assert again.summary.vocab_size == first.summary.vocab_size


@pytest.mark.parametrize("change", [{"seed": 1}, {"min_count": 3}, {"split": "sequential"},
                                    {"on_bad_rows": "skip"}])
def test_other_settings_other_fingerprint(tmp_path, raw, change):
    out = tmp_path / "store"
    base = prepare("criteo", [raw], out, min_count=2, progress=False).store.fingerprint
    kw = {"min_count": 2, **change}
    with pytest.raises(StoreError, match=r"pass another --out or --overwrite"):
        prepare("criteo", [raw], out, progress=False, **kw)
    assert Store.open(out).fingerprint == base  # untouched
    other = prepare("criteo", [raw], tmp_path / "other", progress=False, **kw)
    assert other.store.fingerprint != base
    replaced = prepare("criteo", [raw], out, progress=False, overwrite=True, **kw)
    assert not replaced.reused and replaced.store.fingerprint == other.store.fingerprint


def test_changed_input_changes_fingerprint(tmp_path, raw):
    a = prepare("criteo", [raw], tmp_path / "a", progress=False).store.fingerprint
    write_tsv(raw, criteo_rows(300, seed=9))
    b = prepare("criteo", [raw], tmp_path / "b", progress=False).store.fingerprint
    assert a != b


def test_out_exists_and_is_not_a_store(tmp_path, raw):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not a mutualctr store"):
        prepare("criteo", [raw], out, progress=False)
    assert (out / "precious.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert not prepare("criteo", [raw], tmp_path / "empty", progress=False).reused


def test_crash_mid_write_leaves_no_store(tmp_path, raw, monkeypatch):
    out = tmp_path / "store"
    real = fields_mod.write_vocab
    calls = []

    def crash(path, values, counts):
        calls.append(path)
        if len(calls) == 20:
            raise KeyboardInterrupt("power cut")
        real(path, values, counts)

    monkeypatch.setattr(fields_mod, "write_vocab", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare("criteo", [raw], out, progress=False)
    assert not out.exists()
    assert os.listdir(tmp_path) == ["c.txt"]  # no temporary directory left either
    with pytest.raises(StoreError, match="no such store"):
        Store.open(out)


def test_crash_while_overwriting_keeps_old_store(tmp_path, raw, monkeypatch):
    out = tmp_path / "store"
    old = prepare("criteo", [raw], out, progress=False).store.fingerprint
    monkeypatch.setattr(prepare_mod, "_ordered_map", _crash_in_pass(2, prepare_mod._ordered_map))
    with pytest.raises(RuntimeError, match="crash"):
        prepare("criteo", [raw], out, seed=3, overwrite=True, progress=False)
    assert Store.open(out).fingerprint == old
    assert sorted(os.listdir(tmp_path)) == ["c.txt", "store"]


def _crash_in_pass(n, real):
    """Crash on the first chunk of the n-th pass (pass 2 writes the split matrices)."""
    calls = []

    def wrapped(fn, items, *a, **k):
        calls.append(1)
        for r in real(fn, items, *a, **k):
            if len(calls) == n:
                raise RuntimeError("crash")
            yield r
    return wrapped


def test_open_rejects_incomplete_or_foreign(tmp_path, raw):
    with pytest.raises(StoreError, match=r"nowhere: no such store"):
        Store.open(tmp_path / "nowhere")
    (tmp_path / "foreign").mkdir()
    with pytest.raises(StoreError, match=r"foreign: not a mutualctr store"):
        Store.open(tmp_path / "foreign")
    (tmp_path / "foreign" / "feature_map.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(StoreError, match="format marker"):
        Store.open(tmp_path / "foreign")
    out = tmp_path / "s"
    prepare("criteo", [raw], out, progress=False)
    (out / "dev.y.npy").unlink()
    with pytest.raises(StoreError, match=r"incomplete store \(missing dev\.y\.npy\)"):
        Store.open(out)
    out2 = tmp_path / "s2"
    prepare("criteo", [raw], out2, progress=False)
    np.save(out2 / "test.X.npy", np.zeros((3, 39), np.int32))
    with pytest.raises(StoreError, match="shape"):
        Store.open(out2)
    with pytest.raises(StoreError, match="no split 'valid'"):
        Store.open(tmp_path / "store") if (tmp_path / "store").exists() else \
            prepare("criteo", [raw], tmp_path / "store", progress=False).store.split("valid")


def test_damaged_store_is_not_reused(tmp_path, raw):
    out = tmp_path / "store"
    prepare("criteo", [raw], out, progress=False)
    (out / "train.X.npy").unlink()
    with pytest.raises(StoreError, match=r"missing train\.X\.npy.*pass --overwrite"):
        prepare("criteo", [raw], out, progress=False)
    r = prepare("criteo", [raw], out, progress=False, overwrite=True)
    assert not r.reused and Store.open(out).rows("train") == 240
    (out / "feature_map.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable or foreign"):
        prepare("criteo", [raw], out, progress=False)


def test_header_auto_needs_columns(tmp_path):
    from mutualctr.config import ConfigError
    from mutualctr.data.schema import schema_from_dict

    with pytest.raises(ConfigError, match="columns: required when header is auto"):
        schema_from_dict({"header": "auto", "label": "y"})


def test_disk_full_is_a_store_error(tmp_path, raw, monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fields_mod, "write_vocab", full)
    with pytest.raises(StoreError, match=r"store: cannot write the store: .*No space left"):
        prepare("criteo", [raw], tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()


def test_store_files_get_the_modes_of_a_plain_write(tmp_path, raw):
    """Temporaries are made 0700/0600; a store is shared, so it gets mkdir/open's modes."""
    mask = os.umask(0o022)
    os.umask(mask)
    st = prepare("criteo", [raw], tmp_path / "store", progress=False).store
    assert (st.path.stat().st_mode & 0o777) == 0o777 & ~mask
    assert ((st.path / "feature_map.json").stat().st_mode & 0o777) == 0o666 & ~mask
