"""The explicit plan of an experiment (Experiment.plan / run) with the fake training API."""

from collections import Counter
from pathlib import Path

import pytest

from mutualctr.experiments import run_experiment
from mutualctr.experiments.runner import Experiment, Settings, parse_questions


def _exp(out: Path, questions="all", alphas=(1.0, 0.5), progress=None, **kw) -> Experiment:
    st = Settings(questions=parse_questions(questions), models=["deepfm", "dcn"], instances=2, seeds=[1, 2],
                  alphas=None if alphas is None else list(alphas), bootstrap_resamples=20, **kw)
    return Experiment("unused-store", out, st, quiet=True, progress=progress)


def _run(out: Path, question: str, alphas=(1.0, 0.5)):
    return run_experiment(question, "unused-store", out, models=["deepfm", "dcn"], instances=2, seeds=[1, 2],
                          alphas=None if alphas is None else list(alphas), quiet=True, bootstrap_resamples=20)


def test_plan_of_a_fresh_experiment_enumerates_every_job_once_all_to_run(fake_api, tmp_path):
    plan = _exp(tmp_path / "e").plan()
    assert fake_api.calls == [] and not (tmp_path / "e").exists()  # nothing trains, nothing is written
    kinds = Counter((j.model, j.kind) for j in plan.jobs)
    assert kinds[("deepfm", "train")] == 2 and kinds[("dcn", "train")] == 2 + 3  # RQ4 (DCN) needs 5 instances
    assert kinds[("deepfm", "scratch")] == kinds[("dcn", "scratch")] == 1
    assert kinds[("deepfm", "ensemble")] == kinds[("dcn", "ensemble")] == 1
    assert kinds[("deepfm", "distill")] == kinds[("dcn", "distill")] == 1
    # finetunings: per model 2 grid points + the alpha-0 control; the mixed grid (2, under the first
    # model); RQ4's top-5/4/3 (top-2 in seed order is RQ2's group at the assumed choice, shared)
    assert kinds[("deepfm", "finetune")] == 3 + 2 and kinds[("dcn", "finetune")] == 3 + 3
    assert len({j.key for j in plan.jobs}) == len(plan.jobs)
    assert {j.state for j in plan.jobs} == {"to run"} and plan.todo == plan.jobs
    assert plan.next() is plan.jobs[0] and plan.next().label == "independent deepfm seed 1"
    assert [j.question for j in plan.jobs[:4]] == ["rq1"] * 4
    # jobs that follow from results not known yet are provisional, and none comes first
    prov = {j.label for j in plan.jobs if j.provisional}
    assert "distill deepfm #1 -> 1 others beta 0.5 lr 0.0001" in prov
    assert all(j.kind in ("finetune", "distill") for j in plan.jobs if j.provisional)
    assert not any(j.provisional for j in plan.jobs if j.kind in ("train", "scratch", "ensemble"))
    assert plan.rq2["deepfm"].choice == (0.5, 1e-4) and plan.rq2["deepfm"].teacher == 0  # the assumption


@pytest.mark.parametrize("alphas,total", [((1.0, 0.5), 119.4), (None, 131.4)])
def test_plan_totals_are_those_of_the_walk_with_placeholders(fake_api, tmp_path, alphas, total):
    """Member-epochs recorded with the earlier plan (the questions walked with placeholder
    results) for this config: the explicit plan gives the same totals."""
    assert _exp(tmp_path / "e", alphas=alphas).plan().total == pytest.approx(total)


def test_plan_after_some_jobs_shows_them_done_and_decides_on_their_results(fake_api, tmp_path):
    _run(tmp_path / "e", "rq1", alphas=None)
    plan = _exp(tmp_path / "e", alphas=None).plan()
    done = {j.label for j in plan.jobs if j.done}
    assert done == {f"independent {m} seed {s}" for m in ("deepfm", "dcn") for s in (1, 2)} | \
        {"mutual from scratch 2 x deepfm", "mutual from scratch 2 x dcn"}
    assert plan.next().label.startswith("mutual finetune 2 x deepfm alpha")
    assert not plan.next().provisional
    # the pretrained runs are known: the teacher is the best on dev (seed 2 in the fake) ...
    assert plan.rq2["deepfm"].teacher == 1
    # ... the choice is not, so the distillation stays provisional
    assert plan.rq2["deepfm"].distill.key in {j.key for j in plan.jobs if j.provisional}
    # the questions' record of done jobs carries their results; jobs to run have none
    assert plan.rq1["deepfm"].scratch.result["mean"]["dev_auc"] > 0.7
    assert all(j.result is None for j in plan.rq2["deepfm"].grid.values())


def test_alpha_extensions_enter_the_plan_as_results_decide_them(fake_api, tmp_path):
    """The fake makes a larger alpha better on dev: alpha auto extends past the grid's top (at
    most 3 times). A fresh plan has the grid only; the plan of the finished run has the extensions,
    and its total is that of the earlier plan of the same finished run (143.4)."""
    exp = _exp(tmp_path / "e", questions="rq1,rq2", alphas=None)
    first = exp.plan()
    base = sorted(a for a, _ in first.rq2["deepfm"].grid)
    final = exp.run(first)
    assert all(j.done for j in final.jobs)
    alphas = [a for a, _ in final.rq2["deepfm"].grid]
    assert alphas == base + [base[-1] * 10, base[-1] * 100, base[-1] * 1000]
    assert final.rq2["deepfm"].choice == (base[-1] * 1000, 1e-4)
    assert final.total > first.total
    assert _exp(tmp_path / "e", alphas=None).plan().total == pytest.approx(143.4)
    # each planned job ran once
    assert len(fake_api.calls) == len(final.jobs) - 2  # the ensembles are not training calls


class _Recorder:
    """Stands in for ExperimentProgress: records what the experiment reports."""

    def __init__(self):
        self.phase, self.events, self.totals = "", [], []

    def start(self, label, cost, watch=(), resumed=False):
        self.events.append(("start", self.phase, label, cost))

    def finish(self, message=None):
        pass

    def skip(self, label, cost):
        self.events.append(("skip", self.phase, label, cost))

    def log(self, msg):
        self.events.append(("log", msg))

    def set_total(self, total):
        self.totals.append(total)


def test_progress_counts_each_job_once_run_or_cached(fake_api, tmp_path):
    rec = _Recorder()
    exp = _exp(tmp_path / "e", progress=rec)
    plan = exp.run()
    started = [e for e in rec.events if e[0] == "start"]
    assert sorted(e[2] for e in started) == sorted(j.label for j in plan.jobs)
    assert [e[1] for e in rec.events if e[0] == "log"] == ["[bold]RQ1[/bold]", "[bold]RQ2[/bold]",
                                                           "[bold]RQ3[/bold]", "[bold]RQ4[/bold]"]
    assert rec.totals[-1] == pytest.approx(plan.total)
    # a second experiment over the same runs: every job cached, counted once, the whole total
    rec2 = _Recorder()
    again = _exp(tmp_path / "e", progress=rec2).run()
    skipped = [e for e in rec2.events if e[0] == "skip"]
    assert not [e for e in rec2.events if e[0] == "start"]
    assert sorted(e[2] for e in skipped) == sorted(j.label for j in again.jobs)
    assert sum(e[3] for e in skipped) == pytest.approx(again.total)
    assert {e[1] for e in skipped if e[2].startswith("distill")} == {"RQ2"}


def test_runs_shared_between_experiments_are_done_in_the_plan(fake_api, tmp_path):
    """--runs: a second experiment with the same run cache plans the shared runs as done."""
    runs = tmp_path / "runs"
    run_experiment("rq1", "unused-store", tmp_path / "a", models=["deepfm"], instances=2, seeds=[1, 2],
                   runs_dir=runs, quiet=True)
    st = Settings(questions=["rq1", "rq2"], models=["deepfm"], instances=2, seeds=[1, 2], alphas=[1.0],
                  runs_dir=runs)
    plan = Experiment("unused-store", tmp_path / "b", st, quiet=True).plan()
    assert {j.label for j in plan.jobs if j.done} == {"independent deepfm seed 1", "independent deepfm seed 2",
                                                       "mutual from scratch 2 x deepfm"}
    assert all(j.dir.parent == runs for j in plan.jobs)


def test_an_interrupted_job_is_next_in_the_plan_and_resumes(fake_api, tmp_path):
    fake_api.fail_at = 3  # the third training call leaves a checkpoint behind and raises
    with pytest.raises(KeyboardInterrupt):
        _exp(tmp_path / "e").run()
    fake_api.fail_at = None
    exp = _exp(tmp_path / "e")
    plan = exp.plan()
    assert [j.done for j in plan.jobs[:3]] == [True, True, False]
    nxt = plan.next()
    assert nxt is plan.jobs[2] and (nxt.dir / "checkpoints" / "last.pt").is_file()
    fake_api.calls.clear()
    exp.run(plan)
    assert fake_api.calls[0] == ("mutual", nxt.dir, True)  # resumed, in place
