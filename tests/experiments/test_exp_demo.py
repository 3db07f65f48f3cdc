"""`mutualctr demo` end to end on a few synthetic rows (the size is the only difference)."""

from pathlib import Path

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
    r2 = demo.run_demo(tmp_path / "demo", rows=2500, quiet=True, echo=lambda s: None)
    assert Path(r2["paths"]["results"]).read_text() == Path(r["paths"]["results"]).read_text()
