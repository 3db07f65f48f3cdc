"""The closing paragraph of an experiment ("What this run found") on hand-made rows of results.csv."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from mutualctr.experiments import findings, report

PRE = [0.7000, 0.7100, 0.7050]  # the pretrained (independent) test AUCs of instances 1-3


def _rows(fin, ctrl, *, model="deepfm", fin_ll=0.49518, pre_ll=0.49265, ctrl_ll=0.49300,
          fin_kept=(0, 0, 0), ctrl_kept=(0, 0, 0), churn=(0.0200, 0.0120), ctrl_churn=(0.0200, 0.0210)):
    """results.csv rows of one model: 3 independent runs, the chosen mutual finetuning (plus an
    unchosen alpha that must be ignored) and the alpha-0 control."""
    rows = []

    def add(setting, aucs, ll, kept=None, ch=None, selected="", alpha=""):
        for i, auc in enumerate(aucs, 1):
            rows.append({**dict.fromkeys(report.FIELDS, ""), "alpha": alpha, "lr": 1e-4 if alpha != "" else "",
                         "question": "rq2" if setting != "independent" else "rq1", "model": model,
                         "setting": setting, "instance": i, "selected": selected, "test_auc": auc,
                         "test_logloss": ll, "kept_start": "" if kept is None else kept[i - 1],
                         "churn_before": "" if ch is None else ch[0], "churn": "" if ch is None else ch[1]})

    add("independent", PRE, pre_ll)
    add("mutual_pretrained", [0.5] * 3, 0.9, (0, 0, 0), (0.02, 0.5), selected=0, alpha=1000.0)  # an alpha not chosen
    add("mutual_pretrained", fin, fin_ll, fin_kept, churn, selected=1, alpha=10.0)
    add("alpha0_control", ctrl, ctrl_ll, ctrl_kept, ctrl_churn, alpha=0.0)
    return rows


STATS = {"choices": {"deepfm": {"alpha": 10.0, "lr": 1e-4}}}


def _text(rows, data="synthetic data (160,000 rows)"):
    return findings.render(rows, STATS, data, report.LABELS)


def _expected_numbers(a, b):
    """The effect, p and 95% CI as the paragraph prints them, computed here by hand."""
    d = [y - x for x, y in zip(a, b)]
    m = sum(d) / len(d)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1))
    half = 4.302652729911275 * sd / math.sqrt(len(d))  # t_{0.975, 2}
    p = sps.ttest_rel(b, a).pvalue
    return f"{m:+.5f} test AUC (paired t-test p = {p:.3g}, 95% CI [{m - half:+.5f}, {m + half:+.5f}]"


def test_a_significant_gain_over_the_control_is_stated_with_effect_p_and_ci():
    ctrl = [a + 0.001 for a in PRE]
    fin = [0.7110, 0.7212, 0.7158]  # + 0.010, 0.0102, 0.0098 over the control
    text = _text(_rows(fin, ctrl))
    assert text.startswith("On synthetic data (160,000 rows), mutual finetuning beat its alpha-0 control "
                           "significantly (p < 0.05) for 1 of 1 models (DeepFM).")
    para = text.split("\n\n")[1]
    assert para.startswith("DeepFM (alpha 10 chosen on dev): mutual finetuning beat its alpha-0 control: "
                           + _expected_numbers(ctrl, fin) + ").")
    assert "Against the pretrained start: " + _expected_numbers(PRE, fin) in para
    assert "not significant" not in para.split("Against")[0]
    assert ("Churn (mean |p_i - p_j| between the members on test) fell with mutual finetuning, 0.0200 -> 0.0120 "
            "(control: 0.0200 -> 0.0210).") in para
    assert "Members that kept their start: finetuned 0/3, control 0/3." in para


def test_a_gain_that_is_not_significant_says_so_at_n_3():
    ctrl = list(PRE)
    ctrl[0] += 0.0001  # the control moved a little: no duplicate
    fin = [PRE[0] + 0.002, PRE[1] - 0.001, PRE[2] + 0.0005]
    text = _text(_rows(fin, ctrl))
    assert "for 0 of 1 models." in text
    para = text.split("\n\n")[1]
    assert para.startswith("DeepFM (alpha 10 chosen on dev): mutual finetuning did not beat its alpha-0 control "
                           "significantly: " + _expected_numbers(ctrl, fin) + "; not significant at n = 3).")
    assert "kept every start" not in para
    assert text.endswith("Caveat: n = 3 instances per model on synthetic data (160,000 rows). A paired t-test on "
                         "3 pairs has little power (its 95% CI spans +-4.3 standard errors), so 'not significant' "
                         "does not mean 'no effect', and these numbers say nothing about other data.")


def test_a_significant_loss_is_called_worse():
    ctrl = [a + 0.010 for a in PRE]
    fin = [PRE[0], PRE[1] + 0.003, PRE[2] - 0.002]
    para = _text(_rows(fin, ctrl)).split("\n\n")[1]
    assert "mutual finetuning did worse than its alpha-0 control: " + _expected_numbers(ctrl, fin) + ")." in para


def test_worse_logloss_is_said_against_the_pretrained_and_the_control():
    fin = [a + 0.001 for a in PRE]
    fin[1] += 0.0003
    para = _text(_rows(fin, [a + 0.0005 * i for i, a in enumerate(PRE)])).split("\n\n")[1]
    assert ("Test logloss (lower is better) of the finetuned models: 0.49518, worse than pretrained (0.49265) "
            "and worse than the control (0.49300).") in para
    para = _text(_rows(fin, PRE, fin_ll=0.44, ctrl_ll=0.44)).split("\n\n")[1]
    assert "0.44000, better than pretrained (0.49265) and the same as the control (0.44000)." in para


def test_a_control_that_kept_every_start_is_named_as_the_duplicate_of_the_pretrained():
    fin = [0.7110, 0.7212, 0.7158]
    rows = _rows(fin, PRE, ctrl_kept=(1, 1, 1), ctrl_ll=0.49265, ctrl_churn=(0.02, 0.02))
    # the tables do print two equal rows...
    tests = {t["comparison"]: t for t in report.paired_tests(rows)}
    assert tests["finetuned - pretrained"] == {**tests["finetuned - alpha0 control"],
                                                "comparison": "finetuned - pretrained"}
    # ... and the paragraph says why, once, instead of a second identical comparison
    para = _text(rows).split("\n\n")[1]
    assert ("The alpha-0 control kept every start (3/3): its extra epoch never beat the start on dev, so the "
            "control is the pretrained models, its Table 1 row equals 'independent', and 'finetuned - alpha0 "
            "control' duplicates 'finetuned - pretrained' in the t-test table.") in para
    assert "Against the pretrained start" not in para and para.count("paired t-test p") == 1


def test_a_finetuning_that_kept_every_start_is_said_and_identical_aucs_are_not_tested():
    rows = _rows(list(PRE), list(PRE), fin_kept=(1, 1, 1), ctrl_kept=(0, 1, 1), fin_ll=0.49265)
    para = _text(rows).split("\n\n")[1]
    assert para.startswith("DeepFM (alpha 10 chosen on dev): mutual finetuning equals its alpha-0 control on every "
                           "instance: +0.00000 test AUC (no t-test: the same difference on every instance).")
    assert ("Mutual finetuning kept every start (3/3): no finetuning epoch beat the start on dev, so the finetuned "
            "models are the pretrained ones (the control kept 2/3).") in para
    assert "the same as pretrained (0.49265)" in para and "Members that kept" not in para


def test_collect_is_typed_and_skips_models_without_a_finetuning():
    rows = _rows([a + 0.001 for a in PRE], PRE) + [
        {"question": "rq1", "model": "dcn", "setting": "independent", "instance": 1, "selected": "",
         "test_auc": 0.7, "test_logloss": 0.5, "kept_start": "", "churn": "", "churn_before": ""}]
    found = findings.collect(rows, STATS, report.LABELS)
    assert [f.label for f in found] == ["DeepFM"]
    f = found[0]
    assert f.alpha == 10.0 and f.finetuned.n == 3 and f.finetuned.kept == 0 and not f.control.kept_all
    assert f.vs_pretrained.diff == pytest.approx(0.001) and f.vs_pretrained.n == 3
    assert findings.render([r for r in rows if r["model"] == "dcn"], STATS, "x") == ""


def test_tables_md_has_the_section_naming_the_data(tmp_path):
    rows = _rows([0.7110, 0.7212, 0.7158], [a + 0.001 for a in PRE])
    page = report.render_tables(rows, {"dataset": "criteo", **STATS})
    assert "## What this run found\n\nOn criteo data, mutual finetuning beat" in page
    assert page.index("## Significance") < page.index("## What this run found")
    page = report.render_tables(rows, {"dataset": "criteo", "data": "synthetic data (2,500 rows)", **STATS})
    assert "On synthetic data (2,500 rows), mutual" in page and "n = 3 instances per model on synthetic" in page
