"""``mutualctr experiment online``: the daily update, period by period (issue 27).

A time-ordered raw file is cut into K consecutive periods of equal rows (file order is time
order). Period 0's store is prepared as usual; period k's store grows from period k-1's
(``prepare --vocab-from --grow``), and an evaluation store of period k+1 is encoded with period
k's vocabularies as they are (``--vocab-from``: the values new on day k+1 are OOV for a model of
day k, as in production). Period 0 pretrains N members (one per model, seeds 1..N). Each later
period k (1 .. K-2) trains three arms on period k, each from its own versions of period k-1
(period 0's members at k = 1):

- ``incremental``: each member warm-started alone (``train --init``);
- ``mutual``: the N members finetuned together (``mutual --init``, alpha);
- ``control``: the same with alpha 0;

and scores every member on all rows of period k+1: AUC, logloss, calibration, gAUC (when the
schema names ``group_by``), version churn against the member's previous version, and churn
between the arm's members. ``pretrained`` (period 0's members, never updated) is scored on
period 1 and on every later period as the stale baseline.

Everything is cached under OUT (stores, runs, one JSON of scores per period and arm), so an
interrupted experiment run again resumes where it stopped and writes the same tables.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import mutualctr as mc
from mutualctr import atomic
from mutualctr.config import ConfigError
from mutualctr.data.prepare import prepare
from mutualctr.data.schema import LIST_KINDS, load_schema
from mutualctr.data.store import Store
from mutualctr.experiments import plots
from mutualctr.experiments.periods import cut_periods
from mutualctr.experiments.stats import paired_ttest
from mutualctr.metrics import churn, version_churn
from mutualctr.results import Scores
from mutualctr.training.inference import predict_logits
from mutualctr.training.jobs import load_run
from mutualctr.training.shipped import find_config

ARMS = ("incremental", "mutual", "control")
MARKER = "online.json"


@dataclass(frozen=True)
class OnlineSettings:
    dataset: str
    periods: int
    models: list[str]
    alpha: float = 1.0
    lr: float = 1e-4  # the update's learning rate (every arm)
    epochs: int = 1  # the update's epochs (every arm)
    pretrain_epochs: int | None = None  # period 0 (default: the model config's)
    threads: int | None = None
    config_dir: str | None = None  # run configs: DIR/<model>.yaml or DIR/<dataset>/<model>.yaml
    time_column: str | None = None  # cut by the calendar periods of this column (else equal rows)
    period: str | None = None  # with time_column: day | week | month (default month)

    def marker(self) -> dict[str, Any]:
        """The settings as recorded in OUT/online.json (the calendar keys only when set, so an
        experiment of equal-row periods started before they existed resumes)."""
        d = asdict(self)
        return {k: v for k, v in d.items() if k not in ("time_column", "period") or v is not None}


def _stores(st: OnlineSettings, files: list[Path], out: Path) -> tuple[list[Path], list[Path | None]]:
    """The training store of each period (grown from the previous one) and the evaluation store of
    each period k >= 1 (period k's rows in period k-1's vocabularies)."""
    train, evals = [], [None]
    for k, f in enumerate(files):
        parent = train[-1] if train else None
        train.append(out / "stores" / f"p{k}")
        prepare(st.dataset, [f], train[-1], split="sequential", vocab_from=parent, grow=parent is not None,
                progress=False)
        if parent is not None:
            evals.append(out / "stores" / f"eval{k}")
            prepare(st.dataset, [f], evals[-1], split="sequential", vocab_from=parent, progress=False)
    return train, evals


def _resume(d: Path) -> bool:
    return d.exists()


def _pretrain(st: OnlineSettings, store: Path, out: Path) -> list[str]:
    runs = []
    for i, model in enumerate(st.models):
        d = out / "runs" / "p0" / f"m{i}-{model}"
        if not (d / "summary.json").is_file():
            cfg = find_config(model, Store.open(store).feature_map.dataset, st.config_dir).config
            mc.train(store, d, config=cfg, seed=i + 1, epochs=st.pretrain_epochs, resume=_resume(d), quiet=True,
                     threads=st.threads)
        runs.append(str(d))
    return runs


def _update(st: OnlineSettings, arm: str, store: Path, prev: list[str], d: Path) -> list[str]:
    """Arm ``arm`` of one period trained on ``store`` from ``prev``: its members' run directories."""
    if arm == "incremental":
        runs = []
        for i, run in enumerate(prev):
            m = d / f"m{i}"
            if not (m / "summary.json").is_file():
                mc.train(store, m, init=run, lr=st.lr, epochs=st.epochs, resume=_resume(m), quiet=True,
                         threads=st.threads)
            runs.append(str(m))
        return runs
    if not (d / "group.json").is_file():
        mc.mutual(store, d, init=prev, alpha=st.alpha if arm == "mutual" else 0.0, lr=st.lr, epochs=st.epochs,
                  resume=_resume(d), quiet=True, threads=st.threads)
    return [m["run_dir"] for m in json.loads((d / "group.json").read_text())["members"]]


def _all_logits(run: str, store) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels, logits and group ids of every row of ``store`` (its splits in order)."""
    model = load_run(run, store)[0]
    fm = store.feature_map
    ys, zs, gs = [], [], []
    for name in ("train", "dev", "test"):
        X, y = store.split(name)
        ys.append(np.asarray(y))
        zs.append(predict_logits(model, X, 0, "cpu"))
        gs.append(fm.group_ids(X))
    return np.concatenate(ys), np.concatenate(zs), None if fm.group_by is None else np.concatenate(gs)


def _score(period: int, arm: str, runs: list[str], prev: list[str] | None, store_path: Path, out: Path) -> list[dict]:
    """Each member of an arm scored on an evaluation store (cached in OUT/evals)."""
    cache = out / "evals" / f"p{period}-{arm}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    store = Store.open(store_path)
    rows, logits = [], []
    for i, run in enumerate(runs):
        y, z, g = _all_logits(run, store)
        logits.append(z)
        s = Scores.of(y, z, groups=g, group_by=store.feature_map.group_by)
        vc = version_churn(z, _all_logits(prev[i], store)[1]) if prev else {}
        rows.append({"period": period, "arm": arm, "member": i, "run": run, "auc": s.auc, "logloss": s.logloss,
                     "rows": s.rows, "calibration": s.calibration.ratio, "ece": s.calibration.ece,
                     "gauc": s.gauc.gauc if s.gauc else None, "version_churn": vc.get("mean_abs_diff"),
                     "rank_moved": vc.get("rank_moved")})
    between = churn(logits)["mean_abs_diff"]
    for r in rows:
        r["member_churn"] = between
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(cache, rows)
    return rows


def _grown_fields(fm) -> list[int]:
    """The fields whose vocabulary grows: counted and list fields (a sequence sharing another
    field's ids is left out: its values are that field's)."""
    return [i for i, f in enumerate(fm.fields)
            if f.spec is None or (f.kind in LIST_KINDS and not f.spec.get("vocab_from"))]


def new_id_share(parent_path: Path, child_path: Path) -> dict[str, float]:
    """Of a grown store: the share of its values (all counted and list fields) new since
    ``parent``, and the share of its rows that hold at least one new value (any list item too)."""
    parent, child = Store.open(parent_path), Store.open(child_path)
    pf, cf = parent.feature_map, child.feature_map
    grown = _grown_fields(cf)
    new = sum(cf.fields[i].vocab_size - pf.fields[i].vocab_size for i in grown)
    total = sum(cf.fields[i].vocab_size - 2 for i in grown)
    counted = [i for i in grown if cf.fields[i].spec is None]
    cols = [cf.id_fields.index(i) for i in counted]
    hit, rows = 0, 0
    for name in ("train", "dev", "test"):
        arrays = child.split_arrays(name)
        local = np.asarray(arrays.X)[:, cols].astype(np.int64) - np.array([cf.fields[i].offset for i in counted])
        has_new = (local >= np.array([pf.fields[i].vocab_size for i in counted])).any(axis=1)
        for i in cf.bag_fields:
            f = cf.fields[i]
            bag = np.asarray(arrays.bags[f.name]).astype(np.int64)
            has_new |= ((bag != 0) & (bag - f.offset >= pf.fields[i].vocab_size)).any(axis=1)
        hit += int(has_new.sum())
        rows += len(arrays.y)
    return {"new_values": new / total if total else 0.0, "rows_with_new": hit / rows if rows else 0.0}


def run_online(raw: Path, out: Path, st: OnlineSettings) -> dict[str, Any]:
    """The whole online experiment (resumable): scores rows, tables.md, online.csv, the plot."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ConfigError(f"--out {out}: holds files that are not an online experiment; choose another --out")
    schema = load_schema(st.dataset)
    if st.period is not None and st.time_column is None:
        raise ConfigError(f"--period {st.period}: needs --time-column COL (the column whose {st.period}s cut the rows)")
    marker = {"raw": str(Path(raw).resolve()), **st.marker()}
    if (out / MARKER).is_file() and json.loads((out / MARKER).read_text()) != marker:
        raise ConfigError(f"--out {out}: holds an online experiment with other settings; choose another --out")
    files, names = cut_periods(Path(raw), schema, st.periods, out / "periods", st.time_column, st.period)
    atomic.write_json(out / MARKER, marker)
    train, evals = _stores(st, files, out)
    pre = _pretrain(st, train[0], out)
    rows = []
    for k in range(1, st.periods):
        rows += _score(k, "pretrained", pre, None, evals[k], out)
    prev = {arm: pre for arm in ARMS}
    for k in range(1, st.periods - 1):
        for arm in ARMS:
            runs = _update(st, arm, train[k], prev[arm], out / "runs" / f"p{k}" / arm)
            rows += _score(k + 1, arm, runs, prev[arm], evals[k + 1], out)
            prev[arm] = runs
    shares = [new_id_share(train[k - 1], train[k]) for k in range(1, st.periods)]
    return _write(out, rows, shares, st, names)


def _write(out: Path, rows: list[dict], shares: list[dict], st: OnlineSettings,
           names: list[dict] | None = None) -> dict[str, Any]:
    text = online_tables(rows, shares, st, names)
    atomic.write_text(out / "tables.md", text)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")  # None is written empty
    w.writeheader()
    w.writerows(rows)
    atomic.write_text(out / "online.csv", buf.getvalue())
    plot = plots.plot_online(rows, out / "online.png")
    return {"rows": rows, "new_ids": shares, "tables": str(out / "tables.md"),
            "plots": [str(plot)] if plot else [], "periods": names}


def _fmt(x: Any, nd: int = 5) -> str:
    return "" if x is None or x != x else f"{x:.{nd}f}"


METRICS = (("auc", "AUC", 5), ("logloss", "logloss", 5), ("calibration", "pred/obs", 3), ("ece", "ECE", 4),
           ("gauc", "gAUC", 5), ("version_churn", "version churn", 4), ("rank_moved", "rank moved", 3),
           ("member_churn", "member churn", 4))


def online_tables(rows: list[dict], shares: list[dict], st: OnlineSettings, names: list[dict] | None = None) -> str:
    """Per period and arm the members' means, the averages over periods, the paired tests and the
    share of new ids per period (markdown)."""
    def mean(rs, key):
        vals = [r[key] for r in rs if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    arms = ["pretrained", *ARMS]
    head = "| period | arm | " + " | ".join(h for _, h, _ in METRICS) + " |\n|" + "---|" * (2 + len(METRICS)) + "\n"
    body = ""
    for k in sorted({r["period"] for r in rows}):
        for arm in arms:
            rs = [r for r in rows if r["period"] == k and r["arm"] == arm]
            if rs:
                body += f"| {k} | {arm} | " + " | ".join(_fmt(mean(rs, m), nd) for m, _, nd in METRICS) + " |\n"
    updated = sorted({r["period"] for r in rows if r["arm"] in ARMS})
    avg = ""
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm and r["period"] in updated]
        if rs:
            avg += f"| {arm} | " + " | ".join(_fmt(mean(rs, m), nd) for m, _, nd in METRICS) + " |\n"
    tests = ""
    for a, b in (("incremental", "mutual"), ("control", "mutual"), ("pretrained", "mutual")):
        for key in ("auc", "logloss"):
            pairs = _pairs(rows, a, b, key, updated)
            if pairs:
                t = paired_ttest([p[0] for p in pairs], [p[1] for p in pairs])
                tests += f"| {b} - {a} | {key} | {t.n} | {t.mean_diff:+.5f} | {_fmt(t.p, 4)} |\n"
    new = "".join(f"| {k} | {100 * s['new_values']:.1f}% | {100 * s['rows_with_new']:.1f}% |\n"
                  for k, s in enumerate(shares, 1))
    return (f"# Online experiment: {st.periods} periods, models {', '.join(st.models)}, alpha {st.alpha:g}, "
            f"update lr {st.lr:g}, {st.epochs} epoch(s)\n\n" + _period_line(names, st)
            + "Scored on all rows of the next period "
            "(values new that period are OOV). Means over members.\n\n" + head + body
            + "\n## Averaged over the updated periods\n\n| arm | " + " | ".join(h for _, h, _ in METRICS)
            + " |\n|" + "---|" * (1 + len(METRICS)) + "\n" + avg
            + "\n## Paired tests over (period, member)\n\n| comparison | metric | pairs | mean difference | p |\n"
            "|---|---|---|---|---|\n" + tests
            + "\n## New ids per period (grown store against the previous one)\n\n| period | new values "
            "| rows with a new value |\n|---|---|---|\n" + new)


def _period_line(names: list[dict] | None, st: OnlineSettings) -> str:
    """The periods' names and rows, one line (empty when unknown)."""
    if not names:
        return ""
    how = f"{st.period or 'month'}s of column {st.time_column}" if st.time_column else "equal rows"
    each = ", ".join(f"{k} = {n['name']} ({n['rows']:,} rows)" for k, n in enumerate(names))
    return f"Periods ({how}): {each}.\n\n"


def _pairs(rows: list[dict], a: str, b: str, key: str, periods: Sequence[int]) -> list[tuple[float, float]]:
    by = {(r["arm"], r["period"], r["member"]): r[key] for r in rows}
    return [(by[a, k, m], by[b, k, m]) for (arm, k, m) in by if arm == b and k in periods and (a, k, m) in by]
