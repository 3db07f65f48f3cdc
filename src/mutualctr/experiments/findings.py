"""What an experiment found, in words: one paragraph per model on RQ2's finetuning.

Per model: did mutual finetuning beat its alpha-0 control (effect in test AUC, paired t-test p,
95% t-interval of the mean paired difference over the instances), and its pretrained start; what
happened to churn and to test logloss; how many members kept their start. When the control kept
every start (no extra epoch beat the start on dev), the control *is* the pretrained models, so
its comparison duplicates "finetuned - pretrained": said in words, not left for the reader to
spot in the tables. A caveat on n (instances) and on the data closes the paragraph.

:func:`collect` reads the rows of results.csv (as :func:`mutualctr.experiments.report.read_results`
returns them) and stats.json into :class:`ModelFindings`; :func:`paragraphs` words them. This
module imports nothing from :mod:`.report` (which calls it), so display names come in as ``labels``.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from scipy import stats

from mutualctr.experiments.stats import mean_std, paired_interval, paired_ttest

ALPHA = 0.05  # the significance level the words use
SECTION = "What this run found"


@dataclass(frozen=True)
class Effect:
    """Finetuned minus a baseline in test AUC, paired by instance."""

    n: int
    diff: float  # mean paired difference
    p: float  # two-sided paired t-test (nan: fewer than 2 pairs or the same difference on every pair)
    low: float  # 95% t-interval of the mean difference
    high: float


@dataclass(frozen=True)
class Group:
    """The members of one finetuning (the chosen mutual one, or the alpha-0 control)."""

    n: int
    kept: int  # members whose finetuning never beat their start on dev
    logloss: float  # mean test logloss
    churn_before: float  # mean |p_i - p_j| between the members on test, before -> after
    churn_after: float

    @property
    def kept_all(self) -> bool:
        return self.n > 0 and self.kept == self.n


@dataclass(frozen=True)
class ModelFindings:
    model: str
    label: str
    alpha: Optional[float]  # the alpha chosen on dev
    pretrained_logloss: float
    finetuned: Group
    control: Optional[Group]
    vs_control: Optional[Effect]
    vs_pretrained: Optional[Effect]


def _selected(r: Mapping) -> bool:
    return r.get("selected", "") in ("", None, 1, "1", True)


def _float(x: Any) -> float:
    return float("nan") if x in ("", None) else float(x)


def _per_setting(rows: Sequence[Mapping], model: str) -> dict[str, dict[int, Mapping]]:
    """{setting: {instance: row}} of the chosen RQ1/RQ2 rows of ``model``."""
    out: dict[str, dict[int, Mapping]] = {}
    for r in rows:
        if r["model"] == model and r["question"] in ("rq1", "rq2") and _selected(r) and r.get("instance", "") != "":
            out.setdefault(r["setting"], {})[int(r["instance"])] = r
    return out


def _group(members: dict[int, Mapping]) -> Group:
    flags = [int(r["kept_start"]) for r in members.values() if r.get("kept_start", "") != ""]
    first = next(iter(members.values()))
    return Group(n=len(members), kept=sum(flags),
                 logloss=mean_std([_float(r.get("test_logloss")) for r in members.values()])[0],
                 churn_before=_float(first.get("churn_before")), churn_after=_float(first.get("churn")))


def _effect(base: dict[int, Mapping], finetuned: dict[int, Mapping]) -> Optional[Effect]:
    common = sorted(set(base) & set(finetuned))
    if not common:
        return None
    a = [base[i]["test_auc"] for i in common]
    b = [finetuned[i]["test_auc"] for i in common]
    t = paired_ttest(a, b)
    low, high = paired_interval(a, b)
    return Effect(n=t.n, diff=t.mean_diff, p=t.p, low=low, high=high)


def collect(rows: Sequence[Mapping], stats: Mapping[str, Any],
            labels: Optional[Mapping[str, str]] = None) -> list[ModelFindings]:
    """One :class:`ModelFindings` per model that has a mutual finetuning (RQ2), in row order."""
    labels = labels or {}
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        per = _per_setting(rows, model)
        fin, pre, ctrl = (per.get(s, {}) for s in ("mutual_pretrained", "independent", "alpha0_control"))
        if not fin:
            continue
        alpha = (stats.get("choices", {}).get(model) or {}).get("alpha")
        out.append(ModelFindings(
            model=model, label=labels.get(model, model), alpha=None if alpha in ("", None) else float(alpha),
            pretrained_logloss=mean_std([_float(r.get("test_logloss")) for r in pre.values()])[0],
            finetuned=_group(fin), control=_group(ctrl) if ctrl else None,
            vs_control=_effect(ctrl, fin) if ctrl else None, vs_pretrained=_effect(pre, fin) if pre else None))
    return out


# ---- words ----------------------------------------------------------------------------------------
def _p(p: float) -> str:
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def significant(e: Effect) -> bool:
    return e.p == e.p and e.p < ALPHA


def _numbers(e: Effect) -> str:
    """'+0.00123 test AUC (paired t-test p = 0.012, 95% CI [+0.00050, +0.00196])', with the
    verdict when not significant, or why there is no test."""
    head = f"{e.diff:+.5f} test AUC"
    if e.p != e.p:
        why = "one instance" if e.n < 2 else "the same difference on every instance"
        return f"{head} (no t-test: {why})"
    tail = "" if significant(e) else f"; not significant at n = {e.n}"
    return f"{head} (paired t-test p = {_p(e.p)}, 95% CI [{e.low:+.5f}, {e.high:+.5f}]{tail})"


def _verdict(e: Effect, baseline: str) -> str:
    if e.p != e.p and e.diff == 0:
        return f"mutual finetuning equals {baseline} on every instance: {_numbers(e)}"
    if not significant(e):
        return f"mutual finetuning did not beat {baseline} significantly: {_numbers(e)}"
    return (f"mutual finetuning beat {baseline}: {_numbers(e)}" if e.diff > 0
            else f"mutual finetuning did worse than {baseline}: {_numbers(e)}")


def _change(before: float, after: float, nd: int, up: str, down: str) -> str:
    b, a = round(before, nd), round(after, nd)
    return "stayed the same" if a == b else (up if a > b else down)


def _churn(f: ModelFindings) -> str:
    g = f.finetuned
    if g.churn_after != g.churn_after:
        return ""
    if g.churn_before != g.churn_before:
        s = f"Churn (mean |p_i - p_j| between the members on test) after finetuning: {g.churn_after:.4f}"
    else:
        verb = _change(g.churn_before, g.churn_after, 4, "rose", "fell")
        s = (f"Churn (mean |p_i - p_j| between the members on test) {verb} with mutual finetuning, "
             f"{g.churn_before:.4f} -> {g.churn_after:.4f}")
    c = f.control
    if c is not None and c.churn_after == c.churn_after and c.churn_before == c.churn_before:
        s += f" (control: {c.churn_before:.4f} -> {c.churn_after:.4f})"
    return s + "."


def _logloss(f: ModelFindings) -> str:
    ft = f.finetuned.logloss
    if ft != ft or f.pretrained_logloss != f.pretrained_logloss:
        return ""
    s = (f"Test logloss (lower is better) of the finetuned models: {ft:.5f}, "
         f"{_than(ft, f.pretrained_logloss)} pretrained ({f.pretrained_logloss:.5f})")
    if f.control is not None and f.control.logloss == f.control.logloss:
        s += f" and {_than(ft, f.control.logloss)} the control ({f.control.logloss:.5f})"
    return s + "."


def _than(x: float, base: float) -> str:
    """Lower is better, compared as printed (5 decimals)."""
    a, b = round(x, 5), round(base, 5)
    return "the same as" if a == b else ("worse than" if a > b else "better than")


def _kept(f: ModelFindings) -> list[str]:
    g, c = f.finetuned, f.control
    out = []
    if g.kept_all:
        ctrl = f" (the control kept {c.kept}/{c.n})" if c is not None and not c.kept_all else ""
        out.append(f"Mutual finetuning kept every start ({g.kept}/{g.n}): no finetuning epoch beat the start on "
                   f"dev, so the finetuned models are the pretrained ones{ctrl}.")
    if c is not None and c.kept_all:
        out.append(f"The alpha-0 control kept every start ({c.kept}/{c.n}): its extra epoch never beat the start "
                   "on dev, so the control is the pretrained models, its Table 1 row equals 'independent', and "
                   "'finetuned - alpha0 control' duplicates 'finetuned - pretrained' in the t-test table.")
    if not out:
        ctrl = f", control {c.kept}/{c.n}" if c is not None else ""
        out.append(f"Members that kept their start: finetuned {g.kept}/{g.n}{ctrl}.")
    return out


def model_paragraph(f: ModelFindings) -> str:
    """The findings for one model in plain sentences."""
    alpha = f" (alpha {f.alpha:g} chosen on dev)" if f.alpha is not None else ""
    s = []
    if f.vs_control is not None:
        s.append(f"{f.label}{alpha}: {_verdict(f.vs_control, 'its alpha-0 control')}.")
        same = f.finetuned.kept_all or (f.control is not None and f.control.kept_all)  # said in _kept
        if f.vs_pretrained is not None and not same:
            s.append(f"Against the pretrained start: {_numbers(f.vs_pretrained)}.")
    elif f.vs_pretrained is not None:
        s.append(f"{f.label}{alpha}: {_verdict(f.vs_pretrained, 'the pretrained start')} (no alpha-0 control).")
    else:
        s.append(f"{f.label}{alpha}: no instance to compare.")
    s += [_churn(f), _logloss(f)] + _kept(f)
    return " ".join(x for x in s if x)


def paragraphs(found: Sequence[ModelFindings], data: str) -> list[str]:
    """A summary line, one paragraph per model, and the caveat (n and ``data``, e.g. 'synthetic data')."""
    if not found:
        return []
    wins = [f.label for f in found if f.vs_control is not None and significant(f.vs_control)
            and f.vs_control.diff > 0]
    ns = sorted({f.finetuned.n for f in found})
    n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    head = (f"On {data}, mutual finetuning beat its alpha-0 control significantly (p < {ALPHA:g}) for "
            f"{len(wins)} of {len(found)} models" + (f" ({', '.join(wins)})." if wins else "."))
    df = max(ns[0] - 1, 1)
    caveat = (f"Caveat: n = {n} instances per model on {data}. A paired t-test on {n} pairs has little power "
              f"(its 95% CI spans +-{_tcrit(df):.1f} standard errors), so 'not significant' does not mean 'no "
              "effect', and these numbers say nothing about other data.")
    return [head] + [model_paragraph(f) for f in found] + [caveat]


def _tcrit(df: int) -> float:
    return float(stats.t.ppf(0.975, df))


def render(rows: Sequence[Mapping], stats: Mapping[str, Any], data: str,
           labels: Optional[Mapping[str, str]] = None, width: Optional[int] = None) -> str:
    """The paragraphs separated by blank lines ('' when no model was finetuned); ``width`` wraps."""
    paras = paragraphs(collect(rows, stats, labels), data)
    if width:
        paras = [textwrap.fill(p, width) for p in paras]
    return "\n\n".join(paras)


def data_words(meta: Mapping[str, Any]) -> str:
    """How the paragraph names the data: stats.json's ``data`` (the demo: 'synthetic data ...'),
    else its data set."""
    return meta.get("data") or f"{meta.get('dataset') or 'this'} data"


__all__ = ["Effect", "Group", "ModelFindings", "collect", "paragraphs", "model_paragraph", "render",
           "data_words", "SECTION", "significant"]
