"""`mutualctr demo` end to end on a few synthetic rows (the size is the only difference)."""

from pathlib import Path

import pytest

from mutualctr.experiments import demo


def test_demo_prints_table1_with_controls_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "INSTANCES", 2)
    monkeypatch.setattr(demo, "DEMO_TRAIN", {**demo.DEMO_TRAIN, "epochs": 1, "batch_size": 500})
    printed: list[str] = []
    r = demo.run_demo(tmp_path / "demo", rows=2500, quiet=True, echo=printed.append)
    text = "\n".join(printed)
    for needle in ("Table 1", "### DeepFM", "### DCN", "independent", "mutual from scratch",
                   "mutual with pretraining", "control: continued training, alpha = 0",
                   "control: distillation from the best", "control: ensemble of the pretrained",
                   "tables.md", "auc_by_setting.png", "ceiling", "churn", "kept start", "Mutual-loss weight alpha",
                   "**chosen**"):
        assert needle in text, needle
    assert "paper" not in text.split("Tables:")[0]  # synthetic data: no paper columns
    # the closing paragraph: after the tables, names the data as synthetic, one paragraph per model
    found = text.split("What this run found:\n\n")[1]
    assert found.startswith("On synthetic data (2,500 rows), mutual finetuning beat its alpha-0 control")
    assert "\n\nDeepFM (alpha " in found and "\n\nDCN (alpha " in found and "Test logloss" in found
    assert "Caveat: n = 2 instances per model on synthetic data (2,500 rows)" in found
    assert found.rstrip().splitlines()[-1].startswith("Demo finished in")
    tables_md = Path(r["paths"]["tables"]).read_text()  # `experiment` users get it too
    assert "## What this run found\n\nOn synthetic data (2,500 rows), mutual" in tables_md
    assert Path(r["paths"]["tables"]).is_file() and 0.5 < r["ceiling_auc"] < 1
    assert (tmp_path / "demo" / "configs" / "deepfm.yaml").read_text().count("batch_size: 500") == 1

    # Second run: the data, store and runs are reused (nothing generated or trained).
    from mutualctr.data import synth
    from mutualctr.training import jobs as api

    def boom(*a, **k):
        raise AssertionError("redone")

    monkeypatch.setattr(synth, "generate", boom)
    monkeypatch.setattr(api, "train", boom)
    monkeypatch.setattr(api, "mutual", boom)
    again: list[str] = []
    r2 = demo.run_demo(tmp_path / "demo", rows=2500, quiet=False, echo=again.append)
    assert Path(r2["paths"]["results"]).read_text() == Path(r["paths"]["results"]).read_text()
    steps = [line.split("]")[0] + "]" for line in again if line.startswith("[")]
    assert steps == ["[1/3]", "[2/3]", "[3/3]"], again  # the cached rerun names each step
    assert "cached in" in again[0] and "2,500 synthetic" in again[0]


class _Stop(Exception):
    pass


@pytest.fixture
def cpu(monkeypatch):
    """The contention check on, a 2-core machine whose torch defaults to 2 threads; ``cpu.others``
    is the load that other processes put on it."""
    import os

    import torch

    from mutualctr.training import device

    class Cpu:
        others: float | None = 0.0
        sampled = 0

    def load():
        Cpu.sampled += 1
        return Cpu.others

    monkeypatch.setenv("MUTUALCTR_CPU_CHECK", "1")
    monkeypatch.setattr(device, "others_cpu_load", load)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    return Cpu


def test_demo_uses_one_thread_when_other_processes_keep_the_cores_busy(cpu):
    said: list[str] = []
    cpu.others = 1.9
    assert demo.demo_threads(0, said.append) == 1
    assert said == ["other processes keep 1.9 of this machine's 2 cores busy: the demo runs with 1 torch "
                    "thread instead of 2 (faster on shared cores; --threads N chooses)"]
    cpu.others = 0.1  # idle: torch's default, nothing said
    assert demo.demo_threads(0, said.append) == 0 and demo.demo_threads(None, said.append) is None
    cpu.others = None  # no /proc/stat: nothing known, nothing changed
    assert demo.demo_threads(0, said.append) == 0 and len(said) == 1


def test_demo_keeps_the_threads_asked_for_or_the_check_turned_off(cpu, monkeypatch):
    cpu.others = 1.9
    assert demo.demo_threads(2, print) == 2 and cpu.sampled == 0  # --threads 2: the user's choice
    monkeypatch.setenv("MUTUALCTR_CPU_CHECK", "0")
    assert demo.demo_threads(0, print) == 0 and cpu.sampled == 0


def test_run_demo_trains_with_the_threads_chosen(tmp_path, cpu, monkeypatch):
    from mutualctr.experiments import runner

    def stop(*a, threads=None, **k):
        raise _Stop(threads)

    monkeypatch.setattr(runner, "run_experiment", stop)
    cpu.others = 1.9
    with pytest.raises(_Stop) as e:
        demo.run_demo(tmp_path / "d", rows=1000, quiet=True, echo=lambda s: None)
    assert e.value.args == (1,)
    cpu.others = 0.0
    with pytest.raises(_Stop) as e:
        demo.run_demo(tmp_path / "d", rows=1000, quiet=True, echo=lambda s: None)
    assert e.value.args == (None,)
