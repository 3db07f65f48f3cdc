"""Run files: a checkpoint that would run code is refused by every command that reads one, and
the typed checkpoints round-trip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mutualctr.errors import CheckpointError
from mutualctr.training import jobs as api
from mutualctr.training.rundir import GroupCheckpoint, ModelCheckpoint, save
from mutualctr.training.state import LoopState
from tests.conftest import tiny_config


class _Payload:
    """Unpickling this calls os.system: what a tampered checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def two_runs(tiny_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for i in (1, 2):
        api.train(tiny_store, root / f"r{i}", tiny_config(seed=i, epochs=1), quiet=True).to_dict()
    return root


def _tamper(path: Path, marker: Path) -> None:
    """Rewrite a checkpoint with the same keys plus an object whose unpickling runs a command."""
    payload = torch.load(path, weights_only=True)
    payload["evil"] = _Payload(marker)
    torch.save(payload, path)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutualctr.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("command", ["evaluate", "predict", "ensemble", "mutual_init", "distill_teacher",
                                     "train_resume"])
def test_a_checkpoint_that_would_run_code_is_refused(command, two_runs, tiny_store, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(two_runs, runs)
    marker = tmp_path / "pwned"
    target = runs / "r1" / "checkpoints" / ("last.pt" if command == "train_resume" else "best.pt")
    _tamper(target, marker)
    raw = tmp_path / "rows.txt"
    raw.write_text("0\t" + "\t".join(["1"] * 13 + ["68fd1e64"] * 26) + "\n")
    store, r1, r2 = str(tiny_store), str(runs / "r1"), str(runs / "r2")
    args = {
        "evaluate": ["evaluate", "--run", r1, "--data", store],
        "predict": ["predict", "--run", r1, "--input", str(raw), "--out", str(tmp_path / "p.csv"), "--data", store],
        "ensemble": ["ensemble", "--runs", r2, r1, "--data", store],
        "mutual_init": ["mutual", "--data", store, "--init", r2, r1, "--out", str(tmp_path / "g"), "--quiet"],
        "distill_teacher": ["distill", "--data", store, "--teacher", r1, "--student", r2, "--out",
                            str(tmp_path / "kd"), "--quiet"],
        "train_resume": ["train", "--data", store, "--out", r1, "--resume", "--quiet"],
    }[command]
    res = _cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "refused" in res.stderr and str(target) in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert not (tmp_path / "p.csv").exists()


def test_model_checkpoint_round_trip_and_wrong_kind(two_runs, tmp_path):
    ck = ModelCheckpoint.load(two_runs / "r1" / "checkpoints" / "best.pt")
    assert ck.model == "deepfm" and ck.num_fields == 39 and isinstance(ck.state_dict, dict)
    ck.save(tmp_path / "copy.pt")
    again = ModelCheckpoint.load(tmp_path / "copy.pt")
    assert again.dev == ck.dev and all(torch.equal(again.state_dict[k], v) for k, v in ck.state_dict.items())
    with pytest.raises(CheckpointError, match="expected a model checkpoint"):
        ModelCheckpoint.load(two_runs / "r1" / "checkpoints" / "last.pt")
    g = GroupCheckpoint.load(two_runs / "r1" / "checkpoints" / "last.pt")
    assert isinstance(g.loop, LoopState) and g.loop.done and len(g.members) == 1


def test_a_group_checkpoint_of_the_first_format_is_refused_clearly(tmp_path):
    save(tmp_path / "last.pt", {"kind": "group"})
    old = torch.load(tmp_path / "last.pt", weights_only=True)
    old["format"] = 1
    torch.save(old, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="format 1 .*cannot be resumed"):
        GroupCheckpoint.load(tmp_path / "last.pt")
