"""Every result file a real (tiny) run writes is the ``to_dict()`` of a type of
:mod:`mutualctr.results`: read back through the type, it is the same JSON (``from_dict(read)
.to_dict() == read``), and no code outside results.py spells a result file as a dict literal."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import mutualctr as mc
from mutualctr.cli import app
from mutualctr.results import (EnsembleResult, Evaluation, GroupResult, RunResult, Scores, StartMetrics)
from tests.conftest import tiny_config

SRC = Path(mc.__file__).parent


def _same(cls, d):
    assert cls.from_dict(d).to_dict() == d, cls.__name__


def _json(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def written(tiny_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    runs = [mc.train(tiny_store, root / f"r{s}", config=tiny_config(epochs=1), seed=s) for s in (1, 2)]
    g = mc.mutual(tiny_store, root / "g", init=[r.run_dir for r in runs],
                  group=mc.MutualConfig(alpha_grid=[0.5, 5.0], evals_per_epoch=2))
    return root, runs, g


def test_run_and_group_files_round_trip_through_their_types(written):
    root, runs, g = written
    assert g.alpha_search and g.settings.alpha_auto  # the curve of alpha auto is in the file
    groups = [root / "g"] + sorted((root / "g").glob("alpha-*"))
    assert len(groups) >= 3
    summaries = [Path(r.run_dir) / "summary.json" for r in runs]
    for gd in groups:
        read = _json(gd / "group.json")
        _same(GroupResult, read)
        if gd.name.startswith("alpha-"):  # the search's own directory holds no members
            for entry in _json(gd / "start.json"):
                _same(StartMetrics, entry)
        summaries += sorted(gd.glob("m*-*/summary.json"))
    assert _json(root / "g" / "group.json") == g.to_dict()
    cal = [m.calibration for m in g.members]  # on test, each member's, and their mean (issue 27)
    assert all(c is not None and c.bins for c in cal) and g.mean.calibration.bins is None
    assert g.mean.calibration.ece == pytest.approx(np.mean([c.ece for c in cal]))
    for path in summaries:
        _same(RunResult, _json(path))
        for line in path.with_name("metrics.jsonl").read_text().splitlines():
            _same(Evaluation, json.loads(line))
    assert len(summaries) >= 2 + 2 * (len(groups) - 1)


def test_reliability_plot_of_the_groups_members(written, tmp_path):
    from mutualctr.experiments.plots import plot_reliability, reliability_curves

    root, runs, g = written
    rows = [{"question": "rq2", "model": "deepfm", "setting": s, "selected": 1, "run": g.members[i].run_dir}
            for i, s in ((0, "mutual_pretrained"), (1, "alpha0_control"))]
    rows.append({"question": "rq2", "model": "deepfm", "setting": "independent", "run": runs[0].run_dir})
    curves = reliability_curves(rows)
    assert list(curves["deepfm"]) == ["mutual_pretrained", "alpha0_control"]
    assert curves["deepfm"]["alpha0_control"] == g.members[1].calibration.bins
    path = plot_reliability(curves, tmp_path / "reliability.png")
    assert path.stat().st_size > 1000
    assert plot_reliability(reliability_curves(rows[2:]), tmp_path / "none.png") is None


def test_ensemble_and_evaluate_json_round_trip(written, tiny_store):
    root, runs, g = written
    cli = CliRunner()
    res = cli.invoke(app, ["ensemble", "--runs", runs[0].run_dir, runs[1].run_dir, "--data", str(tiny_store),
                           "--json"])
    assert res.exit_code == 0, res.output
    ens = json.loads(res.stdout)
    _same(EnsembleResult, ens)
    assert len(ens["members"]) == 2 and ens["churn"]["mean_abs_diff"] > 0
    res = cli.invoke(app, ["evaluate", "--run", g.members[0].run_dir, "--data", str(tiny_store), "--json"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    _same(Scores, ev)
    assert ev["auc"] == pytest.approx(g.members[0].test_auc, abs=1e-12)


RESULT_KEYS = {"dev_auc", "test_auc", "dev_logloss", "test_logloss", "best_step",  # metrics.churn: a metric, not a file
               "alpha_search", "kept_start"}


def test_no_dict_literal_of_a_result_file_outside_results_py():
    """The producers build the types; only results.py spells the keys (experiments/ keeps its
    own tables and cache files)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "results.py" or rel.startswith("experiments/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if keys & RESULT_KEYS:
                    found.append(f"{rel}:{node.lineno}")
    assert found == []


def test_results_sit_below_training():
    tree = ast.parse((SRC / "results.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and (m.startswith("mutualctr.training") or m.startswith("torch"))]


def test_a_result_file_of_another_layout_is_one_clear_error(tmp_path):
    from mutualctr.errors import CheckpointError
    from mutualctr.training.rundir import GroupDir, RunDir

    (tmp_path / "group.json").write_text('{"settings": {}}')
    with pytest.raises(CheckpointError, match="group.json: not a GroupResult record"):
        GroupDir(tmp_path).read_group()
    (tmp_path / "summary.json").write_text('{"model": ')
    with pytest.raises(CheckpointError, match="summary.json:1:11: not valid JSON"):
        RunDir(tmp_path).read_summary()
