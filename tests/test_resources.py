"""The shipped configs and schemas (mutualctr.resources) and the one config lookup, find_config."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mutualctr import resources
from mutualctr.cli import app
from mutualctr.config import ConfigError
from mutualctr.models import MODELS
from mutualctr.resources import ConfigFallbackWarning
from mutualctr.training.shipped import find_config
from mutualctr.training import jobs as api
from mutualctr.training.config import RunConfig, load_run_config, run_config_from_dict

CHECKOUT_CONFIGS = Path(__file__).resolve().parents[1] / "src" / "mutualctr" / "configs"


def _no_warning(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


def test_the_package_reads_the_checkouts_configs_directory():
    assert Path(str(resources.configs_root())) == CHECKOUT_CONFIGS
    assert resources.shipped_datasets() == ["avazu", "criteo"]
    assert resources.schema_names() == ["avazu_noheader", "criteo_csv", "example_shop", "ml100k"]
    assert resources.schema_path("example_shop") == CHECKOUT_CONFIGS / "schemas" / "example_shop.yaml"
    with pytest.raises(KeyError, match="no shipped schema 'nope'"):
        resources.schema_path("nope")


@pytest.mark.parametrize("dataset", ["criteo", "avazu"])
def test_every_model_has_a_shipped_config_per_dataset_and_it_is_the_file(dataset):
    assert resources.shipped_models(dataset) == sorted(MODELS)
    for model in MODELS:
        c = _no_warning(find_config, model, dataset)
        assert (c.origin, c.where, c.note) == ("shipped", f"mutualctr/configs/{dataset}/{model}.yaml", "")
        assert c.config == load_run_config(CHECKOUT_CONFIGS / dataset / f"{model}.yaml")
        assert c.config.model_name == model and _no_warning(api.default_config, model, dataset) == c.config


def test_shipped_values_are_the_papers_protocol():
    """What docs/results.md measured: Criteo lr 3e-3 (LR 2e-2), Avazu 1e-3; embedding L2 1e-5."""
    for dataset in ("criteo", "avazu"):
        for model in MODELS:
            raw = yaml.safe_load((CHECKOUT_CONFIGS / dataset / f"{model}.yaml").read_text())
            want_lr = (2e-2 if model == "lr" else 3e-3) if dataset == "criteo" else 1e-3
            assert raw["optim"]["lr"] == want_lr, (dataset, model)
            assert raw["model"]["embedding_l2"] == 1e-5 and raw["train"]["batch_size"] == 4000
    builtin = RunConfig()
    assert builtin.optim.lr == 1e-3  # the dataclass defaults are not the paper's protocol


@pytest.mark.parametrize("dataset", ["shop", None])
def test_a_dataset_without_configs_gets_criteos_and_a_warning(dataset):
    with pytest.warns(ConfigFallbackWarning) as rec:
        c = find_config("deepfm", dataset)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert ("dataset 'shop' has no shipped configs" if dataset else "no dataset given") in msg
    assert "mutualctr/configs/criteo/deepfm.yaml" in msg
    assert c.origin == "fallback" and c.where == "mutualctr/configs/criteo/deepfm.yaml" and c.note == msg
    assert c.config == load_run_config(CHECKOUT_CONFIGS / "criteo" / "deepfm.yaml")
    assert (c.config.optim.lr, c.config.model["embedding_l2"]) == (3e-3, 1e-5)
    assert c.config != run_config_from_dict({"model": {"name": "deepfm"}})
    with pytest.warns(ConfigFallbackWarning, match="has no shipped configs|no dataset given"):
        assert api.default_config("deepfm", dataset) == c.config


def test_schemas_is_not_a_dataset():
    with pytest.warns(ConfigFallbackWarning, match="dataset 'schemas' has no shipped configs"):
        assert find_config("dcn", "schemas").origin == "fallback"


def test_config_dir_first_then_the_shipped_ones_with_a_warning(tmp_path):
    (tmp_path / "criteo").mkdir()
    mine = {"model": {"name": "dcn", "embed_dim": 8}, "optim": {"lr": 5e-4}}
    (tmp_path / "criteo" / "dcn.yaml").write_text(yaml.safe_dump(mine))
    (tmp_path / "dcn.yaml").write_text(yaml.safe_dump({**mine, "optim": {"lr": 7e-4}}))
    c = _no_warning(find_config, "dcn", "criteo", tmp_path)
    assert (c.origin, c.where, c.config.optim.lr) == ("config_dir", str(tmp_path / "criteo" / "dcn.yaml"), 5e-4)
    c = _no_warning(find_config, "dcn", "shop", tmp_path)  # DIR/<model>.yaml serves any dataset
    assert (c.origin, c.config.optim.lr) == ("config_dir", 7e-4)
    with pytest.warns(ConfigFallbackWarning, match=f"no criteo/pnn.yaml or pnn.yaml in {tmp_path}"):
        c = find_config("pnn", "criteo", tmp_path)
    assert (c.origin, c.config.optim.lr) == ("shipped", 3e-3)
    with pytest.warns(ConfigFallbackWarning, match=f"no shop/pnn.yaml or pnn.yaml in {tmp_path}; dataset 'shop'"):
        assert find_config("pnn", "shop", tmp_path).origin == "fallback"


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="nosuch"):
        find_config("nosuch", "criteo")


def test_a_model_without_shipped_configs_gets_the_builtin_defaults_and_a_warning(monkeypatch):
    monkeypatch.setattr(resources, "shipped_models", lambda dataset: [])
    with pytest.warns(ConfigFallbackWarning, match="no shipped config for model 'fm'.*lr 0.001"):
        c = find_config("fm", "criteo")
    assert (c.origin, c.where) == ("builtin", "built-in defaults")
    assert c.config == run_config_from_dict({"model": {"name": "fm"}})


def test_cli_train_on_a_user_schema_warns_in_one_line_and_records_criteos_config(tmp_path):
    """A store of one's own schema, trained without --config: the warning is printed, the
    run's config.yaml holds the Criteo config of the model."""
    from mutualctr.data.prepare import prepare

    schema = tmp_path / "shop.yaml"
    schema.write_text("name: shop\nformat: csv\nheader: true\nlabel: clicked\ncategorical: [user, item]\n")
    lines = ["user,item,clicked"] + [f"u{i % 37},i{(i * 7) % 23},{int(i % 5 == 0)}" for i in range(1000)]
    (tmp_path / "shop.csv").write_text("\n".join(lines) + "\n")
    store = prepare(schema, [tmp_path / "shop.csv"], tmp_path / "store", progress=False).store
    assert store.feature_map.dataset == "shop"
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "store"), "--model", "lr", "--out",
                                   str(tmp_path / "run"), "--epochs", "1", "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    warned = [ln for ln in res.output.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and "dataset 'shop' has no shipped configs" in warned[0]
    assert "mutualctr/configs/criteo/lr.yaml" in warned[0]
    got = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert got["optim"]["lr"] == 2e-2 and got["model"]["embedding_l2"] == 1e-5 and got["train"]["epochs"] == 1


def test_version_flag_prints_the_package_version():
    """One source: mutualctr.__version__; pyproject reads it (the wheel's metadata: tests/test_packaging.py)."""
    import tomllib

    import mutualctr

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output == f"mutualctr {mutualctr.__version__}\n"
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mutualctr.__version__"}
