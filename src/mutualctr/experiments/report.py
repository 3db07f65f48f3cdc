"""results.csv, stats.json and tables.md in the paper's layout (Tables 1-4), with the controls,
the paired tests, the bootstrap intervals, the (alpha, lr) grid and the paper's numbers.

Everything in tables.md is rendered from results.csv and stats.json, so
``render_tables(read_results(csv), meta)`` reproduces it from the files alone.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from mutualctr import atomic
from mutualctr.errors import DataError
from mutualctr.experiments import findings, plots
from mutualctr.experiments.labels import LABELS
from mutualctr.experiments.stats import mean_std, paired_ttest, relaimp

FIELDS = ["question", "model", "setting", "n_models", "instance", "seed", "alpha", "lr", "teacher", "selected",
          "dev_auc", "dev_logloss", "test_auc", "test_logloss", "start_test_auc", "relaimp_vs_start",
          "kept_start", "churn", "churn_before", "train_time_s", "run", "test_ece", "test_calibration"]
#: test_ece / test_calibration: a group member's expected calibration error and predicted/observed
#: click rate on test (group.json's ``calibration``; empty for runs without it)
FLOATS = {"alpha", "lr", "dev_auc", "dev_logloss", "test_auc", "test_logloss", "start_test_auc",
          "relaimp_vs_start", "churn", "churn_before", "train_time_s", "test_ece", "test_calibration"}
INTS = {"n_models", "instance", "seed", "teacher", "selected", "kept_start"}

SETTINGS = {
    "independent": "independent",
    "mutual_scratch": "mutual from scratch",
    "mutual_pretrained": "mutual with pretraining (finetuned)",
    "alpha0_control": "control: continued training, alpha = 0",
    "distill": "control: distillation from the best",
    "ensemble": "control: ensemble of the pretrained",
}
TABLE1 = ["independent", "mutual_scratch", "mutual_pretrained"]
CONTROLS = ["alpha0_control", "distill", "ensemble"]


# ---- results.csv ---------------------------------------------------------------------------
def write_results(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt_cell(r.get(k, "")) for k in FIELDS})
    atomic.write_text(path, buf.getvalue())


def _fmt_cell(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)
    return "" if v is None else v


def read_results(path: Path) -> list[dict[str, Any]]:
    """results.csv with numbers parsed ('' stays ''); unknown columns are kept as text. A file
    that is not one (binary, no ``question``/``model``/``setting`` columns, a row cut short, a
    number that is not one) is a DataError naming the file and line."""
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a results.csv of mutualctr experiment (not text: {e.reason} at byte "
                        f"{e.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        missing = [c for c in ("question", "model", "setting") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: not a results.csv of mutualctr experiment (no column {missing[0]!r})")
        return [_parse_row(path, reader.line_num, r) for r in reader]
    except csv.Error as e:  # a NUL byte, ...
        raise DataError(f"{path}:{reader.line_num}: not a results.csv of mutualctr experiment ({e})") from None


def _parse_row(path: Path, line: int, r: dict[str, Any]) -> dict[str, Any]:
    if None in r or any(v is None for v in r.values()):  # more or fewer cells than the header
        raise DataError(f"{path}:{line}: a row of another width than the header (a file cut short?)")
    row: dict[str, Any] = {}
    for k, v in r.items():
        try:
            row[k] = "" if v == "" else float(v) if k in FLOATS else int(float(v)) if k in INTS else v
        except (ValueError, OverflowError):
            raise DataError(f"{path}:{line}: column {k}: {v!r} is not a number") from None
    for k in FIELDS:  # a file written before a column existed: the column, empty
        row.setdefault(k, "")
    return row


# ---- the paper's numbers ------------------------------------------------------------------------
def load_reference() -> list[dict[str, Any]]:
    """The paper's published test AUCs (Tables 1-4), shipped as mutualctr/reference/paper_tables.csv."""
    text = resources.files("mutualctr").joinpath("reference/paper_tables.csv").read_text()
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        r["test_auc"] = float(r["test_auc"])
        r["n_models"] = int(r["n_models"]) if r["n_models"] else ""
        rows.append(r)
    return rows


def paper_values(ref: Sequence[dict], table: str, dataset: str, model: str, setting: str,
                 n_models: Any = "") -> list[float]:
    label = LABELS.get(model, model)
    return [r["test_auc"] for r in ref if r["table"] == table and r["dataset"] == dataset
            and r["model"] == label and r["setting"] == setting and (n_models == "" or r["n_models"] == n_models)]


# ---- helpers --------------------------------------------------------------------------------------
def _selected(r: dict) -> bool:
    return r.get("selected", "") in ("", None, 1, "1", True)


def _num(x: Any, nd: int = 5) -> str:
    return "" if x in ("", None) or x != x else f"{x:.{nd}f}"


def _mean_std(vals: Sequence[float], nd: int = 5) -> str:
    m, s = mean_std(vals)
    if m != m:
        return ""
    return f"{m:.{nd}f}" if len(vals) == 1 else f"{m:.{nd}f} ± {s:.{nd}f}"


def _short(x: Any) -> str:
    return "" if x in ("", None) else f"{x:g}"


def _pct(x: float) -> str:
    return "" if x != x else f"{x:+.3f}%"


def _pvalue(x: float) -> str:
    return "n/a" if x != x else (f"{x:.3g}" if x >= 1e-4 else f"{x:.1e}")


def _markdown(header: Sequence[str], body: Sequence[Sequence[Any]], right_from: int = 1) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(" --- " if i < right_from else " ---: " for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _models(rows: Sequence[dict]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["model"] not in seen:
            seen.append(r["model"])
    return seen


def _by_instance(rows: Sequence[dict], model: str, setting: str, question: Optional[str] = None,
                 n_models: Any = None) -> dict[int, dict]:
    out = {}
    for r in rows:
        if r["model"] == model and r["setting"] == setting and _selected(r) \
                and (question is None or r["question"] == question) \
                and (n_models is None or r.get("n_models", "") == n_models) and r.get("instance", "") != "":
            out[int(r["instance"])] = r
    return out


def _aucs(d: dict[int, dict]) -> list[float]:
    return [d[k]["test_auc"] for k in sorted(d)]


# ---- Table 1 and the controls -------------------------------------------------------------------
def table1(rows: Sequence[dict], dataset: Optional[str], ref: Optional[Sequence[dict]]) -> str:
    parts = []
    rows = [r for r in rows if r["question"] in ("rq1", "rq2")]
    for model in _models(rows):
        per = {s: _by_instance(rows, model, s) for s in TABLE1 + ["alpha0_control", "distill"]}
        ens = [r for r in rows if r["model"] == model and r["setting"] == "ensemble"]
        if not any(per[s] for s in TABLE1):
            continue
        insts = sorted({i for s in per for i in per[s]})
        base = mean_std(_aucs(per["independent"]))[0]
        header = ["setting"] + [f"#{i}" for i in insts] + ["mean ± std", "RelaImp", "test logloss", "churn",
                                                          "kept start"]
        has_ece = any(r.get("test_ece", "") != "" for s in per for r in per[s].values())
        header += ["test ECE"] if has_ece else []  # group members' calibration (issue 27)
        show_ref = ref is not None and dataset in ("criteo", "avazu")
        if show_ref:
            header += [f"paper ({dataset}) mean", "paper RelaImp"]
            pbase = mean_std(paper_values(ref, "table1", dataset, model, "independent"))[0]
        body = []
        for s in TABLE1 + ["alpha0_control", "distill", "ensemble"]:
            if s == "ensemble":
                if not ens:
                    continue
                e = ens[0]
                vals = [e["test_auc"]]
                cells = [""] * len(insts)
                ll = _num(e["test_logloss"])
                churn, kept = "", ""
            else:
                d = per[s]
                if not d:
                    continue
                vals = _aucs(d)
                cells = [_num(d[i]["test_auc"]) if i in d else "" for i in insts]
                ll = _num(mean_std([d[i]["test_logloss"] for i in d])[0])
                churn = _churn_cell(s, list(d.values()), ens)
                flags = [d[i].get("kept_start") for i in d if d[i].get("kept_start", "") != ""]
                kept = f"{sum(int(f) for f in flags)}/{len(flags)}" if flags else ""
            label = SETTINGS[s]
            if s == "distill":
                t = next(iter(per[s].values())).get("teacher", "")
                label += f" (teacher #{t})" if t != "" else ""
            row = [label] + cells + [_mean_std(vals), "" if s == "independent" else _pct(relaimp(mean_std(vals)[0], base)),
                                     ll, churn, kept]
            row += [_num(_mean_of(per[s].values(), "test_ece") if s in per else "", 4)] if has_ece else []
            if show_ref:
                pv = paper_values(ref, "table1", dataset, model, s) if s in TABLE1 else []
                pm = mean_std(pv)[0]
                row += [_num(pm), "" if s == "independent" or not pv else _pct(relaimp(pm, pbase))]
            body.append(row)
        parts.append(f"### {LABELS.get(model, model)}\n\n" + _markdown(header, body))
    return "\n\n".join(parts)


def _churn_cell(setting: str, rows: list[dict], ens: list[dict]) -> str:
    """A group's churn (mean |p_i - p_j| over its members, test split), as ``before -> after``
    for finetunings; for the independent runs the ensemble's (the same four models)."""
    if setting == "independent":
        return _num(ens[0].get("churn", ""), 4) if ens else ""
    after = rows[0].get("churn", "")
    before = rows[0].get("churn_before", "")
    if after in ("", None):
        return ""
    return f"{_num(before, 4)} -> {_num(after, 4)}" if before not in ("", None) else _num(after, 4)


# ---- significance -------------------------------------------------------------------------------------
COMPARISONS = [  # (a, b, label): b - a over the instances both have
    ("independent", "mutual_pretrained", "finetuned - pretrained"),
    ("alpha0_control", "mutual_pretrained", "finetuned - alpha0 control"),
    ("independent", "alpha0_control", "alpha0 control - pretrained"),
    ("independent", "mutual_scratch", "mutual scratch - independent (same seeds)"),
    ("distill", "mutual_pretrained", "finetuned - distilled (student instances)"),
]


def paired_tests(rows: Sequence[dict]) -> list[dict[str, Any]]:
    out = []
    rows = [r for r in rows if r["question"] in ("rq1", "rq2")]
    for model in _models(rows):
        for a, b, label in COMPARISONS:
            da, db = _by_instance(rows, model, a), _by_instance(rows, model, b)
            common = sorted(set(da) & set(db))
            if len(common) < 2:
                continue
            t = paired_ttest([da[i]["test_auc"] for i in common], [db[i]["test_auc"] for i in common])
            out.append({"model": model, "comparison": label, **t.as_dict()})
    return out


def significance(rows: Sequence[dict], bootstrap: Sequence[dict]) -> str:
    tests = paired_tests(rows)
    parts = []
    if tests:
        body = [[LABELS.get(t["model"], t["model"]), t["comparison"], t["n"], f"{t['mean_diff']:+.5f}",
                 "n/a" if t["t"] != t["t"] else f"{t['t']:.2f}", _pvalue(t["p"])] for t in tests]
        parts.append("Paired t-test across instances (scipy.stats.ttest_rel, two-sided; the pairs are the same "
                     "instance before/after, or the same seed):\n\n"
                     + _markdown(["model", "comparison (b - a)", "n", "mean diff", "t", "p"], body, right_from=2))
    if bootstrap:
        b0 = bootstrap[0]
        body = [[LABELS.get(b["model"], b["model"]), b["comparison"], f"#{b['instance']}", f"{b['diff']:+.5f}",
                 f"[{b['low']:+.5f}, {b['high']:+.5f}]", f"{b['p_le_0']:.3f}"] for b in bootstrap]
        parts.append(f"Paired bootstrap of the test-AUC difference for the best-on-dev instance "
                     f"({b0['resamples']} resamples of the test rows with replacement, seed {b0['seed']}, "
                     f"{int(b0['level'] * 100)}% percentile interval; both models scored on the same resample; "
                     f"share <= 0 = fraction of resamples where b is not better):\n\n"
                     + _markdown(["model", "comparison (b - a)", "instance", "diff", "CI", "share <= 0"], body,
                           right_from=2))
    return "\n\n".join(parts)


def grid_table(rows: Sequence[dict], choices: dict) -> str:
    body = []
    for setting, tag in (("mutual_pretrained", "same-model group"), ("dml_different", "mixed group (RQ3)")):
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in rows:
            if r["setting"] == setting and r["question"] in ("rq2", "rq3"):
                key = ("mixed" if setting == "dml_different" else r["model"], r["alpha"], r["lr"])
                groups[key].append(r)
        for (model, a, lr), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
            flags = [int(r["kept_start"]) for r in rs if r.get("kept_start", "") != ""]
            body.append([LABELS.get(model, model), tag, _short(a), _short(lr), _num(mean_std([r["dev_auc"] for r in rs])[0]),
                         _num(mean_std([r["test_auc"] for r in rs])[0]), _num(rs[0].get("churn", ""), 4),
                         f"{sum(flags)}/{len(flags)}" if flags else "",
                         "**chosen**" if all(_selected(r) for r in rs) else ""])
    if not body:
        return ""
    return ("Mutual-loss weight alpha and finetuning learning rate, chosen on the mean dev AUC of the group's "
            "members (test AUC shown for reference only; churn = mean |p_i - p_j| between the finetuned members "
            "on test; kept start = members no evaluation improved on):\n\n"
            + _markdown(["model", "group", "alpha", "finetune lr", "mean dev AUC", "mean test AUC", "churn",
                         "kept start", ""], body, right_from=2))


# ---- Table 2 ----------------------------------------------------------------------------------------------
def table2(rows: Sequence[dict], dataset: Optional[str], ref: Optional[Sequence[dict]]) -> str:
    body = []
    show_ref = ref is not None and dataset in ("criteo", "avazu")
    for model in _models(rows):
        cells = {}
        for s in ("pretrained_best", "dml_same", "dml_different"):
            rs = [r for r in rows if r["model"] == model and r["setting"] == s and r["question"] == "rq3" and _selected(r)]
            cells[s] = rs[0]["test_auc"] if rs else float("nan")
        if cells["pretrained_best"] != cells["pretrained_best"]:
            continue
        inst = next(r["instance"] for r in rows if r["model"] == model and r["setting"] == "pretrained_best")
        base = cells["pretrained_best"]
        row = [LABELS.get(model, model), f"#{inst}", _num(base), _num(cells["dml_same"]), _pct(relaimp(cells["dml_same"], base)),
               _num(cells["dml_different"]), _pct(relaimp(cells["dml_different"], base))]
        if show_ref:
            pv = {s: mean_std(paper_values(ref, "table2", dataset, model, s))[0]
                  for s in ("pretrained_best", "dml_same", "dml_different")}
            row += [_num(pv["pretrained_best"]), _num(pv["dml_same"]), _num(pv["dml_different"])]
        body.append(row)
    if not body:
        return ""
    header = ["model", "best instance", "pretrained", "DML same", "RelaImp", "DML different", "RelaImp"]
    if show_ref:
        header += ["paper pretrained", "paper DML same", "paper DML different"]
    return _markdown(header, body)


# ---- Tables 3-4 ------------------------------------------------------------------------------------------
def table34(rows: Sequence[dict], dataset: Optional[str], ref: Optional[Sequence[dict]]) -> str:
    parts = []
    rq4 = [r for r in rows if r["question"] == "rq4"]
    for model in _models(rq4):
        ns = sorted({r["n_models"] for r in rq4 if r["model"] == model}, reverse=True)
        table = {"avazu": "table3", "criteo": "table4"}.get(str(dataset))
        show_ref = ref is not None and table is not None and paper_values(ref, table, dataset, model, "pretrained")
        body = []
        for n in ns:
            pre = _aucs(_by_instance(rq4, model, "pretrained", n_models=n))
            mut_d = _by_instance(rq4, model, "mutual_pretrained", n_models=n)
            mut = _aucs(mut_d)
            row = [n, ", ".join(f"#{i}" for i in sorted(mut_d)), _mean_std(pre), _mean_std(mut),
                   _pct(relaimp(mean_std(mut)[0], mean_std(pre)[0]))]
            if show_ref:
                pp = mean_std(paper_values(ref, table, dataset, model, "pretrained", n))[0]
                pm = mean_std(paper_values(ref, table, dataset, model, "mutual_pretrained", n))[0]
                row += [_num(pp), _num(pm), _pct(relaimp(pm, pp))]
            body.append(row)
        header = ["models", "instances", "pretrained mean ± std", "mutual mean ± std", "RelaImp"]
        if show_ref:
            header += ["paper pretrained", "paper mutual", "paper RelaImp"]
        parts.append(f"### {LABELS.get(model, model)}\n\n" + _markdown(header, body))
    return "\n\n".join(parts)


# ---- the whole page ------------------------------------------------------------------------------------------
def render_tables(rows: Sequence[dict], meta: dict[str, Any]) -> str:
    dataset = meta.get("dataset")
    ref = load_reference() if meta.get("reference") else None
    st = meta.get("settings", {})
    out = [f"# Experiment results ({dataset or 'unknown data'})", ""]
    out.append(f"Store `{meta.get('store', '?')}` (fingerprint `{meta.get('fingerprint', '?')}`); "
               f"models {', '.join(st.get('models', _models(rows)))}; {st.get('instances', '?')} instances "
               f"(seeds {st.get('seeds', '?')}); epochs {st.get('epochs') or 'from the configs'}; "
               f"grid alpha {st.get('alphas', '?')} x finetune lr {st.get('finetune_lrs', '?')}. "
               "All numbers are test AUC of the best-on-dev checkpoint; RelaImp = ((AUC - 0.5) / (AUC_base - 0.5) "
               "- 1) x 100% against the mean of the independent runs (Table 1), the best pretrained instance "
               "(Table 2) or the pretrained members of the same group (Tables 3-4).")
    if ref is not None:
        out.append("")
        out.append(f"*paper* columns: the numbers published in the paper for {dataset} (full data set, ~40M rows); "
                   "they are context, not targets for a small sample.")
    t1 = table1(rows, dataset, ref)
    if t1:
        out += ["", "## Table 1: independent vs mutual from scratch vs mutual with pretraining (+ controls)", "", t1]
    sig = significance(rows, meta.get("bootstrap", []))
    if sig:
        out += ["", "## Significance", "", sig]

    found = findings.render(rows, meta, findings.data_words(meta), LABELS)
    if found:
        out += ["", f"## {findings.SECTION}", "", found]
    g = grid_table(rows, meta.get("choices", {}))
    if g:
        out += ["", "## Grid (chosen on dev)", "", g]
    t2 = table2(rows, dataset, ref)
    if t2:
        out += ["", "## Table 2: DML with the same model vs with different models", "", t2]
    elif "rq3" in st.get("questions", []) and isinstance(meta.get("choices", {}).get("rq3"), str):
        out += ["", "## Table 2", "", meta["choices"]["rq3"]]
    t34 = table34(rows, dataset, ref)
    if t34:
        out += ["", "## Tables 3-4: AUC vs the number of co-trained models (worst on dev dropped each time)", "", t34]
    plots = [p for p in meta.get("plots", [])]
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(out) + "\n"


def write_report(out: Path, rows: Sequence[dict], meta: dict[str, Any]) -> dict[str, str]:
    """results.csv, stats.json, plots/*.png and tables.md into ``out``; returns their paths."""
    out = Path(out)
    write_results(out / "results.csv", rows)
    parsed = read_results(out / "results.csv")  # render from what was written
    meta = dict(meta)
    meta["paired_tests"] = paired_tests(parsed)
    meta["plots"] = [str(p) for p in plots.write_plots(parsed, out)]
    atomic.write_text(out / "stats.json", json.dumps(meta, indent=2, default=float))
    atomic.write_text(out / "tables.md", render_tables(parsed, meta))
    return {"results": str(out / "results.csv"), "tables": str(out / "tables.md"),
            "stats": str(out / "stats.json"), "plots": meta["plots"]}


def rerender(out: Path) -> str:
    """tables.md again from results.csv and stats.json (no training, no predictions)."""
    out = Path(out)
    meta = json.loads((out / "stats.json").read_text())
    text = render_tables(read_results(out / "results.csv"), meta)
    atomic.write_text(out / "tables.md", text)
    return text


# ---- one table across experiments (mutualctr compare) -----------------------------------------
COMPARE_DIFFS = ["finetuned - pretrained", "finetuned - alpha0 control", "finetuned - distilled (student instances)"]


def compare_rows(out: Path, label: str) -> list[dict[str, Any]]:
    """Per model of the experiment in ``out`` (its results.csv and stats.json): the chosen alpha,
    the mean test AUCs, the paired differences of the finetuned members with their p, churn
    before -> after for the finetuned group, the control and the distilled students, and how
    many finetuned members kept their start."""
    out = Path(out)
    for name in ("results.csv", "stats.json"):
        if not (out / name).is_file():
            raise FileNotFoundError(f"{out}: no {name} (not an experiment directory written by mutualctr experiment)")
    every = read_results(out / "results.csv")
    if not every:
        raise DataError(f"{out / 'results.csv'}: holds no rows (a file cut short?)")
    rows = [r for r in every if r["question"] in ("rq1", "rq2")]
    try:
        choices = json.loads((out / "stats.json").read_text()).get("choices", {})
    except (ValueError, AttributeError) as e:  # not JSON, not text, not a mapping
        raise DataError(f"{out / 'stats.json'}: not a stats.json of mutualctr experiment ({e})") from None
    tests = {(t["model"], t["comparison"]): t for t in paired_tests(rows)}
    result = []
    for model in _models(rows):
        per = {s: _by_instance(rows, model, s) for s in ("independent", "mutual_pretrained", "alpha0_control",
                                                          "distill")}
        fin = per["mutual_pretrained"]
        if not fin:
            continue  # an RQ1-only model: no finetuning to summarise
        ens = [r for r in rows if r["model"] == model and r["setting"] == "ensemble"]  # no instance: not in per
        kept = [r["kept_start"] for r in fin.values() if r.get("kept_start", "") != ""]
        result.append({
            "protocol": label, "model": model, "alpha": (choices.get(model) or {}).get("alpha", ""),
            "pretrained": mean_std(_aucs(per["independent"]))[0], "finetuned": mean_std(_aucs(fin))[0],
            **{c: tests.get((model, c)) for c in COMPARE_DIFFS},
            "churn_finetuned": _churn_cell("mutual_pretrained", list(fin.values()), ens),
            "churn_control": _churn_cell("alpha0_control", list(per["alpha0_control"].values()), ens)
            if per["alpha0_control"] else "",
            "churn_distilled": _churn_cell("distill", list(per["distill"].values()), ens) if per["distill"] else "",
            "ensemble": ens[0]["test_auc"] if ens else "",
            "kept_start": f"{sum(kept)}/{len(kept)}" if kept else "",
            "ece_finetuned": _mean_of(fin.values(), "test_ece"),
            "ece_control": _mean_of(per["alpha0_control"].values(), "test_ece"),
        })
    return result


def _mean_of(rows: Iterable[dict], key: str) -> float | str:
    """The mean of ``key`` over ``rows`` ('' when a row lacks it: an experiment written before it)."""
    vals = [r.get(key, "") for r in rows]
    return float(sum(vals) / len(vals)) if vals and all(v != "" for v in vals) else ""


def compare_table(experiments: Sequence[tuple[str, Path]]) -> str:
    """One markdown table, a row per (experiment, model): ``experiments`` = (label, directory)."""

    def diff(t: Optional[dict]) -> str:
        if not t:
            return ""
        s = f"{t['mean_diff']:+.5f} (p {_pvalue(t['p'])})"
        return f"**{s}**" if t["p"] == t["p"] and t["p"] < 0.05 else s

    body = []
    for label, out in experiments:
        for r in compare_rows(out, label):
            body.append([r["protocol"], LABELS.get(r["model"], r["model"]), _short(r["alpha"]), _num(r["pretrained"]),
                         _num(r["finetuned"]), *[diff(r[c]) for c in COMPARE_DIFFS], r["churn_finetuned"],
                         r["churn_control"], r["churn_distilled"], _num(r["ensemble"]), r["kept_start"],
                         _num(r["ece_finetuned"], 4), _num(r["ece_control"], 4)])
    header = ["protocol", "model", "alpha chosen", "pretrained", "finetuned", "finetuned - pretrained",
              "finetuned - control", "finetuned - distilled", "churn finetuned", "churn control",
              "churn distilled", "ensemble of the pretrained", "kept start", "ECE finetuned", "ECE control"]
    return _markdown(header, body, right_from=2)
