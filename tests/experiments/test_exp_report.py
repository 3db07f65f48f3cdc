"""The table renderer against a hand-made results.csv."""

import json

from pathlib import Path

import numpy as np
import pytest

from mutualctr.experiments import report
from mutualctr.experiments.stats import relaimp

HEADER = ("question,model,setting,n_models,instance,seed,alpha,lr,teacher,selected,dev_auc,dev_logloss,test_auc,"
          "test_logloss,start_test_auc,relaimp_vs_start,kept_start,churn,churn_before,train_time_s,run\n")


def _row(q, model, setting, inst, auc, n="", selected="", alpha="", teacher="", seed="", kept="", churn="",
         before=""):
    return (f"{q},{model},{setting},{n},{inst},{seed},{alpha},,{teacher},{selected},{auc + 0.01},0.5,{auc},0.45,,,"
            f"{kept},{churn},{before},1.0,runs/x\n")


@pytest.fixture
def results_csv(tmp_path):
    lines = [HEADER]
    for i, (ind, scr, ft, ctrl) in enumerate([(0.800, 0.801, 0.810, 0.805), (0.810, 0.806, 0.815, 0.812),
                                               (0.790, 0.795, 0.799, 0.796)], 1):
        lines.append(_row("rq1", "deepfm", "independent", i, ind, seed=i))
        lines.append(_row("rq1", "deepfm", "mutual_scratch", i, scr, alpha=1.0, seed=i))
        lines.append(_row("rq2", "deepfm", "mutual_pretrained", i, ft, selected=1, alpha=1.0, seed=i,
                          kept=int(i == 3), churn=0.021, before=0.0305))
        lines.append(_row("rq2", "deepfm", "mutual_pretrained", i, 0.5, selected=0, alpha=0.5, seed=i))  # grid loser
        lines.append(_row("rq2", "deepfm", "alpha0_control", i, ctrl, alpha=0.0, seed=i, kept=0, churn=0.0299,
                          before=0.0305))
    lines.append(_row("rq2", "deepfm", "ensemble", "", 0.812, churn=0.0305))
    lines.append(_row("rq2", "deepfm", "distill", 1, 0.803, teacher=2))
    lines.append(_row("rq2", "deepfm", "distill", 3, 0.7935, teacher=2))
    lines.append(_row("rq3", "deepfm", "pretrained_best", 2, 0.810))
    lines.append(_row("rq3", "deepfm", "dml_same", 2, 0.815))
    lines.append(_row("rq3", "deepfm", "dml_different", 2, 0.817, selected=1))
    lines.append(_row("rq3", "deepfm", "dml_different", 2, 0.600, selected=0))
    for n, members in ((3, [1, 2, 3]), (2, [1, 2])):
        for i in members:
            lines.append(_row("rq4", "deepfm", "pretrained", i, 0.80 + 0.001 * i, n=n))
            lines.append(_row("rq4", "deepfm", "mutual_pretrained", i, 0.81 + 0.001 * i, n=n))
    p = tmp_path / "results.csv"
    p.write_text("".join(lines))
    return p


def _table_rows(md: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().startswith(first_cell)]


def test_read_results_parses_numbers(results_csv):
    rows = report.read_results(results_csv)
    assert rows[0]["test_auc"] == pytest.approx(0.8) and rows[0]["instance"] == 1 and rows[0]["n_models"] == ""
    report.write_results(results_csv.with_name("again.csv"), rows)
    assert report.read_results(results_csv.with_name("again.csv")) == rows


def test_table1_layout_means_and_relaimp(results_csv):
    rows = report.read_results(results_csv)
    md = report.table1(rows, None, None)
    assert md.startswith("### DeepFM")
    header = [c.strip() for c in md.splitlines()[2].strip("|").split("|")]
    assert header == ["setting", "#1", "#2", "#3", "mean ± std", "RelaImp", "test logloss", "churn", "kept start"]
    ind = _table_rows(md, "independent")[0]
    assert ind[1:4] == ["0.80000", "0.81000", "0.79000"]
    assert ind[4] == f"{0.8:.5f} ± {np.std([0.8, 0.81, 0.79], ddof=1):.5f}"
    ft = _table_rows(md, "mutual with pretraining")[0]
    assert ft[1:4] == ["0.81000", "0.81500", "0.79900"]  # the grid loser (selected=0) is left out
    assert ft[5] == f"{relaimp(np.mean([0.81, 0.815, 0.799]), 0.8):+.3f}%"
    assert ft[7] == "0.0305 -> 0.0210" and ft[8] == "1/3"  # churn before -> after; members that kept their start
    assert ind[7] == "0.0305" and ind[8] == ""  # the pretrained instances' churn is the ensemble's members'
    ctrl = _table_rows(md, "control: continued")[0]
    assert ctrl[7] == "0.0305 -> 0.0299" and ctrl[8] == "0/3"
    dist = _table_rows(md, "control: distillation")[0]
    assert "teacher #2" in dist[0] and dist[2] == "" and dist[1] == "0.80300"
    ens = _table_rows(md, "control: ensemble")[0]
    assert ens[4] == "0.81200" and ens[5] == f"{relaimp(0.812, 0.8):+.3f}%"
    assert len(_table_rows(md, "control: continued")) == 1
    assert len(_table_rows(md, "mutual from scratch")) == 1


def test_table1_shows_the_papers_numbers_for_criteo(results_csv):
    rows = report.read_results(results_csv)
    md = report.table1(rows, "criteo", report.load_reference())
    paper = [0.81206, 0.81208, 0.81206, 0.81208]  # the paper's Table 1, Criteo, DeepFM, instances 1-4
    ref = report.paper_values(report.load_reference(), "table1", "criteo", "deepfm", "independent")
    assert list(ref) == paper
    ind = _table_rows(md, "independent")[0]
    assert "paper (criteo) mean" in md
    assert ind[9] == f"{np.mean(paper):.5f}"
    assert "paper" not in report.table1(rows, "mydata", report.load_reference())


def test_shipped_reference_is_the_papers_table():
    """The packaged copy of paper_tables.csv (read by the reports) equals ../shared/paper's."""
    import csv
    from importlib import resources

    shared = Path(__file__).resolve().parents[2].parent / "shared" / "paper" / "paper_tables.csv"
    if not shared.is_file():
        pytest.skip("../shared/paper is absent")
    rows = lambda text: [tuple(r) for r in csv.reader(text.splitlines()) if r]
    shipped = resources.files("mutualctr").joinpath("reference/paper_tables.csv").read_text()
    assert rows(shipped) == rows(shared.read_text())


def test_paired_tests_against_hand_computation(results_csv):
    from scipy import stats as sps

    rows = report.read_results(results_csv)
    tests = {t["comparison"]: t for t in report.paired_tests(rows)}
    d = np.subtract([0.810, 0.815, 0.799], [0.800, 0.810, 0.790])
    t = d.mean() / (d.std(ddof=1) / np.sqrt(3))
    got = tests["finetuned - pretrained"]
    assert got["n"] == 3 and got["t"] == pytest.approx(t) and got["p"] == pytest.approx(2 * sps.t.sf(abs(t), 2))
    d2 = np.subtract([0.810, 0.815, 0.799], [0.805, 0.812, 0.796])
    assert tests["finetuned - alpha0 control"]["mean_diff"] == pytest.approx(d2.mean())
    assert tests["finetuned - distilled (student instances)"]["n"] == 2


def test_table2_and_tables34(results_csv):
    rows = report.read_results(results_csv)
    t2 = report.table2(rows, None, None)
    r = _table_rows(t2, "DeepFM")[0]
    assert r == ["DeepFM", "#2", "0.81000", "0.81500", f"{relaimp(0.815, 0.81):+.3f}%", "0.81700",
                 f"{relaimp(0.817, 0.81):+.3f}%"]
    t34 = report.table34(rows, None, None)
    body = [line for line in t34.splitlines() if line.startswith("| 3") or line.startswith("| 2")]
    assert len(body) == 2
    three = [c.strip() for c in body[0].strip("|").split("|")]
    assert three[1] == "#1, #2, #3" and three[2].startswith(f"{0.802:.5f} ±") and three[3].startswith(f"{0.812:.5f} ±")


def test_render_and_rerender(results_csv, tmp_path):
    rows = report.read_results(results_csv)
    meta = {"dataset": "criteo", "reference": True, "settings": {"models": ["deepfm"], "instances": 3},
            "bootstrap": [{"model": "deepfm", "instance": 2, "comparison": "finetuned - pretrained", "diff": 0.005,
                           "low": 0.001, "high": 0.009, "level": 0.95, "resamples": 1000, "seed": 0, "p_le_0": 0.01}]}
    text = report.render_tables(rows, meta)
    for title in ("## Table 1", "## Significance", "## Grid", "## Table 2", "## Tables 3-4"):
        assert title in text
    assert "[+0.00100, +0.00900]" in text
    (tmp_path / "stats.json").write_text(json.dumps(meta))
    assert report.rerender(tmp_path) == text


def test_compare_summarises_each_experiment_per_model(results_csv, tmp_path):
    from typer.testing import CliRunner

    from mutualctr.cli import app

    (tmp_path / "stats.json").write_text(json.dumps({"choices": {"deepfm": {"alpha": 1.0, "lr": 1e-4}}}))
    (r,) = report.compare_rows(tmp_path, "default")
    assert (r["model"], r["alpha"], r["kept_start"]) == ("deepfm", 1.0, "1/3")
    assert r["pretrained"] == pytest.approx(np.mean([0.800, 0.810, 0.790]))
    assert r["finetuned"] == pytest.approx(np.mean([0.810, 0.815, 0.799]))  # the grid's loser left out
    assert r["finetuned - pretrained"]["mean_diff"] == pytest.approx(np.mean([0.010, 0.005, 0.009]))
    assert r["finetuned - distilled (student instances)"]["mean_diff"] == pytest.approx(
        np.mean([0.810 - 0.803, 0.799 - 0.7935]))
    assert (r["churn_finetuned"], r["churn_control"]) == ("0.0305 -> 0.0210", "0.0305 -> 0.0299")
    assert r["ensemble"] == pytest.approx(0.812)
    res = CliRunner().invoke(app, ["compare", str(tmp_path), str(tmp_path), "--label", "a", "--label", "b"])
    assert res.exit_code == 0, res.output
    a, b = _table_rows(res.output, "a")[0], _table_rows(res.output, "b")[0]
    assert a[1:] == b[1:] and a[:5] == ["a", "DeepFM", "1", "0.80000", "0.80800"]
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "no results.csv" in res.output


def test_compare_shows_the_mean_ece_of_the_finetuned_members_and_the_control(results_csv, tmp_path):
    rows = report.read_results(tmp_path / "results.csv")
    for r in rows:  # as an experiment writes them since issue 27: each group member's ECE on test
        if r["setting"] == "mutual_pretrained":
            r["test_ece"] = 0.01 * r["instance"]
        elif r["setting"] == "alpha0_control":
            r["test_ece"] = 0.05
    report.write_results(tmp_path / "results.csv", rows)
    assert report.read_results(tmp_path / "results.csv")[2]["test_ece"] == 0.01
    (tmp_path / "stats.json").write_text(json.dumps({"choices": {"deepfm": {"alpha": 1.0, "lr": 1e-4}}}))
    (r,) = report.compare_rows(tmp_path, "default")
    assert r["ece_finetuned"] == pytest.approx(0.02) and r["ece_control"] == pytest.approx(0.05)
    table = report.compare_table([("a", tmp_path)])
    assert "ECE finetuned" in table and "| 0.0200 | 0.0500 |" in table
    md = report.table1(rows, "criteo", None)  # table 1 gains the members' mean ECE where recorded
    assert _table_rows(md, "setting")[0][-1] == "test ECE"
    assert _table_rows(md, "mutual with pretraining")[0][-1] == "0.0200"
    assert _table_rows(md, "independent")[0][-1] == ""
