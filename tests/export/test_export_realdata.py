"""The reference encoder on the real samples in ../shared/data (skipped when absent; the rows are
read where they are, never copied): its ids equal the store's encoding of every row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mutualctr.data.encode import encode_file
from mutualctr.data.prepare import prepare
from mutualctr.serving import encoder_spec
from tests.conftest import SHARED_DATA
from tests.export.helpers import serve as _serve

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")]
CRITEO = SHARED_DATA / "criteo" / "criteo_random137k.txt.gz"
AVAZU = SHARED_DATA / "avazu"


def _ids(store, path, tmp_path) -> np.ndarray:
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir(exist_ok=True)
    (spec_dir / "encoder.json").write_text(json.dumps(encoder_spec(store)))
    r = _serve(spec_dir, path, "--ids-out", tmp_path / "ids.npy")
    assert r.returncode == 0, r.stderr
    return np.load(tmp_path / "ids.npy")


def test_reference_encoder_on_real_criteo(tmp_path):
    store = prepare("criteo", [CRITEO], tmp_path / "c", progress=False).store  # min count 10
    ids = _ids(store, CRITEO, tmp_path)
    assert ids.shape == (137_139, 39) and np.array_equal(ids, encode_file(store, CRITEO).X)


def test_reference_encoder_on_real_avazu_other_days(tmp_path):
    # a store of the first 10k rows (header) encodes rows of other days (no header): hours,
    # weekdays and values it never saw
    store = prepare("avazu", [AVAZU / "avazu_train_head10k.csv"], tmp_path / "a", progress=False).store
    other = AVAZU / "avazu_multiday6k.csv"
    ids = _ids(store, other, tmp_path)
    want = encode_file(store, other).X
    assert ids.shape == (6000, 24) and np.array_equal(ids, want)  # 21 columns + 3 from hour
    local = ids - np.array([f.offset for f in store.feature_map.fields])
    assert (local == 0).mean() > 0.01  # OOV cells are there to be checked
