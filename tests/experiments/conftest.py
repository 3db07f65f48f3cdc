"""Fixtures for the experiment tests: a fake training API (fast, countable, interruptible) and a
config dir of tiny models for the real integration test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


class _FakeStore:
    fingerprint = "fake-fingerprint"

    class feature_map:  # noqa: N801 - mimics Store.feature_map
        dataset = "criteo"

    def split(self, name):
        rng = np.random.default_rng(7)
        X = rng.integers(0, 50, size=(400, 3)).astype(np.int32)
        y = (rng.random(400) < 0.3).astype(np.float32)
        return X, y


class _FakeModel(torch.nn.Module):
    """Logits = a seed-dependent linear function of the ids (so models differ, deterministically)."""

    def __init__(self, shift: float):
        super().__init__()
        self.shift = shift

    def forward(self, ids):
        return torch.sin(ids.float().sum(1) * (1.0 + self.shift))


class FakeAPI:
    """Stands in for mutualctr.training.jobs: writes the same marker files, computes no gradients.

    Pretrained quality: dev/test AUC = 0.70 + 0.001 * seed (+ 0.01 for dcn). Mutual finetuning adds
    0.002 * alpha + 0.001, the alpha-0 control 0.001, distillation 0.0015, scratch -0.0005.
    ``fail_at``: raise on that training call (1-based), after leaving a started checkpoint behind.
    """

    def __init__(self):
        from mutualctr.training import jobs as real

        self.real = real
        self._default_config = real.default_config  # saved before the fixture patches the module
        self.calls: list[tuple[str, Path, bool]] = []
        self.fail_at: int | None = None

    # the parts the experiment uses
    def open_store(self, path):
        return _FakeStore()

    def default_config(self, model, dataset=None, config_dir=None):
        return self._default_config(model, "criteo", None)

    def _call(self, kind: str, out: Path, resume: bool) -> None:
        self.calls.append((kind, Path(out), resume))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            (Path(out) / "checkpoints").mkdir(parents=True, exist_ok=True)
            (Path(out) / "checkpoints" / "last.pt").write_bytes(b"started")
            raise KeyboardInterrupt("simulated interruption")

    def train(self, store_path, out, cfg, resume=False, quiet=False):
        out = Path(out)
        self._call("train", out, resume)
        base = 0.70 + 0.001 * cfg.train.seed + (0.01 if cfg.model_name == "dcn" else 0.0)
        s = {"model": cfg.model_name, "run_dir": str(out), "seed": cfg.train.seed, "dev_auc": base,
             "dev_logloss": 0.5, "test_auc": base - 0.0002, "test_logloss": 0.5, "train_time_s": 1.0}
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(s))
        return s

    def mutual(self, store_path, out, *, init=(), models=(), seeds=(), configs=(), teachers=(), group=None,
               resume=False, quiet=False, **kw):
        out = Path(out)
        alpha, lr = group.alpha, group.lr
        models = models or [c.model_name for c in configs]
        self._call("mutual", out, resume)
        members = []
        if init:
            for i, run in enumerate(init):
                s0 = json.loads((Path(run) / "summary.json").read_text())
                gain = 0.0015 if teachers else (0.002 * alpha + 0.001 if alpha > 0 else 0.001)
                start = {k: s0[k] for k in ("dev_auc", "dev_logloss", "test_auc", "test_logloss")}
                members.append({**s0, "run_dir": str(out / f"m{i}-{s0['model']}"), "dev_auc": s0["dev_auc"] + gain,
                                "test_auc": s0["test_auc"] + gain, "start": start, "kept_start": False,
                                "relaimp_test": self.real.relaimp(s0["test_auc"] + gain, s0["test_auc"])})
        else:
            for i, (m, s) in enumerate(zip(models, seeds)):
                base = 0.70 + 0.001 * s + (0.01 if m == "dcn" else 0.0) - 0.0005
                members.append({"model": m, "run_dir": str(out / f"m{i}-{m}"), "seed": s, "dev_auc": base,
                                "dev_logloss": 0.5, "test_auc": base - 0.0002, "test_logloss": 0.5,
                                "train_time_s": 1.0})
        for m in members:
            Path(m["run_dir"]).mkdir(parents=True, exist_ok=True)
        mean = {k: float(np.mean([m[k] for m in members])) for k in ("dev_auc", "test_auc", "dev_logloss", "test_logloss")}
        g = {"settings": {"alpha": alpha, "lr": lr, "mode": "finetune" if init else "scratch",
                          "teachers": [str(t) for t in teachers]}, "members": members, "mean": mean}
        (out / "group.json").write_text(json.dumps(g))
        return g

    def ensemble(self, runs, store_path, split="test", **kw):
        aucs = [json.loads((Path(r) / "summary.json").read_text())[f"{split}_auc"] for r in runs]
        return {"auc": max(aucs) + 0.001, "logloss": 0.49, "rows": 400, "members": []}

    def load_run(self, run, store=None):
        run = Path(run)
        return _FakeModel(0.01 * (len(str(run)) % 7) + 0.1 * ("m0" in run.name)), None, None


@pytest.fixture
def fake_api(monkeypatch):
    """A FakeAPI that the experiment code picks up (mutualctr.training.jobs is patched attribute-wise)."""
    from mutualctr.training import jobs as api

    fake = FakeAPI()
    for name in ("open_store", "default_config", "train", "mutual", "ensemble", "load_run"):
        monkeypatch.setattr(api, name, getattr(fake, name))
    return fake


@pytest.fixture
def tiny_config_dir(tmp_path):
    """DIR/<model>.yaml for deepfm and dcn: embedding 4, one hidden layer of 8, batch 600, 1 epoch."""
    import yaml

    from mutualctr.training.config import run_config_from_dict, run_config_to_dict

    d = tmp_path / "configs"
    d.mkdir()
    for m in ("deepfm", "dcn"):
        extra = {"cross_layers": 1} if m == "dcn" else {}
        cfg = run_config_from_dict({
            "model": {"name": m, "embed_dim": 4, "mlp": {"hidden": [8]}, **extra},
            "optim": {"lr": 3e-3},
            "train": {"batch_size": 600, "epochs": 1, "evals_per_epoch": 1, "patience": 0, "device": "cpu",
                      "prefetch": 0, "eval_batch_size": 4096},
            "mutual": {"alpha_grid": [1.0, 10.0]},  # auto, from a short grid
        })
        (d / f"{m}.yaml").write_text(yaml.safe_dump(run_config_to_dict(cfg), sort_keys=False))
    return d


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the runs are tiny and the CI machine is shared (no oversubscription)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
