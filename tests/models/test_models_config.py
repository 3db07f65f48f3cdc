"""Strict model configs: unknown keys and names, wrong types and values are ConfigErrors."""

import pytest
import yaml

from mutualctr.config import ConfigError
from mutualctr.models import (
    DCNV2Config, FiBiNETConfig, ModelConfig, PNNConfig, build_model, model_config_from_dict,
)


def test_defaults():
    cfg = model_config_from_dict("fibinet", None)
    assert isinstance(cfg, FiBiNETConfig)
    assert (cfg.embed_dim, cfg.init_std, cfg.embedding_l2, cfg.net_l2) == (16, 1e-4, 0.0, 0.0)
    assert (cfg.mlp.hidden, cfg.mlp.dropout, cfg.mlp.batch_norm) == ([400, 200, 100], 0.0, False)
    assert (cfg.bilinear_type, cfg.reduction_ratio) == ("field_interaction", 3)
    assert model_config_from_dict("dcn", {}).cross_layers == 3
    assert model_config_from_dict("pnn", {}).product == "inner"
    assert model_config_from_dict("dcnv2", {}).low_rank is None


def test_from_yaml_text():
    data = yaml.safe_load("embed_dim: 8\nembedding_l2: 1e-5\nmlp:\n  hidden: [32, 16]\n  batch_norm: true\n")
    cfg = model_config_from_dict("deepfm", data)
    assert cfg.embedding_l2 == 1e-5 and cfg.mlp.hidden == [32, 16] and cfg.mlp.batch_norm


def test_unknown_nested_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key model\.mlp\.hiden \(allowed: batch_norm, dropout, hidden\)"):
        model_config_from_dict("deepfm", {"mlp": {"hiden": [1]}})


def test_key_of_another_model_is_rejected():
    with pytest.raises(ConfigError, match="unknown key model.cross_layers"):
        build_model("deepfm", 10, 2, {"cross_layers": 2})


@pytest.mark.parametrize("data,match", [
    ({"embed_dim": "16"}, "model.embed_dim: expected an integer"),
    ({"mlp": {"hidden": [400, "x"]}}, r"model.mlp.hidden\[1\]"),
    ({"product": "cross"}, "model.product: expected one of"),
    ({"embed_dim": 0}, "embed_dim: must be > 0"),
    ({"mlp": {"dropout": 1.5}}, "mlp.dropout"),
])
def test_bad_values(data, match):
    with pytest.raises(ConfigError, match=match):
        model_config_from_dict("pnn", data)


def test_unknown_model_lists_names():
    with pytest.raises(ConfigError, match="unknown model 'xdeepfm' .*lr, fm, deepfm, dcn, dcnv2, pnn, fibinet"):
        build_model("xdeepfm", 10, 2)


def test_config_objects():
    assert build_model("pnn", 10, 3, PNNConfig(embed_dim=4, product="outer")).product.kernel.shape == (3, 4, 4)
    assert build_model("dcnv2", 10, 3, DCNV2Config(low_rank=2)).cross.weight[0].shape == (48, 2)
    with pytest.raises(ConfigError, match="takes a PNNConfig"):
        build_model("pnn", 10, 3, ModelConfig())
