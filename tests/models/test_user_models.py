"""User models: import strings, entry points, classes and factories; the public layers; bad input."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mutualctr.models.layers as layers
from mutualctr.errors import ConfigError
from mutualctr.models import build_model, canonical_model_name, is_builtin, model_config_from_dict, plugins
from mutualctr.models.plugins import Features, import_string
from mutualctr.training.config import run_config_from_dict, with_overrides
from tests.models import user_models

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "examples" / "mutualctr_plugins"
MLP = "mutualctr_plugins.mlp:MLP"
FEATURES = Features.anonymous(50, 3)


@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


def _fake_entry_points(monkeypatch, *eps: importlib.metadata.EntryPoint):
    def entry_points(**kw):
        assert kw == {"group": plugins.ENTRY_POINT_GROUP}
        return importlib.metadata.EntryPoints(eps)

    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", entry_points)


def test_public_layers_are_exported():
    for name in ("FeatureEmbedding", "FeatureLinear", "MLP", "FactorizationMachine", "CrossNet", "CrossNetV2",
                 "InnerProduct", "OuterProduct", "SENET", "Bilinear", "field_pairs"):
        assert name in layers.__all__ and getattr(layers, name) is not None
    emb = layers.FeatureEmbedding(10, 4, sparse_grad=True)
    out = layers.FactorizationMachine()(emb(torch.tensor([[1, 2, 3]])))
    assert out.shape == (1,)


def test_import_string_builds_the_example_with_its_strict_config(example_on_path):
    model = build_model(MLP, 50, 3, {"embed_dim": 4, "hidden": [8]}, sparse_grad=True)
    assert type(model).__name__ == "MLP" and model.embedding.sparse_grad and model.embedding.dim == 4
    assert model(torch.tensor([[1, 2, 3], [4, 5, 6]])).shape == (2,)
    with pytest.raises(ConfigError, match=r"unknown key model.mlp \(allowed: dropout, embed_dim"):
        model_config_from_dict(MLP, {"mlp": {"hidden": [8]}})
    with pytest.raises(ConfigError, match="model: embed_dim must be >= 1, got 0"):
        model_config_from_dict(MLP, {"embed_dim": 0})
    assert not is_builtin(MLP) and is_builtin("deepfm")


def test_a_class_or_factory_given_from_python_is_recorded_as_its_import_string():
    assert import_string(user_models.Plain) == "tests.models.user_models:Plain"
    assert import_string(user_models.make_plain) == "tests.models.user_models:make_plain"
    model = build_model("tests.models.user_models:make_plain", 50, 3, {"dim": 2})
    assert isinstance(model, user_models.Plain) and model.emb.embedding_dim == 2

    class Local(torch.nn.Module):
        pass

    with pytest.raises(ConfigError, match="defined at module level"):
        import_string(Local)


@pytest.mark.parametrize("name, match", [
    ("mlpp", r"unknown model 'mlpp' \(known: lr, fm, deepfm.*import string package.module:ClassName\)"),
    ("no_such_pkg.mod:Cls", "model no_such_pkg.mod:Cls: cannot import module 'no_such_pkg.mod': ModuleNotFoundError"),
    ("tests.models.user_models:Missing", "module 'tests.models.user_models' has no attribute 'Missing'"),
    ("tests.models.user_models:NotAModule", "NotAModule is not a torch.nn.Module subclass"),
    ("tests.models.user_models:returns_a_dict", "built a dict, not a torch.nn.Module"),
    ("pkg:Cls:Extra", "not a built-in model, an installed entry point, or an import string"),
])
def test_bad_import_strings_are_one_line(name, match):
    with pytest.raises(ConfigError, match=match) as e:
        build_model(name, 50, 3)
    assert "\n" not in str(e.value)


def test_a_wrong_output_shape_names_the_model_and_the_shape():
    model = build_model("tests.models.user_models:WrongShape", 50, 3)
    with pytest.raises(ConfigError, match=r"model tests.models.user_models:WrongShape: forward must return float "
                                          r"logits of shape \(2,\) for ids of shape \(2, 3\), got \(2, 1\)"):
        plugins.check_output(model, "tests.models.user_models:WrongShape", torch.tensor([[1, 2, 3], [4, 5, 6]]))
    plugins.check_output(build_model("tests.models.user_models:Plain", 50, 3), "x", torch.zeros(2, 3, dtype=torch.long))


def test_entry_points_are_found_and_recorded_as_their_target(monkeypatch, example_on_path):
    _fake_entry_points(monkeypatch, importlib.metadata.EntryPoint("plugin-mlp", MLP, plugins.ENTRY_POINT_GROUP))
    assert canonical_model_name("plugin-mlp") == MLP
    cfg = run_config_from_dict({"model": {"name": "plugin-mlp", "embed_dim": 4}})
    assert cfg.model == {"name": MLP, "embed_dim": 4}  # config.yaml records the import string
    assert plugins.installed() == [("plugin-mlp", MLP, "?")]
    # a flag switching the architecture keeps the keys the new config understands
    moved = with_overrides(run_config_from_dict({"model": {"name": "deepfm", "embed_dim": 4}}), model="plugin-mlp")
    assert moved.model == {"name": MLP, "embed_dim": 4}


def test_a_broken_entry_point_is_one_line(monkeypatch):
    _fake_entry_points(monkeypatch, importlib.metadata.EntryPoint("broken", "nowhere_pkg:X", plugins.ENTRY_POINT_GROUP))
    with pytest.raises(ConfigError, match=r"model broken: entry point nowhere_pkg:X \(from \?\) cannot be loaded"):
        canonical_model_name("broken")


def test_models_command_lists_built_ins_and_an_installed_plugin(tmp_path):
    """A real dist-info on the path (what pip install -e writes): importlib.metadata finds it."""
    dist = tmp_path / "mutualctr_plugins-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mutualctr-plugins\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[mutualctr.models]\nplugin-mlp = {MLP}\n")
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{tmp_path}:{PLUGINS}", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "mutualctr", "models"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "built in: lr, fm, deepfm, dcn, dcnv2, pnn, fibinet (mutualctr)"
    assert f"plugin-mlp: {MLP} (entry point of mutualctr-plugins)" in lines
