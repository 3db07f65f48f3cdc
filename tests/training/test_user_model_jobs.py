"""A model mutualctr has never seen (examples/mutualctr_plugins, outside src/) goes everywhere the
built-ins go: train -> mutual with DeepFM -> export --check -> predict, from Python and the CLI;
resume, distill, ensemble, an experiment; and bad models are refused with one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mutualctr as mc
from mutualctr.errors import ConfigError
from mutualctr.serving import ExportError
from mutualctr.training import jobs
from mutualctr.training.config import run_config_from_dict, run_config_to_dict
from tests.conftest import group, interrupted_at_step, tiny_config

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "examples" / "mutualctr_plugins"
MLP = "mutualctr_plugins.mlp:MLP"


@pytest.fixture(scope="module", autouse=True)
def example_on_path():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(PLUGINS))
        yield


def user_config(name: str = MLP, seed: int = 1, epochs: int = 2, **model):
    """tiny_config's loop and optimizer with a user model."""
    data = run_config_to_dict(tiny_config("fm", seed=seed, epochs=epochs))
    data["model"] = {"name": name, **({"embed_dim": 4, "hidden": [16]} if name == MLP else {}), **model}
    return run_config_from_dict(data)


def _env(with_example: bool = True) -> dict[str, str]:
    paths = [str(ROOT / "src"), str(ROOT)] + ([str(PLUGINS)] if with_example else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _cli(*args, with_example: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutualctr", *map(str, args), *(["--threads", "1"] if args[0] in (
        "train", "mutual") else [])], capture_output=True, text=True, env=_env(with_example), cwd=ROOT)


def _raw_rows(path: Path, rows: int = 200) -> Path:
    from mutualctr.data.synth import generate

    generate(rows, path, seed=9, progress=False)
    return path


@pytest.fixture(scope="module")
def runs(tiny_store, tmp_path_factory):
    """A user model trained from Python (given as its class) and a DeepFM run."""
    from mutualctr_plugins.mlp import MLP as MLPClass

    root = tmp_path_factory.mktemp("user_runs")
    mc.train(tiny_store, root / "user", model=MLPClass, config=user_config(seed=3))
    jobs.train(tiny_store, root / "deepfm", tiny_config("deepfm", seed=4), quiet=True)
    return {"user": root / "user", "deepfm": root / "deepfm"}


def test_python_train_mutual_export_predict(runs, tiny_store, tmp_path):
    recorded = yaml.safe_load((runs["user"] / "config.yaml").read_text())["model"]
    assert recorded == {"name": MLP, "embed_dim": 4, "hidden": [16]}
    assert json.loads((runs["user"] / "summary.json").read_text())["test_auc"] > 0.55
    g = mc.mutual(tiny_store, tmp_path / "g", init=[runs["user"], runs["deepfm"]], alpha=1.0, epochs=1,
                  evals_per_epoch=2)
    assert [m.model for m in g.members] == [MLP, "deepfm"]
    member = Path(g.members[0].run_dir)
    assert member.name == "m0-MLP" and g.members[0].test_auc >= g.members[0].start.test_auc - 0.02
    e = mc.export(member, tmp_path / "export", check=True)
    assert e.check is not None and e.check.passed
    p = mc.predict(member, _raw_rows(tmp_path / "rows.txt"), tmp_path / "p.csv", keep=["label"])
    assert p.rows == 200 and 0 < p.auc < 1
    loaded = mc.load_run(member, tiny_store)
    assert type(loaded.model).__module__ == "mutualctr_plugins.mlp"
    assert mc.evaluate(member, tiny_store).auc == pytest.approx(g.members[0].test_auc, abs=1e-12)


def test_cli_train_mutual_export_predict(tiny_store, tmp_path):
    cfg = tmp_path / "mlp.yaml"
    cfg.write_text(yaml.safe_dump(run_config_to_dict(user_config(epochs=1))))
    r = _cli("train", "--data", tiny_store, "--config", cfg, "--out", tmp_path / "u", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{MLP}: best dev AUC")
    r = _cli("mutual", "--data", tiny_store, "--models", f"deepfm,{MLP}", "--seeds", "1,2", "--epochs", "1",
             "--alpha", "1", "--out", tmp_path / "g", "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    members = json.loads(r.stdout)["members"]
    assert [m["model"] for m in members] == ["deepfm", MLP]
    r = _cli("mutual", "--data", tiny_store, "--init", tmp_path / "u", tmp_path / "g" / "m0-deepfm", "--alpha", "1",
             "--epochs", "1", "--evals-per-epoch", "1", "--out", tmp_path / "ft", "--quiet")
    assert r.returncode == 0, r.stderr
    r = _cli("export", "--run", tmp_path / "ft" / "m0-MLP", "--out", tmp_path / "x", "--format", "torchscript",
             "--check")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "x" / "export.json").read_text())["check"]["max_abs_diff"] <= 1e-5
    r = _cli("predict", "--run", tmp_path / "ft" / "m0-MLP", "--input", _raw_rows(tmp_path / "rows.txt"),
             "--out", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "p.csv") as f:
        assert len(list(csv.reader(f))) == 201


def test_resume_of_a_mixed_group_equals_uninterrupted(runs, tiny_store, tmp_path):
    init = [runs["user"], runs["deepfm"]]
    full = jobs.mutual(tiny_store, tmp_path / "full", init=init, group=group(), quiet=True).to_dict()
    with interrupted_at_step(12):
        jobs.mutual(tiny_store, tmp_path / "cut", init=init, group=group(), quiet=True)
    res = jobs.mutual(tiny_store, tmp_path / "cut", init=init, group=group(), resume=True, quiet=True).to_dict()
    for a, b in zip(full["members"], res["members"]):
        assert a["test_auc"] == b["test_auc"] and a["start"] == b["start"] and a["model"] == b["model"]
    assert res["churn"] == full["churn"]


def test_distill_both_ways_and_ensemble(runs, tiny_store, tmp_path):
    from mutualctr_plugins.mlp import MLP as MLPClass

    taught = mc.distill(tiny_store, tmp_path / "kd1", teacher=runs["user"], student=runs["deepfm"], beta=1.0,
                        epochs=1)
    assert taught.settings.mode == "distill" and taught.members[0].model == "deepfm"
    student = mc.distill(tiny_store, tmp_path / "kd2", teacher=runs["deepfm"], student=MLPClass, beta=1.0, epochs=1)
    assert student.members[0].model == MLP and Path(student.members[0].run_dir).name == "m0-MLP"
    e = mc.ensemble([runs["user"], runs["deepfm"]], tiny_store)
    assert [m.model for m in e.members] == [MLP, "deepfm"] and 0.5 < e.auc < 1


def test_a_plain_module_with_dense_gradients_just_works(tiny_store, tmp_path):
    """No FeatureEmbedding: no table for the row-wise optimizer; Adam takes every parameter."""
    cfg = user_config("tests.models.user_models:Plain", dim=4)
    res = jobs.train(tiny_store, tmp_path / "plain", cfg, quiet=True)
    assert res.model == "tests.models.user_models:Plain" and res.test_auc > 0.5
    start = jobs.build(cfg, jobs.open_store(tiny_store)).state_dict()
    trained = mc.load_run(tmp_path / "plain").model.state_dict()
    assert all(not torch.equal(start[k], trained[k]) for k in start)  # the embedding too, by dense Adam
    assert jobs.evaluate(tmp_path / "plain", tiny_store).auc == pytest.approx(res.test_auc, abs=1e-12)


def test_a_run_whose_model_does_not_import_is_refused(runs, tiny_store):
    r = _cli("evaluate", "--run", runs["user"], "--data", tiny_store, with_example=False)
    assert r.returncode == 2 and r.stdout == ""
    line = r.stderr.strip()
    assert "\n" not in line and f"model {MLP}: cannot import module 'mutualctr_plugins.mlp'" in line


@pytest.mark.parametrize("name, model, match", [
    ("tests.models.user_models:WrongShape", {}, r"forward must return float logits of shape \(2,\) for ids of "
                                                r"shape \(2, 39\), got \(2, 1\)"),
    ("tests.models.user_models:NotAModule", {}, "NotAModule is not a torch.nn.Module subclass"),
    (MLP, {"hiden": [8]}, "unknown key model.hiden"),
    ("mutualctr_plugins.nowhere:MLP", {}, "cannot import module 'mutualctr_plugins.nowhere'"),
    ("mutualctr_plugins.mlp", {}, "unknown model 'mutualctr_plugins.mlp'"),
])
def test_bad_user_models_exit_2_with_one_line_and_nothing_written(tiny_store, tmp_path, name, model, match):
    cfg = tmp_path / "bad.yaml"
    data = run_config_to_dict(tiny_config("fm", epochs=1))
    data["model"] = {"name": name, **model}
    cfg.write_text(yaml.safe_dump(data))
    r = _cli("train", "--data", tiny_store, "--config", cfg, "--out", tmp_path / "out", "--quiet")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert __import__("re").search(match, r.stderr), r.stderr
    assert not (tmp_path / "out").exists()


def test_export_of_a_model_that_does_not_trace_names_its_line(tiny_store, tmp_path):
    jobs.train(tiny_store, tmp_path / "dd", user_config("tests.models.user_models:DataDependent", epochs=1),
               quiet=True)
    with pytest.raises(ExportError, match=r"cannot export model tests.models.user_models:DataDependent as onnx: "
                                          r".*\(at user_models.py:\d+ in forward: if int\(ids.max\(\)\)") as e:
        mc.export(tmp_path / "dd", tmp_path / "x", format="onnx")
    assert "\n" not in str(e.value) and not (tmp_path / "x").exists()


def test_experiment_rq3_mixes_a_user_model_with_deepfm(tiny_store, tmp_path):
    from mutualctr.experiments.report import read_results

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "deepfm.yaml").write_text(yaml.safe_dump(run_config_to_dict(tiny_config("deepfm", epochs=1))))
    (configs / "MLP.yaml").write_text(yaml.safe_dump(run_config_to_dict(user_config(epochs=1))))  # DIR/<ClassName>.yaml
    threads = torch.get_num_threads()
    try:
        r = mc.experiment("rq3", tiny_store, tmp_path / "exp", models=["deepfm", MLP], instances=2,
                          config_dir=configs, alphas=[1.0], quiet=True, threads=1)
    finally:
        torch.set_num_threads(threads)
    rows = [x for x in read_results(Path(r["paths"]["results"])) if x["question"] == "rq3"]
    models = {x["model"] for x in rows}
    assert models == {"deepfm", MLP}
    mixed = [x for x in rows if x["setting"] == "dml_different"]
    assert {x["model"] for x in mixed} == {"deepfm", MLP} and all(0.5 < x["test_auc"] < 1 for x in rows)
    assert np.isfinite([x["test_auc"] for x in rows]).all()


def test_given_config_of_another_class_is_refused():
    from mutualctr.models import build_model
    from mutualctr.models.config import ModelConfig

    with pytest.raises(ConfigError, match=f"model {MLP} takes a MLPConfig, got ModelConfig"):
        build_model(MLP, 10, 2, ModelConfig())


def test_resume_of_a_user_model_run_equals_uninterrupted(tiny_store, tmp_path):
    cfg = user_config(seed=5)
    full = jobs.train(tiny_store, tmp_path / "full", cfg, quiet=True)
    with interrupted_at_step(20):
        jobs.train(tiny_store, tmp_path / "cut", cfg, quiet=True)
    res = jobs.train(tiny_store, tmp_path / "cut", cfg, resume=True, quiet=True)
    assert res.test_auc == full.test_auc and res.best_step == full.best_step
