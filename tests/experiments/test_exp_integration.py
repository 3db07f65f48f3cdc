"""The real trainer under the experiment: a tiny store, tiny models, every question once."""

from collections import Counter
from pathlib import Path

from mutualctr.experiments import run_experiment
from mutualctr.experiments.report import read_results


def test_all_questions_end_to_end_then_cached(tiny_store, tiny_config_dir, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    r = run_experiment("all", tiny_store, out, ["deepfm", "dcn"], instances=2, config_dir=tiny_config_dir,
                       quiet=True, bootstrap_resamples=100)
    rows = read_results(Path(r["paths"]["results"]))
    count = Counter((x["question"], x["setting"]) for x in rows)
    assert count[("rq1", "independent")] == count[("rq1", "mutual_scratch")] == 4
    # alpha auto: the config's grid [1, 10], extended past an end that wins; one choice per model
    tried = {(x["model"], x["alpha"]) for x in rows if x["setting"] == "mutual_pretrained" and x["question"] == "rq2"}
    assert {a for m, a in tried} >= {1.0, 10.0}
    assert count[("rq2", "mutual_pretrained")] == 2 * len(tried)
    assert sum(x["selected"] == 1 for x in rows if x["setting"] == "mutual_pretrained") == 4
    assert count[("rq2", "alpha0_control")] == 4
    assert count[("rq2", "ensemble")] == 2 and count[("rq2", "distill")] == 2
    mixed = [x for x in rows if x["setting"] == "dml_different"]
    assert len(mixed) == 2 * len({x["alpha"] for x in mixed}) and sum(x["selected"] == 1 for x in mixed) == 2
    assert count[("rq4", "mutual_pretrained")] == 14
    for x in rows:
        assert 0.5 < x["test_auc"] < 1.0, x
        if x["setting"] not in ("ensemble",):
            assert Path(x["run"]).is_dir()
    # finetuned members start from the independent runs: their start is the pretrained test AUC
    ind = {(x["model"], x["instance"]): x["test_auc"] for x in rows if x["setting"] == "independent"}
    for x in rows:
        if x["setting"] == "mutual_pretrained" and x["question"] == "rq2":
            assert abs(x["start_test_auc"] - ind[(x["model"], x["instance"])]) < 1e-12
    assert "## Table 1" in Path(r["paths"]["tables"]).read_text()
    assert all(Path(p).is_file() for p in r["paths"]["plots"])

    # A second run trains nothing and reports the same numbers.
    from mutualctr.training import jobs as api

    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(api, "train", boom)
    monkeypatch.setattr(api, "mutual", boom)
    r2 = run_experiment("all", tiny_store, out, ["deepfm", "dcn"], instances=2, config_dir=tiny_config_dir,
                        quiet=True, bootstrap_resamples=100)
    assert Path(r2["paths"]["results"]).read_text() == Path(r["paths"]["results"]).read_text()


def test_resume_of_a_started_run_with_the_real_trainer(tiny_store, tiny_config_dir, tmp_path, monkeypatch):
    """Interrupt the first independent run after its last checkpoint; the rerun resumes it."""
    from mutualctr.training import jobs as api, trainer

    real_finish = trainer.Trainer._finish
    calls = []

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt("after the checkpoint, before the summary")

    monkeypatch.setattr(trainer.Trainer, "_finish", interrupted)
    out = tmp_path / "exp"
    try:
        run_experiment("rq1", tiny_store, out, ["deepfm"], instances=2, config_dir=tiny_config_dir, quiet=True)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(trainer.Trainer, "_finish", real_finish)
    real_train = api.train

    def spy(store, run_out, cfg, resume=False, quiet=False):
        calls.append(resume)
        return real_train(store, run_out, cfg, resume=resume, quiet=quiet)

    monkeypatch.setattr(api, "train", spy)
    r = run_experiment("rq1", tiny_store, out, ["deepfm"], instances=2, config_dir=tiny_config_dir, quiet=True)
    assert calls == [True, False]  # the interrupted run resumed, the second one started fresh
    assert len(r["rows"]) == 4
