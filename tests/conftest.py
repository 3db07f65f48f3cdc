"""Shared fixtures: small synthetic stores (session-scoped) and tiny model configs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

# The CPU contention warning depends on what else runs on the machine: off for every test and
# the CLI processes they start (tests/training/test_device.py turns it on where it is tested).
os.environ["MUTUALCTR_CPU_CHECK"] = "0"

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"{SHARED_DATA} is absent")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


def _make_store(root: Path, rows: int, seed: int, min_count: int = 2) -> Path:
    from mutualctr.data.prepare import prepare
    from mutualctr.data.synth import generate

    raw = root / f"synth_{rows}_{seed}.txt"
    generate(rows, raw, seed=seed, progress=False)
    out = root / f"store_{rows}_{seed}"
    prepare("criteo", [raw], out, split="random", seed=0, min_count=min_count, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """6,000 synthetic Criteo-format rows, prepared (80/10/10 random split)."""
    return _make_store(tmp_path_factory.mktemp("tiny"), 6000, seed=0)


@pytest.fixture(scope="session")
def other_store(tmp_path_factory) -> Path:
    """A store with another feature map (different data), for fingerprint checks."""
    return _make_store(tmp_path_factory.mktemp("other"), 3000, seed=1)


def tiny_config(model: str = "deepfm", *, seed: int = 1, epochs: int = 2, evals_per_epoch: int = 1,
                embedding_optimizer: str = "rowwise", lr: float = 3e-3, patience: int = 0, **model_kw):
    """A small, fast run config (embedding 4, one hidden layer) for tests, pinned to fp32 (the
    default, auto, is bf16 on CPUs with AMX or AVX512-BF16): the tests that compare exact values
    then compute the same on every CI machine."""
    from mutualctr.training.config import run_config_from_dict

    model_cfg = {"name": model, "embed_dim": 4, **model_kw}
    if model not in ("lr", "fm"):
        model_cfg.setdefault("mlp", {"hidden": [16]})
    return run_config_from_dict({
        "model": model_cfg,
        "optim": {"lr": lr, "embedding_optimizer": embedding_optimizer},
        "train": {"batch_size": 256, "epochs": epochs, "seed": seed, "evals_per_epoch": evals_per_epoch,
                  "patience": patience, "device": "cpu", "prefetch": 0, "eval_batch_size": 2048,
                  "precision": "fp32"},
    })


def group(**kw):
    """Group settings for tests: alpha 1 (no search) unless given; the rest as the defaults."""
    from mutualctr.training.config import MutualConfig

    return MutualConfig(**{"alpha": 1.0, **kw})


@pytest.fixture
def cfg_factory():
    return tiny_config


@contextlib.contextmanager
def interrupted_at_step(n: int):
    """Run the block with the trainer's n-th step raising KeyboardInterrupt (a Ctrl-C mid-run);
    the block must be interrupted there."""
    from mutualctr.training.trainer import Trainer

    orig, calls = Trainer.step, {"n": 0}

    def dying(self, ids, labels):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return orig(self, ids, labels)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "step", dying)
        with pytest.raises(KeyboardInterrupt):
            yield
