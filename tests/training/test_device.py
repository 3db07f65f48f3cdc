"""The CPU process set-up: contention beside other busy processes is measured and warned about; freed step memory is reused."""

import os
import platform
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from mutualctr.training import device as D


def test_advice_only_when_the_threads_do_not_fit_the_free_cores():
    assert D.contention_advice(2, 2, 0.1) is None            # an idle machine
    assert D.contention_advice(1, 2, 5.0) is None            # one thread never waits on another
    assert D.contention_advice(4, 8, 4.4) is None            # 3.6 free cores hold 4 threads (rounding)
    msg = D.contention_advice(2, 2, 1.0)
    assert "2 CPU threads" in msg and "1.0 of this machine's 2 cores" in msg and "--threads 1" in msg
    assert "--threads 6" in D.contention_advice(16, 16, 10.2)
    assert "--threads 1" in D.contention_advice(2, 2, 2.0)   # every core taken: still at least one


def test_others_load_is_busy_time_minus_our_own(monkeypatch):
    # /proc/stat says 3.0 busy seconds passed in 1 s; 1.2 of them were this process's.
    busy = iter([100.0, 103.0])
    mine = iter([SimpleNamespace(user=5.0, system=1.0), SimpleNamespace(user=6.0, system=1.2)])
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(D, "_busy_cpu_seconds", lambda: next(busy))
    monkeypatch.setattr(D.os, "times", lambda: next(mine))
    monkeypatch.setattr(D, "time", SimpleNamespace(monotonic=lambda: next(clock), sleep=lambda s: None))
    assert D.others_cpu_load() == pytest.approx(1.8)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_busy_process_beside_us_is_seen():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        D.others_cpu_load(0.3)  # let it start
        assert D.others_cpu_load(0.5) >= 0.6  # more load elsewhere only adds to it
    finally:
        spin.kill()
        spin.wait()


def test_the_warning_is_issued_once_per_process_and_thread_count(monkeypatch):
    monkeypatch.setenv("MUTUALCTR_CPU_CHECK", "1")
    monkeypatch.setattr(D, "_CONTENTION_CHECKED", set())
    monkeypatch.setattr(D, "others_cpu_load", lambda: 1.5)
    monkeypatch.setattr(D.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        D.warn_if_cpu_contended(1)
        D.warn_if_cpu_contended(2)
        D.warn_if_cpu_contended(2)
    assert [w.category for w in seen] == [D.CPUContentionWarning]
    assert "pass threads=1 " in str(seen[0].message) and "pass --threads 1 " in seen[0].message.cli
    monkeypatch.setattr(D, "_CONTENTION_CHECKED", set())
    monkeypatch.setenv("MUTUALCTR_CPU_CHECK", "0")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        D.warn_if_cpu_contended(2)
    assert seen == []


def test_a_command_that_cannot_write_its_run_fails_without_the_warning(tiny_store, tmp_path, monkeypatch):
    from mutualctr.cli import app
    from mutualctr.errors import OutputError
    from mutualctr.training import rundir

    def refuse(self, config, store):
        raise OutputError(f"{self.path}: cannot write config.yaml there (Permission denied)")

    monkeypatch.setenv("MUTUALCTR_CPU_CHECK", "1")
    monkeypatch.setattr(D, "_CONTENTION_CHECKED", set())
    monkeypatch.setattr(D, "others_cpu_load", lambda: 1.5)
    monkeypatch.setattr(D.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(rundir.RunDir, "write_start_files", refuse)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        res = CliRunner().invoke(app, ["train", "--data", str(tiny_store), "--model", "lr", "--out",
                                       str(tmp_path / "r"), "--quiet"])
    finally:
        torch.set_num_threads(before)
    assert isinstance(res.exception, OutputError)  # mutualctr.cli.main prints it as the one error line
    assert "CPU threads" not in res.output


def test_train_threads_flag_sets_torch_threads_and_silences_the_warning(tiny_store, tmp_path, monkeypatch):
    from mutualctr.cli import app

    monkeypatch.setenv("MUTUALCTR_CPU_CHECK", "1")
    monkeypatch.setattr(D, "_CONTENTION_CHECKED", set())
    monkeypatch.setattr(D, "others_cpu_load", lambda: 1.5)
    monkeypatch.setattr(D.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    before = torch.get_num_threads()
    try:
        res = CliRunner().invoke(app, ["train", "--data", str(tiny_store), "--model", "lr", "--epochs", "1",
                                       "--out", str(tmp_path / "r1"), "--quiet", "--threads", "1"])
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 1
        assert "CPU threads" not in res.output
        torch.set_num_threads(2)
        res = CliRunner().invoke(app, ["train", "--data", str(tiny_store), "--model", "lr", "--epochs", "1",
                                       "--out", str(tmp_path / "r2"), "--quiet"])
        assert res.exit_code == 0, res.output
        assert "warning: torch runs 2 CPU threads" in res.output and "pass --threads 1" in res.output
    finally:
        torch.set_num_threads(before)


def test_the_api_takes_threads_and_its_warning_points_at_the_callers_line(tiny_store, tmp_path, monkeypatch):
    """Issue 30 item 6: from Python the warning names ``threads=1`` (the API's parameter, not the
    flag) and points at the line of the caller's script, not at mutualctr's code."""
    import inspect

    import mutualctr as mc
    from tests.conftest import tiny_config

    monkeypatch.setenv("MUTUALCTR_CPU_CHECK", "1")
    monkeypatch.setattr(D, "others_cpu_load", lambda: 1.5)
    monkeypatch.setattr(D.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cfg = tiny_config("lr", epochs=1)
    before = torch.get_num_threads()
    try:
        for name, call in [
            ("train", lambda: mc.train(tiny_store, tmp_path / "r", config=cfg, threads=2)),
            ("mutual", lambda: mc.mutual(tiny_store, tmp_path / "g", init=[tmp_path / "r"] * 2, alpha=1.0,
                                         threads=2)),
            ("distill", lambda: mc.distill(tiny_store, tmp_path / "d", teacher=tmp_path / "r",
                                           student=tmp_path / "r", beta=1.0, threads=2)),
        ]:
            monkeypatch.setattr(D, "_CONTENTION_CHECKED", set())
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                call()
            assert torch.get_num_threads() == 2, name  # threads= reached the trainer
            w = [x for x in seen if x.category is D.CPUContentionWarning]
            assert len(w) == 1, (name, seen)
            assert w[0].filename == __file__, (name, w[0].filename)
            assert w[0].lineno in range(*(lambda src, at: (at, at + len(src)))(*inspect.getsourcelines(call)))
            assert "pass threads=1 (train.threads: 1)" in str(w[0].message) and "--threads" not in str(w[0].message)
            mc.train(tiny_store, tmp_path / f"quiet-{name}", config=cfg, threads=1)  # 1 thread: no check at all
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


_FAULTS = """
import resource, torch
from mutualctr.training import device
applied = device.keep_freed_memory()

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    xs = [torch.empty(4000, 624).fill_(1.0) for _ in range(4)]  # a step's 10 MB activations
    xs.append(torch.empty(4000, 741, 8).fill_(1.0))  # 95 MB, as FiBiNET's pair tensors
    del xs  # freed together
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print(applied, *(faults() for _ in range(6)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("opt_out", [False, True])
def test_freed_step_memory_is_reused_without_page_faults(opt_out):
    """keep_freed_memory: four 10 MB tensors and a 95 MB one, allocated and freed round after
    round, take no fresh pages once the heap holds them (from the 3rd round). glibc's defaults
    map a block over 32 MB anew every time (~23,000 faults a round for the 95 MB one), and in 8
    fresh processes of 10 also trimmed the 10 MB ones; MUTUALCTR_SYSTEM_MALLOC=1 leaves them."""
    env = {k: v for k, v in os.environ.items() if k != D.MALLOC_ENV}
    if opt_out:
        env[D.MALLOC_ENV] = "1"
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
    applied, *faults = out.stdout.split()
    assert applied == str(not opt_out)
    if opt_out:
        assert all(int(f) > 20_000 for f in faults[3:]), faults
    else:
        assert [int(f) for f in faults[3:]] == [0, 0, 0], faults
