"""Output to a file or a pipe (no terminal): no bars, one unwrapped line per event, tables at
full width (issue 30: cells were cut to `0.711...` and progress lines wrapped at 80 columns)."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

from mutualctr.cli import _print_group, app
from mutualctr.results import GroupResult
from mutualctr.experiments.progress import ExperimentProgress
from mutualctr.progress import Bar, make_console

LONG = "step 120 epoch 1.00 deepfm: dev AUC 0.71123 logloss 0.45678 " + "x" * 200


def test_a_bar_without_a_terminal_prints_log_lines_whole_and_nothing_else(capsys):
    with Bar("[bold]train", "<bar>", "<n/total>", "<elapsed>") as bar:
        assert not bar.live
        task = bar.add("train", 100)
        bar.update(task, advance=50)
        bar.log(LONG)
        bar.log("[bold]RQ1[/bold]")
    assert capsys.readouterr().out == LONG + "\nRQ1\n"


def test_a_bar_that_never_starts_a_task_prints_nothing_on_a_terminal():
    f = io.StringIO()
    with Bar("{task.description}", "<bar>", console=Console(file=f, force_terminal=True)) as bar:
        assert bar.live
    assert f.getvalue() == ""  # a command failing before its first task prints only its error


def test_a_quiet_bar_prints_nothing(capsys):
    with Bar("x", quiet=True) as bar:
        bar.log("hello")
    assert capsys.readouterr().out == ""


def test_make_console_is_wide_and_plain_without_a_terminal(capsys):
    c = make_console()
    assert not c.is_terminal and c.width >= 1000 and c.color_system is None
    term = make_console(Console(file=io.StringIO(), force_terminal=True, width=90))
    assert term.width == 90


def _group() -> GroupResult:
    start = {"dev_auc": 0.70111, "dev_logloss": 0.47, "test_auc": 0.70222, "test_logloss": 0.47}
    member = {"model": "deepfm", "run_dir": "g/m0-deepfm", "init_from": "r1", "seed": 1, "best_step": 10,
              "best_epoch": 1.0, "dev_auc": 0.711234, "dev_logloss": 0.45, "test_auc": 0.712301,
              "test_logloss": 0.456789, "steps": 10, "train_time_s": 1.0, "samples_per_s": 100.0,
              "start": start, "fingerprint": "f", "relaimp_test": 1.2345, "kept_start": False}
    settings = {"mode": "finetune", "alpha": 10.0, "loss": "mse_prob", "lr": 1e-4, "epochs": 1,
                "evals_per_epoch": 4, "seed": 0, "init": ["r1", "r2"], "teachers": [], "scope": "all",
                "embedding_lr_scale": 1.0, "finetune_split": 0.0}
    return GroupResult.from_dict({
        "settings": settings,
        "alpha_search": [{"alpha": a, "dir": f"alpha-{a:g}", "dev_auc": 0.71, "test_auc": 0.712, "churn": 0.0123,
                          "kept_start": 0} for a in (1.0, 10.0)],
        "members": [member, member | {"model": "dcn", "run_dir": "g/m1-dcn"}],
        "mean": {"dev_auc": 0.711234, "dev_logloss": 0.45, "test_auc": 0.712301, "test_logloss": 0.456789,
                 "relaimp_test": 1.2345},
        "churn": {"split": "test", "before": {"mean_abs_diff": 0.02, "logit_corr": 0.9},
                  "after": {"mean_abs_diff": 0.01, "logit_corr": 0.95}}})


def test_group_tables_keep_every_cell_whole_in_a_file(capsys):
    _print_group(_group(), json_out=False)
    out = capsys.readouterr().out
    assert "…" not in out and "..." not in out
    for cell in ("RelaImp %", "start dev AUC", "start test AUC", "best dev AUC", "test logloss",
                 "0.71123", "0.71230", "0.45679", "+1.234", "kept start", "chosen"):
        assert cell in out, cell
    assert "\x1b[" not in out  # no colours in a file
    churn = [line for line in out.splitlines() if line.startswith("churn on test")]
    assert len(churn) == 1 and churn[0].endswith("0.9000 -> 0.9500")


def test_experiment_progress_without_a_terminal_prints_one_line_per_event(capsys):
    p = ExperimentProgress(10.0)
    p.phase = "RQ1"
    p.start("independent deepfm seed 1 " + "y" * 150, 5.0)
    p.finish("deepfm seed 1: test AUC 0.71234")
    p.skip("independent deepfm seed 2", 5.0)
    p.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("RQ1 [1] independent deepfm seed 1 " + "y" * 150 + "  (done 0%, ETA ?)")
    assert lines[1].startswith("deepfm seed 1: test AUC 0.71234  [")
    assert lines[2] == "cached: independent deepfm seed 2"
    assert lines[3].startswith("experiment done in ")


def test_train_to_a_pipe_prints_one_line_per_evaluation_and_no_bar(tiny_store, tmp_path):
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_store), "--model", "deepfm", "--out",
                                   str(tmp_path / "r"), "--epochs", "1", "--batch-size", "512",
                                   "--threads", "1"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    evals = [line for line in lines if line.startswith("step ")]
    assert evals and all(" dev AUC " in line and line.endswith("samples/s)") or line.endswith("(the start)")
                         for line in evals), lines
    assert not any(ch in res.output for ch in "━╸")  # no bar
    assert lines[-1].startswith("deepfm: best dev AUC")
