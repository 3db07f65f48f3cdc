"""PNG plots (matplotlib, Agg backend): test AUC per setting per model, the alpha curve (mean
dev and test AUC of the finetuned group against alpha, the alpha-0 control and the start as
lines), AUC vs the number of co-trained models (RQ4) and the reliability curves of the finetuned
members and the alpha-0 control."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from mutualctr.experiments.labels import LABELS
from mutualctr.experiments.stats import mean_std
from mutualctr.results import Calibration

ORDER = ["independent", "mutual_scratch", "mutual_pretrained", "alpha0_control", "distill", "ensemble"]
SHORT = {"independent": "indep.", "mutual_scratch": "DML\nscratch", "mutual_pretrained": "DML\nfinetune",
         "alpha0_control": "alpha=0\nctrl", "distill": "distill", "ensemble": "ensemble"}


def _plt():
    # matplotlib is imported on first plot, not with the module: choosing the Agg backend at import
    # would change the backend of a session that imports mutualctr, and `mutualctr compare`
    # (which reads report.py) would load matplotlib for nothing
    import matplotlib  # lazy: see above

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after the backend is chosen

    return plt


def _save(plt, fig, axes, ylabel: str, path: Path) -> Path:
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _selected(r) -> bool:
    return r.get("selected", "") in ("", None, 1, "1", True)


def plot_settings(rows: Sequence[dict], path: Path) -> Path | None:
    """One panel per model: mean test AUC +- std (over instances) for each setting present."""
    models = []
    for r in rows:
        if r["setting"] in ORDER and r["model"] not in models:
            models.append(r["model"])
    if not models:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        xs, ms, ss = [], [], []
        for s in ORDER:
            vals = [r["test_auc"] for r in rows if r["model"] == model and r["setting"] == s and _selected(r)
                    and r["question"] in ("rq1", "rq2")]
            if vals:
                m, sd = mean_std(vals)
                xs.append(SHORT[s])
                ms.append(m)
                ss.append(sd)
        ax.errorbar(range(len(xs)), ms, yerr=ss, fmt="o", capsize=4, color="tab:blue")
        if ms:
            ax.axhline(ms[0], color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, fontsize=7)
        ax.set_title(LABELS.get(model, model), fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)
    return _save(plt, fig, axes, "test AUC (mean ± std)", path)


def plot_n_models(rows: Sequence[dict], path: Path) -> Path | None:
    """AUC vs number of co-trained models: the pretrained members and the same members finetuned."""
    rq4 = [r for r in rows if r["question"] == "rq4"]
    models = sorted({r["model"] for r in rq4})
    if not models:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        for setting, color, label in (("pretrained", "grey", "pretrained members"),
                                      ("mutual_pretrained", "tab:red", "after mutual finetuning")):
            ns = sorted({r["n_models"] for r in rq4 if r["model"] == model and r["setting"] == setting})
            stats = [mean_std([r["test_auc"] for r in rq4 if r["model"] == model and r["setting"] == setting
                               and r["n_models"] == n]) for n in ns]
            ax.errorbar(ns, [m for m, _ in stats], yerr=[s for _, s in stats], fmt="o-", capsize=4,
                        color=color, label=label)
        ax.set_xlabel("number of co-trained models")
        ax.set_xticks(sorted({r["n_models"] for r in rq4 if r["model"] == model}))
        ax.set_title(LABELS.get(model, model), fontsize=10)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.legend(fontsize=7)
    return _save(plt, fig, axes, "test AUC (mean ± std)", path)


def plot_alpha(rows: Sequence[dict], path: Path) -> Path | None:
    """One panel per model: mean dev and test AUC of the RQ2 group at each alpha tried (log
    scale), with the alpha-0 control and the pretrained start as horizontal lines."""
    rq2 = [r for r in rows if r["question"] == "rq2"]
    models = [m for m in dict.fromkeys(r["model"] for r in rq2 if r["setting"] == "mutual_pretrained")]
    if not models:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rq2 if r["model"] == model]
        lrs = sorted({r["lr"] for r in mine if r["setting"] == "mutual_pretrained"})
        for lr in lrs:
            alphas = sorted({r["alpha"] for r in mine if r["setting"] == "mutual_pretrained" and r["lr"] == lr})
            for split, style in (("dev", "o-"), ("test", "s--")):
                ys = [mean_std([r[f"{split}_auc"] for r in mine if r["setting"] == "mutual_pretrained"
                                and r["alpha"] == a and r["lr"] == lr])[0] for a in alphas]
                ax.plot(alphas, ys, style, ms=4, label=f"{split}" + (f" lr {lr:g}" if len(lrs) > 1 else ""))
            chosen = [r["alpha"] for r in mine if r["setting"] == "mutual_pretrained" and r["lr"] == lr
                      and r.get("selected") == 1]
            if chosen:
                ax.axvline(chosen[0], color="tab:red", lw=0.8, ls=":")
        for setting, color, label in (("alpha0_control", "tab:green", "alpha=0 test"),
                                      ("independent", "grey", "start test")):
            vals = [r["test_auc"] for r in mine if r["setting"] == setting]
            if vals:
                ax.axhline(mean_std(vals)[0], color=color, lw=0.8, ls="--", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("alpha (mutual-loss weight)")
        ax.set_title(LABELS.get(model, model), fontsize=10)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    return _save(plt, fig, axes, "mean AUC of the group", path)


def _curve_of(run: str) -> list | None:
    """The test reliability curve group.json records for member ``run`` (None without one)."""
    group = Path(run).parent / "group.json"
    if not group.is_file():
        return None
    for m in json.loads(group.read_text()).get("members", []):
        if Path(m.get("run_dir", "")) == Path(run) and m.get("calibration"):
            return Calibration.from_dict(m["calibration"]).bins
    return None


def plot_reliability(curves: dict[str, dict[str, list]], path: Path) -> Path | None:
    """One panel per model: observed click rate against mean predicted probability per bin
    (:func:`mutualctr.metrics.calibration`'s bins), one line per setting, and the diagonal."""
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(3.4 * len(curves), 3.4), squeeze=False)
    for ax, (model, by_setting) in zip(axes[0], curves.items()):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="calibrated")
        for setting, bins in by_setting.items():
            ax.plot([b.mean_predicted for b in bins], [b.observed for b in bins], "o-", ms=3,
                    label=SHORT.get(setting, setting).replace("\n", " "))
        ax.set_xlabel("mean predicted probability")
        ax.set_title(LABELS.get(model, model), fontsize=10)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    return _save(plt, fig, axes, "observed click rate", path)


def reliability_curves(rows: Sequence[dict]) -> dict[str, dict[str, list]]:
    """Per model, the test reliability curve of the first instance of the chosen finetuned group
    and of the alpha-0 control (RQ2 rows whose group.json records one)."""
    out: dict[str, dict[str, list]] = {}
    for r in rows:
        if r["question"] != "rq2" or r["setting"] not in ("mutual_pretrained", "alpha0_control"):
            continue
        if not _selected(r) or r["setting"] in out.get(r["model"], {}) or not r.get("run"):
            continue
        curve = _curve_of(str(r["run"]))
        if curve:
            out.setdefault(r["model"], {})[r["setting"]] = curve
    return out


def plot_online(rows: Sequence[dict], path: Path) -> Path | None:
    """The online experiment: the members' mean AUC, ECE and version churn on the next period,
    per period, one line per arm."""
    periods = sorted({r["period"] for r in rows})
    if not periods:
        return None
    plt = _plt()
    panels = (("auc", "AUC on the next period"), ("ece", "ECE"), ("version_churn", "version churn"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for arm in dict.fromkeys(r["arm"] for r in rows):
            pts = [(k, mean_std([r[key] for r in rows if r["arm"] == arm and r["period"] == k
                                 and r[key] is not None])[0]) for k in periods]
            pts = [(k, v) for k, v in pts if v == v]
            if pts:
                ax.plot([k for k, _ in pts], [v for _, v in pts], "o-", ms=3, label=arm)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("period")
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    return _save(plt, fig, axes, "mean over members", path)


def write_plots(rows: Sequence[dict], out: Path) -> list[Path]:
    out = Path(out)
    made = [plot_settings(rows, out / "auc_by_setting.png"), plot_alpha(rows, out / "auc_vs_alpha.png"),
            plot_n_models(rows, out / "auc_vs_n_models.png"),
            plot_reliability(reliability_curves(rows), out / "reliability.png")]
    return [p for p in made if p is not None]
