"""``train --init RUN``: a warm start continues one model (its config, a new lr/epochs by flag),
records ``init_from``, keeps its start when nothing beats it, and resumes (issue 27)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mutualctr import api
from mutualctr.errors import CheckpointError
from mutualctr.training.config import load_run_config
from tests.conftest import interrupted_at_step, tiny_config


@pytest.fixture(scope="module")
def parent(tiny_store, tmp_path_factory):
    return api.train(tiny_store, tmp_path_factory.mktemp("warm") / "parent", config=tiny_config(epochs=1), seed=1)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mutualctr", *map(str, args)], capture_output=True, text=True)


def _lines(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def test_warm_start_continues_the_parents_weights(tiny_store, tmp_path, parent):
    warm = api.train(tiny_store, tmp_path / "warm", init=parent.run_dir, epochs=1, lr=1e-4, quiet=True)
    assert warm.init_from == str(Path(parent.run_dir).resolve())
    assert warm.kept_start is not None  # the start was a candidate
    cfg = load_run_config(tmp_path / "warm" / "config.yaml")
    assert cfg.model_name == "deepfm" and cfg.optim.lr == 1e-4 and cfg.train.epochs == 1
    assert cfg.model_params() == load_run_config(Path(parent.run_dir) / "config.yaml").model_params()
    first = _lines(tmp_path / "warm")[0]
    assert first["step"] == 0 and first["dev_auc"] == pytest.approx(parent.dev_auc, abs=1e-9)  # the parent's weights
    fresh = api.train(tiny_store, tmp_path / "fresh", config=tiny_config(epochs=1), seed=1, quiet=True)
    assert _lines(tmp_path / "fresh")[0]["step"] > 0  # a fresh run has no step-0 start
    assert fresh.init_from is None


def test_warm_start_resumes_to_the_uninterrupted_run(tiny_store, tmp_path, parent):
    full = api.train(tiny_store, tmp_path / "full", init=parent.run_dir, epochs=2, lr=1e-3, quiet=True)
    with interrupted_at_step(25):
        api.train(tiny_store, tmp_path / "cut", init=parent.run_dir, epochs=2, lr=1e-3, quiet=True)
    res = api.train(tiny_store, tmp_path / "cut", init=parent.run_dir, epochs=2, lr=1e-3, resume=True, quiet=True)
    assert (res.test_auc, res.best_step, res.init_from) == (full.test_auc, full.best_step, full.init_from)


def test_warm_start_bad_input(tiny_store, other_store, tmp_path, parent):
    res = _cli("train", "--data", tiny_store, "--out", tmp_path / "w", "--init", parent.run_dir, "--model", "dcn",
               "--threads", "1")
    assert res.returncode == 2 and "leave --model out" in res.stderr and not (tmp_path / "w").exists()
    assert len(res.stderr.strip().splitlines()) == 1
    res = _cli("train", "--data", tiny_store, "--out", tmp_path / "w", "--init", tmp_path / "nope", "--threads", "1")
    assert res.returncode == 2 and "no such run directory" in res.stderr and not (tmp_path / "w").exists()
    with pytest.raises(CheckpointError, match="another feature map"):
        api.train(other_store, tmp_path / "w", init=parent.run_dir, quiet=True)
    assert not (tmp_path / "w").exists()
