"""train.compile: each member's forward through torch.compile gives the eager run's results."""

import copy
import sys
import shutil
from dataclasses import replace

import pytest
import torch
import yaml

from mutualctr.errors import ConfigError, TrainingError
from mutualctr.models import build_model
from mutualctr.training import jobs as api
from mutualctr.training.rundir import ModelCheckpoint
from mutualctr.training.config import run_config_from_dict, with_overrides
from tests.conftest import group, interrupted_at_step, tiny_config

# inductor's CPU backend compiles C++; the refusal without one is tested below either way
needs_cxx = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ for torch.compile's CPU backend")

SMALL = {"embed_dim": 8, "mlp": {"hidden": [32, 16], "dropout": 0.0}}


def _grads(model):
    return {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone() for n, p in model.named_parameters()}


@needs_cxx
# the layers with a hand-written backward: FM, the cross network, _PairDots, _FieldPairs (whose
# per-field loop makes a graph that takes long to compile: 4 fields instead of 7)
@pytest.mark.parametrize("name,fields", [("deepfm", 7), ("dcn", 7), ("pnn", 7), ("fibinet", 4)])
def test_compiled_model_gives_eager_logits_and_gradients(name, fields):
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    eager = build_model(name, 500, fields, dict(SMALL), sparse_grad=True)
    compiled = copy.deepcopy(eager)
    compiled.compile()
    ids, w = torch.randint(0, 500, (64, fields)), torch.randn(64)
    counters.clear()
    out = compiled(ids)
    assert counters["stats"]["unique_graphs"] >= 1  # inductor really compiled a graph of it
    (out * w).sum().backward()
    ref = eager(ids)
    (ref * w).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    got, want = _grads(compiled), _grads(eager)
    assert got.keys() == want.keys()
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=k)


@needs_cxx
def test_compiled_run_matches_eager_and_saves_a_plain_checkpoint(tiny_store, tmp_path):
    cfg = tiny_config(epochs=1)
    ref = api.train(tiny_store, tmp_path / "eager", cfg, quiet=True).to_dict()
    from torch._dynamo.utils import counters

    cfg.train = replace(cfg.train, compile=True)
    counters.clear()
    s = api.train(tiny_store, tmp_path / "compiled", cfg, quiet=True).to_dict()
    assert counters["stats"]["unique_graphs"] >= 1  # the trainer compiled the model
    assert s["test_auc"] == pytest.approx(ref["test_auc"], abs=1e-4)
    a = ModelCheckpoint.load(tmp_path / "eager" / "checkpoints" / "best.pt").state_dict
    b = ModelCheckpoint.load(tmp_path / "compiled" / "checkpoints" / "best.pt").state_dict
    assert a.keys() == b.keys()  # no "_orig_mod." prefixes: any plain model loads it
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)
    saved = run_config_from_dict(yaml.safe_load((tmp_path / "compiled" / "config.yaml").read_text()))
    assert saved.train.compile is True
    assert api.evaluate(tmp_path / "compiled", tiny_store).to_dict()["auc"] == pytest.approx(s["test_auc"], abs=1e-6)


def test_compile_flag_and_its_refusals(tiny_store, tmp_path, monkeypatch):
    assert with_overrides(tiny_config(), compile=True).train.compile is True
    assert with_overrides(tiny_config(), compile=None).train.compile is False
    cfgs = [tiny_config(seed=s, epochs=1) for s in (1, 2)]
    with pytest.raises(TrainingError, match="compile"):
        api.mutual(tiny_store, tmp_path / "g", configs=cfgs, group=group(), compile=True, vectorize=True, quiet=True).to_dict()
    assert not any((tmp_path / "g").glob("*/checkpoints"))  # refused before training wrote anything
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(TrainingError, match="no-such-compiler-xyz"):
        api.train(tiny_store, tmp_path / "r", replace(tiny_config(epochs=1), train=replace(
            tiny_config().train, compile=True)), quiet=True).to_dict()
    assert not (tmp_path / "r" / "checkpoints").exists()


@needs_cxx
def test_compiled_run_resumes_to_the_uninterrupted_result(tiny_store, tmp_path):
    cfg = tiny_config(epochs=2, evals_per_epoch=2)
    cfg.train = replace(cfg.train, compile=True)
    full = api.train(tiny_store, tmp_path / "full", cfg, quiet=True).to_dict()
    with interrupted_at_step(25):  # in epoch 2, after the checkpoint at its start
        api.train(tiny_store, tmp_path / "cut", cfg, quiet=True).to_dict()
    resumed = api.train(tiny_store, tmp_path / "cut", cfg, resume=True, quiet=True).to_dict()
    for k in ("dev_auc", "test_auc", "best_step", "steps"):
        assert resumed[k] == full[k], k
    a = ModelCheckpoint.load(tmp_path / "full" / "checkpoints" / "best.pt").state_dict
    b = ModelCheckpoint.load(tmp_path / "cut" / "checkpoints" / "best.pt").state_dict
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_compile_auto_compiles_long_runs_only_and_records_the_choice(tiny_store, tmp_path, monkeypatch):
    """``compile: auto`` is yes from COMPILE_AUTO_STEPS planned steps (steps per epoch x epochs),
    not vectorised and with a C++ compiler; the run's config.yaml records true or false."""

    from mutualctr.training import device as D

    cpu = torch.device("cpu")
    monkeypatch.setenv("CXX", sys.executable)  # any program on PATH stands for the compiler here
    assert D.resolve_compile("auto", D.COMPILE_AUTO_STEPS, cpu, vectorize=False) is True
    assert D.resolve_compile("auto", D.COMPILE_AUTO_STEPS - 1, cpu, vectorize=False) is False
    assert D.resolve_compile("auto", 10 * D.COMPILE_AUTO_STEPS, cpu, vectorize=True) is False
    assert D.resolve_compile(True, 1, cpu, vectorize=False) is True
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    assert D.resolve_compile("auto", 10 * D.COMPILE_AUTO_STEPS, cpu, vectorize=False) is False  # no error: eager
    cfg = tiny_config(epochs=1)
    cfg.train = replace(cfg.train, compile="auto")
    api.train(tiny_store, tmp_path / "r", cfg, quiet=True)
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["train"]["compile"] is False
    assert with_overrides(tiny_config(), compile="auto").train.compile == "auto"
    with pytest.raises(ConfigError, match="compile"):
        api.train(tiny_store, tmp_path / "bad", tiny_config(), compile="sometimes", quiet=True)
