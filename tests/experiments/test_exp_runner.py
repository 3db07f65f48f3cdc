"""Orchestration with a fake training API: rows and tables per question, caching, resume."""

from collections import Counter
from pathlib import Path

import pytest

from mutualctr.config import ConfigError
from mutualctr.errors import MutualCTRError
from mutualctr.experiments import run_experiment
from mutualctr.experiments.report import read_results


def _run(out: Path, question="all", **kw):
    args = dict(models=["deepfm", "dcn"], instances=2, alphas=[1.0, 0.5], quiet=True, bootstrap_resamples=50)
    args.update(kw)
    return run_experiment(question, "unused-store", out, **args)


def test_all_questions_rows_tables_and_plots(fake_api, tmp_path):
    r = _run(tmp_path / "exp")
    rows = read_results(Path(r["paths"]["results"]))
    count = Counter((x["question"], x["model"], x["setting"]) for x in rows)
    for m in ("deepfm", "dcn"):
        assert count[("rq1", m, "independent")] == 2
        assert count[("rq1", m, "mutual_scratch")] == 2
        assert count[("rq2", m, "mutual_pretrained")] == 4  # 2 members x 2 grid points
        assert count[("rq2", m, "alpha0_control")] == 2
        assert count[("rq2", m, "ensemble")] == 1
        assert count[("rq2", m, "distill")] == 1  # the other instance, taught by the best
        assert count[("rq3", m, "pretrained_best")] == count[("rq3", m, "dml_same")] == 1
        assert count[("rq3", m, "dml_different")] == 2  # one per grid point
    # RQ4 on Criteo defaults to DCN; 3 extra instances are trained to reach 5.
    assert count[("rq4", "dcn", "pretrained")] == count[("rq4", "dcn", "mutual_pretrained")] == 5 + 4 + 3 + 2
    assert sorted({x["n_models"] for x in rows if x["question"] == "rq4"}) == [2, 3, 4, 5]
    # The fake makes alpha 1.0 better on dev, and seed 2 the best instance.
    sel = [x for x in rows if x["setting"] == "mutual_pretrained" and x["question"] == "rq2" and x["selected"] == 1]
    assert {x["alpha"] for x in sel} == {1.0} and len(sel) == 4
    assert {x["teacher"] for x in rows if x["setting"] == "distill"} == {2}
    assert {x["instance"] for x in rows if x["setting"] == "distill"} == {1}
    top2 = {x["instance"] for x in rows if x["question"] == "rq4" and x["n_models"] == 2}
    assert top2 == {4, 5}  # worst on dev dropped each time
    assert Counter(c[0] for c in fake_api.calls) == {"train": 2 + 5, "mutual": 2 + 4 + 2 + 2 + 2 + 4}
    text = Path(r["paths"]["tables"]).read_text()
    for title in ("## Table 1", "### DeepFM", "### DCN", "## Significance", "## Grid", "## Table 2",
                  "## Tables 3-4", "paper (criteo) mean", "Paired bootstrap"):
        assert title in text
    assert len(r["bootstrap"]) == 4  # 2 comparisons x 2 models
    assert all(Path(p).is_file() and Path(p).stat().st_size > 1000 for p in r["paths"]["plots"])
    assert [Path(p).name for p in r["paths"]["plots"]] == ["auc_by_setting.png", "auc_vs_alpha.png",
                                                          "auc_vs_n_models.png"]


def test_second_run_trains_nothing_and_reports_the_same(fake_api, tmp_path):
    r1 = _run(tmp_path / "exp")
    first = Path(r1["paths"]["results"]).read_text()
    fake_api.calls.clear()
    r2 = _run(tmp_path / "exp")
    assert fake_api.calls == []
    assert Path(r2["paths"]["results"]).read_text() == first


def test_questions_share_runs(fake_api, tmp_path):
    _run(tmp_path / "exp", "rq1", models=["deepfm"])
    n1 = len(fake_api.calls)
    fake_api.calls.clear()
    _run(tmp_path / "exp", "rq2", models=["deepfm"])
    assert "train" not in {c[0] for c in fake_api.calls}  # RQ2 starts from RQ1's runs
    assert len(fake_api.calls) == 2 + 1 + 1 and n1 == 3  # grid of 2, control, distillation


def test_interrupted_experiment_resumes_where_it_stopped(fake_api, tmp_path):
    fake_api.fail_at = 5
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "exp", "rq1,rq2")
    started = fake_api.calls[-1][1]
    assert (started / "checkpoints" / "last.pt").is_file()
    finished = [c[1] for c in fake_api.calls[:-1]]
    fake_api.fail_at = None
    fake_api.calls.clear()
    _run(tmp_path / "exp", "rq1,rq2")
    again = {c[1]: c[2] for c in fake_api.calls}
    assert not set(finished) & set(again)  # finished jobs are not run again
    assert again[started] is True  # the started one resumes from its checkpoint
    assert sum(again.values()) == 1


def test_job_interrupted_before_its_first_checkpoint_starts_over(fake_api, tmp_path):
    _run(tmp_path / "exp", "rq1", models=["deepfm"])
    job = Path(fake_api.calls[0][1])
    (job / "summary.json").unlink()  # as if killed before finishing, with no last.pt
    (job / "metrics.jsonl").write_text("junk")
    fake_api.calls.clear()
    _run(tmp_path / "exp", "rq1", models=["deepfm"])
    assert [(c[1], c[2]) for c in fake_api.calls] == [(job, False)]
    assert not (job / "metrics.jsonl").exists()
    # a file mutualctr never writes is not ours to delete: the job is refused, naming it
    (job / "summary.json").unlink()
    (job / "notes.txt").write_text("mine")
    with pytest.raises(MutualCTRError, match="notes.txt"):
        _run(tmp_path / "exp", "rq1", models=["deepfm"])
    assert (job / "notes.txt").read_text() == "mine"


def test_changed_settings_make_new_runs(fake_api, tmp_path):
    _run(tmp_path / "exp", "rq1", models=["deepfm"])
    fake_api.calls.clear()
    _run(tmp_path / "exp", "rq1", models=["deepfm"], epochs=3)
    assert len(fake_api.calls) == 3  # other configs -> other keys


def test_precision_is_part_of_the_key_as_resolved(fake_api, tmp_path, monkeypatch):
    """--precision sets every run's; the run key holds what auto resolves to, so on a CPU
    without native bf16 the fp32 runs cached before auto was the default are reused, and on one
    with it fp32 runs are other runs."""
    from mutualctr.training import device as D

    monkeypatch.setattr(D, "cpu_flags", lambda: {"avx2"})
    _run(tmp_path / "exp", "rq1", models=["deepfm"], precision="fp32")
    fake_api.calls.clear()
    _run(tmp_path / "exp2", "rq1", models=["deepfm"], runs_dir=tmp_path / "exp" / "runs")  # auto = fp32 here
    assert len(fake_api.calls) == 0
    monkeypatch.setattr(D, "cpu_flags", lambda: {"amx_bf16"})
    _run(tmp_path / "exp3", "rq1", models=["deepfm"], runs_dir=tmp_path / "exp" / "runs")  # auto = bf16 here
    assert len(fake_api.calls) == 3


@pytest.mark.parametrize("kw", [dict(instances=1), dict(seeds=[1, 1]), dict(seeds=[1, 2, 3]), dict(alphas=[]),
                                dict(models=["nosuchmodel"]), dict(models=["deepfm", "deepfm"]),
                                dict(precision="fp16")])
def test_bad_settings_are_refused(fake_api, tmp_path, kw):
    with pytest.raises(ConfigError):
        _run(tmp_path / "exp", **kw)


def test_unknown_question(fake_api, tmp_path):
    with pytest.raises(ConfigError, match="rq9"):
        _run(tmp_path / "exp", "rq9")


def test_grid_choice_is_on_dev_and_never_the_control_when_alternatives_exist():
    from mutualctr.experiments.runner import Job, _best_on_dev

    def job(dev):
        return Job("k", Path("."), {"mean": {"dev_auc": dev}})

    assert _best_on_dev({(0.0, 1e-4): job(0.9), (1.0, 1e-4): job(0.7), (0.5, 1e-4): job(0.8)}) == (0.5, 1e-4)
    assert _best_on_dev({(0.0, 1e-4): job(0.9), (0.0, 3e-4): job(0.95)}) == (0.0, 3e-4)
    # dev AUCs within ALPHA_TIE (1e-5) are a tie: the smaller alpha, then the smaller lr
    assert _best_on_dev({(10.0, 1e-4): job(0.8), (1000.0, 1e-4): job(0.800004), (1.0, 1e-4): job(0.79)}) == (10.0, 1e-4)
    assert _best_on_dev({(10.0, 3e-4): job(0.8), (10.0, 1e-4): job(0.800004)}) == (10.0, 1e-4)


def test_cli_experiment(fake_api, tmp_path):
    from typer.testing import CliRunner

    from mutualctr.cli import app

    r = CliRunner().invoke(app, ["experiment", "rq1,rq2", "--data", "unused", "--out", str(tmp_path / "e"),
                                 "--models", "deepfm", "--instances", "2", "--seeds", "3,4", "--alpha", "1,0.5",
                                 "--finetune-lr", "1e-4", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "result rows" in r.output and (tmp_path / "e" / "tables.md").is_file()
    rows = read_results(tmp_path / "e" / "results.csv")
    assert {x["seed"] for x in rows if x["setting"] == "independent"} == {3, 4}
    bad = CliRunner().invoke(app, ["experiment", "rq1", "--data", "unused", "--out", str(tmp_path / "f"),
                                   "--alpha", "one"])
    assert bad.exit_code == 2


@pytest.mark.parametrize("alphas", [[1.0, 0.5], None])  # an explicit grid, and alpha auto
def test_planning_a_fresh_experiment_trains_nothing_then_the_run_matches_a_quiet_one(fake_api, tmp_path, alphas):
    """With the progress display on, the experiment is planned first (nothing done yet): that
    must not train, and the experiment it runs is the one a quiet run makes."""
    from mutualctr.experiments.runner import Experiment, Settings, parse_questions

    st = Settings(questions=parse_questions("all"), models=["deepfm", "dcn"], instances=2,
                  seeds=[1, 2], alphas=alphas)
    cost = Experiment("unused-store", tmp_path / "plan", st, quiet=True).plan().total
    assert fake_api.calls == [] and not (tmp_path / "plan" / "runs").exists()
    assert cost > 0
    shown = _run(tmp_path / "shown", quiet=False, alphas=alphas)
    quiet = _run(tmp_path / "quiet", alphas=alphas)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("run", "train_time_s")} for r in rows]
    assert strip(shown["rows"]) == strip(quiet["rows"])
