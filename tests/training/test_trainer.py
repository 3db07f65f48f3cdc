import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import warnings

import pytest
import torch

from mutualctr.config import ConfigError
from mutualctr.errors import CheckpointError, TrainingError
from mutualctr.training import jobs as api
from mutualctr.training.rundir import GroupCheckpoint, ModelCheckpoint
from mutualctr.training.config import run_config_from_dict, run_config_to_dict
from mutualctr.training.trainer import Trainer
from tests.conftest import group, interrupted_at_step, tiny_config


def _state(run: Path) -> dict:
    return ModelCheckpoint.load(run / "checkpoints" / "best.pt").state_dict


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_train_writes_a_complete_run(tiny_store, tmp_path):
    out = tmp_path / "run"
    s = api.train(tiny_store, out, tiny_config(epochs=3), quiet=True).to_dict()
    for f in ["config.yaml", "metrics.jsonl", "summary.json", "checkpoints/best.pt", "checkpoints/last.pt"]:
        assert (out / f).is_file(), f
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    assert {"step", "epoch", "lr", "train_loss", "dev_auc", "dev_logloss", "samples_per_s"} <= set(lines[0])
    # the learning rate decays per step (exp schedule)
    assert lines[0]["lr"] > lines[-1]["lr"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_auc"] == s["test_auc"]
    assert summary["dev_auc"] == max(l["dev_auc"] for l in lines)
    assert s["test_auc"] > 0.6  # synthetic data carries a clear signal
    ev = api.evaluate(out, tiny_store, "test").to_dict()
    assert ev["auc"] == pytest.approx(s["test_auc"], abs=1e-12)


def test_same_seed_same_metrics_and_weights(tiny_store, tmp_path):
    a = api.train(tiny_store, tmp_path / "a", tiny_config(seed=5), quiet=True).to_dict()
    b = api.train(tiny_store, tmp_path / "b", tiny_config(seed=5), quiet=True).to_dict()
    c = api.train(tiny_store, tmp_path / "c", tiny_config(seed=6), quiet=True).to_dict()
    assert a["test_auc"] == b["test_auc"] and a["dev_logloss"] == b["dev_logloss"]
    _assert_same_weights(_state(tmp_path / "a"), _state(tmp_path / "b"))
    assert a["test_auc"] != c["test_auc"]


@pytest.mark.parametrize("model", ["lr", "fm", "deepfm", "dcn", "dcnv2", "pnn", "fibinet"])
def test_every_model_trains(model, tiny_store, tmp_path):
    s = api.train(tiny_store, tmp_path / model, tiny_config(model, epochs=3, lr=1e-2), quiet=True).to_dict()
    assert 0.55 < s["test_auc"] <= 1.0


def test_dense_embedding_optimizer_trains_too(tiny_store, tmp_path):
    s = api.train(tiny_store, tmp_path / "dense", tiny_config(embedding_optimizer="dense", epochs=1), quiet=True).to_dict()
    assert s["test_auc"] > 0.6


def test_bf16_precision_trains_close_to_fp32_and_keeps_fp32_state(tiny_store, tmp_path):
    from dataclasses import replace

    cfg = tiny_config(epochs=2)
    ref = api.train(tiny_store, tmp_path / "fp32", cfg, quiet=True).to_dict()
    cfg.train = replace(cfg.train, precision="bf16")
    s = api.train(tiny_store, tmp_path / "bf16", cfg, quiet=True).to_dict()
    assert s["test_auc"] != ref["test_auc"]  # it really ran in bf16
    assert abs(s["test_auc"] - ref["test_auc"]) < 0.01
    assert all(t.dtype == torch.float32 for t in _state(tmp_path / "bf16").values() if t.is_floating_point())
    saved = run_config_from_dict(__import__("yaml").safe_load((tmp_path / "bf16" / "config.yaml").read_text()))
    assert saved.train.precision == "bf16"
    assert s["precision"] == "bf16" and ref["precision"] == "fp32"


@pytest.mark.parametrize("flags, chosen", [({"avx2"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16"),
                                           ({"amx_bf16"}, "bf16")])
def test_auto_precision_is_chosen_once_and_recorded(tiny_store, tmp_path, monkeypatch, flags, chosen):
    """The default (auto) resolves when the run starts, by the CPU's flags; config.yaml and
    summary.json record the choice, and a resume keeps it whatever the CPU it resumes on."""
    from dataclasses import replace

    from mutualctr.training import device as D

    monkeypatch.setattr(D, "cpu_flags", lambda: flags)
    cfg = tiny_config(epochs=1)
    cfg.train = replace(cfg.train, precision="auto")
    s = api.train(tiny_store, tmp_path / "r", cfg, quiet=True).to_dict()
    saved = run_config_from_dict(__import__("yaml").safe_load((tmp_path / "r" / "config.yaml").read_text()))
    assert s["precision"] == saved.train.precision == chosen
    assert s["test_auc"] == api.evaluate(tmp_path / "r", tiny_store).auc  # scored in fp32 both times
    other = {"avx2"} if chosen == "bf16" else {"amx_bf16"}
    monkeypatch.setattr(D, "cpu_flags", lambda: other)
    cfg.train = replace(cfg.train, epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = api.train(tiny_store, tmp_path / "r", cfg, quiet=True, resume=True).to_dict()
    assert resumed["precision"] == chosen
    assert any("emulated" in str(w.message) for w in caught) == (chosen == "bf16")


def test_precision_and_eval_batch_are_checked():
    from mutualctr.training.config import with_overrides
    from mutualctr.training.inference import eval_batch

    with pytest.raises(ConfigError, match="precision"):
        with_overrides(tiny_config(), precision="fp8")
    with pytest.raises(ConfigError, match="precision"):
        run_config_from_dict({"train": {"precision": "half"}})
    with pytest.raises(ConfigError, match="eval_batch_size"):
        run_config_from_dict({"train": {"eval_batch_size": -1}})
    assert eval_batch(0, torch.device("cpu")) == 2048 and eval_batch(500, torch.device("cpu")) == 500


def test_resume_after_interruption_equals_uninterrupted(tiny_store, tmp_path):
    cfg = tiny_config(epochs=3, evals_per_epoch=2)
    full = api.train(tiny_store, tmp_path / "full", cfg, quiet=True).to_dict()

    with interrupted_at_step(40):  # mid-epoch 2, after a checkpoint
        api.train(tiny_store, tmp_path / "cut", cfg, quiet=True).to_dict()
    with pytest.raises(CheckpointError, match="--resume"):
        api.train(tiny_store, tmp_path / "cut", cfg, quiet=True).to_dict()
    resumed = api.train(tiny_store, tmp_path / "cut", cfg, resume=True, quiet=True).to_dict()
    for k in ("dev_auc", "dev_logloss", "test_auc", "test_logloss", "best_step", "steps"):
        assert resumed[k] == full[k], k
    _assert_same_weights(_state(tmp_path / "full"), _state(tmp_path / "cut"))
    full_lines = [json.loads(l)["dev_auc"] for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    cut_lines = [json.loads(l)["dev_auc"] for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert full_lines == cut_lines


def test_resume_after_kill_9_equals_uninterrupted(tiny_store, tmp_path):
    cfg = tiny_config(epochs=4, evals_per_epoch=2)
    cfg_file = tmp_path / "cfg.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(run_config_to_dict(cfg)))
    cmd = [sys.executable, "-m", "mutualctr", "train", "--data", str(tiny_store), "--config", str(cfg_file),
           "--quiet", "--json"]
    full = subprocess.run(cmd + ["--out", str(tmp_path / "full")], capture_output=True, text=True, check=True)
    full = json.loads(full.stdout)
    run = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:
        time.sleep(0.05)  # land somewhere in the middle, possibly mid-write
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    res = subprocess.run(cmd + ["--out", str(run), "--resume"], capture_output=True, text=True, check=True)
    res = json.loads(res.stdout)
    assert killed, "the run finished before it could be killed; enlarge it"
    for k in ("dev_auc", "test_auc", "test_logloss", "best_step"):
        assert res[k] == full[k], k


def test_checkpoint_against_another_store_fails_clearly(tiny_store, other_store, tmp_path):
    api.train(tiny_store, tmp_path / "r", tiny_config(epochs=1), quiet=True).to_dict()
    with pytest.raises(CheckpointError, match="fingerprint"):
        api.evaluate(tmp_path / "r", other_store).to_dict()
    with pytest.raises(CheckpointError, match="fingerprint"):
        api.mutual(other_store, tmp_path / "g", init=[tmp_path / "r"] * 2, group=group(), quiet=True).to_dict()


def test_corrupt_truncated_and_missing_checkpoints(tiny_store, tmp_path):
    api.train(tiny_store, tmp_path / "r", tiny_config(epochs=1), quiet=True).to_dict()
    best = tmp_path / "r" / "checkpoints" / "best.pt"
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        api.evaluate(tmp_path / "r", tiny_store).to_dict()
    best.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"not a mutualctr checkpoint \(unreadable: ") as e:
        api.evaluate(tmp_path / "r", tiny_store).to_dict()
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)  # never torch's advice
    with pytest.raises(CheckpointError, match="no such run"):
        api.evaluate(tmp_path / "nope", tiny_store).to_dict()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_store, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=3)
    orig = Trainer.group_losses
    calls = {"n": 0}

    def poisoned(self, ids, labels):
        calls["n"] += 1
        losses = orig(self, ids, labels)
        if calls["n"] >= 25:  # epoch 2, after the epoch-1 checkpoint
            losses = [l * float("nan") for l in losses]
        return losses

    monkeypatch.setattr(Trainer, "group_losses", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 25 .*last good checkpoint .*step 19"):
        api.train(tiny_store, tmp_path / "r", cfg, quiet=True).to_dict()
    ck = GroupCheckpoint.load(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ck.loop.step == 19
    assert all(torch.isfinite(v).all() for v in ck.members[0].model.values() if v.is_floating_point())
    assert api.evaluate(tmp_path / "r", tiny_store).to_dict()["auc"] > 0.5


def test_unknown_config_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown key train.epoch"):
        run_config_from_dict({"model": {"name": "deepfm"}, "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown model"):
        run_config_from_dict({"model": {"name": "deepfn"}})
    with pytest.raises(ConfigError, match="optim.lr"):
        run_config_from_dict({"model": {"name": "deepfm"}, "optim": {"lr": "fast"}})


def test_missing_store_is_a_clear_error(tmp_path):
    from mutualctr.errors import StoreError

    with pytest.raises(StoreError):
        api.train(tmp_path / "nostore", tmp_path / "r", tiny_config(), quiet=True).to_dict()


def test_shipped_configs_load():
    from mutualctr.resources import configs_root
    from mutualctr.training.config import load_run_config

    root = Path(str(configs_root()))
    files = sorted(root.glob("criteo/*.yaml")) + sorted(root.glob("avazu/*.yaml"))
    assert len(files) >= 14
    for f in files:
        cfg = load_run_config(f)
        assert cfg.train.batch_size == 4000 and cfg.model.get("embed_dim", 16) == 16


def test_sparse_and_dense_optimizer_agree_on_first_step(tiny_store):
    """One step from the same start: rowwise and dense Adam give the same touched rows."""
    from mutualctr.data.store import Store
    from mutualctr.training.optim import build_optimizers

    store = Store.open(tiny_store)
    X, y = store.split("train")
    ids = torch.from_numpy(np.asarray(X[:256], dtype=np.int64))
    labels = torch.from_numpy(np.asarray(y[:256], dtype=np.float32).copy())
    results = []
    for mode in ("rowwise", "dense"):
        cfg = tiny_config(embedding_optimizer=mode)
        model = api.build(cfg, store, seed=3)
        opts = build_optimizers(model, cfg.optim)
        from mutualctr.models import l2_penalty
        from mutualctr.training.losses import bce

        (bce(model(ids), labels) + l2_penalty(model, ids)).backward()
        for o in opts:
            o.step()
        results.append(model.state_dict())
    touched = torch.unique(ids)
    a, b = results
    for k in a:
        if a[k].shape[:1] == (store.feature_map.num_features,):
            torch.testing.assert_close(a[k][touched], b[k][touched], rtol=1e-5, atol=1e-7)
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)


def test_mid_epoch_checkpoints_resume_to_the_uninterrupted_result(tiny_store, tmp_path):
    """train.checkpoint_every: a checkpoint between evaluations (here after every step); a run
    killed between two evaluations resumes from it to the same weights, metrics and history."""
    from dataclasses import replace

    cfg = tiny_config(epochs=2, evals_per_epoch=1)
    cfg.train = replace(cfg.train, checkpoint_every=1e-9)  # the step interval rounds up to 1
    full = api.train(tiny_store, tmp_path / "full", cfg, quiet=True).to_dict()
    with interrupted_at_step(27):  # epoch 2, 8 steps after its last evaluation
        api.train(tiny_store, tmp_path / "cut", cfg, quiet=True).to_dict()
    ck = GroupCheckpoint.load(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert ck.loop.step == 26 and ck.loop.batch_in_epoch == 7 and ck.loop.window["steps"] == 7
    resumed = api.train(tiny_store, tmp_path / "cut", cfg, resume=True, quiet=True).to_dict()
    for k in ("dev_auc", "dev_logloss", "test_auc", "test_logloss", "best_step", "steps"):
        assert resumed[k] == full[k], k
    _assert_same_weights(_state(tmp_path / "full"), _state(tmp_path / "cut"))
    lines = [[(r["step"], r["train_loss"], r["dev_auc"]) for r in map(json.loads, (tmp_path / d / "metrics.jsonl")
              .read_text().splitlines())] for d in ("full", "cut")]
    assert lines[0] == lines[1]  # the mean training loss of the interrupted window included


def test_resume_with_nothing_to_resume_starts_fresh_and_says_so(tiny_store, tmp_path, capfd):
    cfg = tiny_config(epochs=1)
    fresh = api.train(tiny_store, tmp_path / "a", cfg, quiet=True).to_dict()
    resumed = api.train(tiny_store, tmp_path / "b", cfg, resume=True, quiet=True).to_dict()
    assert "nothing to resume" in capfd.readouterr().err
    assert resumed["test_auc"] == fresh["test_auc"]


def test_a_runaway_loss_stops_the_run_naming_the_step_and_the_last_checkpoint(tiny_store, tmp_path):
    cfg = tiny_config(epochs=5, lr=50.0)
    with pytest.raises(TrainingError, match=r"(ran away|non-finite loss) at step \d+.*(last good checkpoint|nothing kept)"):
        api.train(tiny_store, tmp_path / "r", cfg, quiet=True).to_dict()
    from dataclasses import replace

    calm = tiny_config(epochs=1)
    calm.train = replace(calm.train, divergence_factor=1.0001)  # any rise at all counts
    with pytest.raises(ConfigError, match="divergence_factor"):
        replace(calm.train, divergence_factor=0.5)


def test_a_runaway_loss_is_caught_in_a_run_shorter_than_any_window(tiny_store, tmp_path):
    """Issue 28 item 1: one epoch (19 steps, fewer than the old rule's 3 x 20) at lr 50 stops at
    its second step, naming the step and the loss; a new run with no checkpoint leaves nothing."""
    for model, lr in (("deepfm", 50.0), ("lr", 1e6), ("dcn", 1e4)):
        cfg = tiny_config(model, epochs=1, lr=lr)
        with pytest.raises(TrainingError, match=r"(ran away|non-finite loss) at step [23] ") as e:
            api.train(tiny_store, tmp_path / model, cfg, quiet=True)
        assert "nothing kept" in str(e.value) and not (tmp_path / model).exists(), str(e.value)


@pytest.mark.parametrize("model", ["lr", "fm", "deepfm", "dcn", "dcnv2", "pnn", "fibinet"])
def test_the_shipped_configs_and_a_finetuning_stay_far_below_the_divergence_rule(tiny_store, tmp_path, model):
    """Normal runs never trip it: each shipped criteo config at its learning rate (batches of 256:
    many steps) and a mutual finetuning of two such runs at a large alpha, with the factor at 3
    instead of 10 (a margin of 3x)."""
    from dataclasses import replace

    cfg = api.default_config(model, "criteo")
    cfg.train = replace(cfg.train, batch_size=256, epochs=2, device="cpu", prefetch=0, divergence_factor=3.0)
    runs = [api.train(tiny_store, tmp_path / f"r{s}", replace(cfg, train=replace(cfg.train, seed=s)),
                      quiet=True).run_dir for s in (1, 2)]
    assert all((Path(r) / "summary.json").is_file() for r in runs)
    if model in ("deepfm", "lr"):
        from mutualctr.training.config import MutualConfig

        g = api.mutual(tiny_store, tmp_path / "g", init=runs, group=MutualConfig(alpha=1000.0, lr=1e-3, epochs=2),
                       quiet=True)
        assert len(g.members) == 2


def test_bf16_is_refused_where_it_is_not_native_and_auto_falls_back(monkeypatch):
    from mutualctr.training import device as D

    monkeypatch.setattr(D, "cpu_flags", lambda: {"avx2", "fma"})
    with pytest.raises(TrainingError, match="no native bf16"):
        D.resolve_precision("bf16", torch.device("cpu"))
    assert D.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(D, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert D.resolve_precision("auto", torch.device("cpu")) == "bf16"
    assert D.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert D.resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_tensorboard_scalars_are_the_metrics_jsonl_records(tiny_store, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    api.train(tiny_store, tmp_path / "r", tiny_config(epochs=2, evals_per_epoch=2), quiet=True,
              tensorboard=tmp_path / "tb").to_dict()
    records = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    for key in ("train_loss", "dev_auc", "dev_logloss", "lr"):
        events = acc.Scalars(f"r/{key}")
        assert [e.step for e in events] == [r["step"] for r in records]
        assert [e.value for e in events] == pytest.approx([r[key] for r in records], rel=1e-6)
