"""Quality floor on the real Criteo sample (issue 4): skipped when ../shared/data is absent.

Sequential 80/10/10 split of criteo_random137k (file order = time order), shipped configs.
PNN and FiBiNET are measured in docs/training.md; they are too slow for CI's 2 cores here.
"""

from dataclasses import replace

import pytest

from mutualctr.data.prepare import prepare
from mutualctr.training import jobs as api
from tests.conftest import SHARED_DATA

CRITEO = SHARED_DATA / "criteo" / "criteo_random137k.txt.gz"

pytestmark = [pytest.mark.realdata, pytest.mark.skipif(not CRITEO.is_file(), reason=f"{CRITEO} absent")]


@pytest.fixture(scope="module")
def criteo_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("criteo") / "store"
    prepare("criteo", [CRITEO], out, split="sequential", progress=False)
    return out


@pytest.mark.parametrize("model,epochs", [("deepfm", 3), ("dcn", 4)])
def test_shipped_config_reaches_the_floor(criteo_store, tmp_path, model, epochs):
    cfg = api.default_config(model, "criteo")
    cfg = replace(cfg, train=replace(cfg.train, epochs=epochs, device="cpu"))
    s = api.train(criteo_store, tmp_path / model, cfg, quiet=True).to_dict()
    assert s["test_auc"] >= 0.745, s
