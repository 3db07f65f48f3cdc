"""The finetuning protocol: the start as a candidate, alpha chosen on dev, scopes, the embedding
learning-rate scale, finetuning on the last part of the train split, churn, the group config."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mutualctr.config import ConfigError
from mutualctr.data.store import Store
from mutualctr.metrics import churn, sigmoid
from mutualctr.training import jobs
from mutualctr.training.config import MutualConfig, run_config_from_dict, with_group_overrides
from mutualctr.training.inference import predict_logits
from mutualctr.training.jobs import ALPHA_TIE, choose_alpha, search_alphas
from mutualctr.training.rundir import GroupCheckpoint, ModelCheckpoint
from tests.conftest import group, tiny_config


@pytest.fixture(scope="module")
def pretrained(tiny_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    runs = []
    for i, model in enumerate(["deepfm", "dcn"]):
        jobs.train(tiny_store, root / f"r{i}", tiny_config(model, seed=20 + i, epochs=2), quiet=True).to_dict()
        runs.append(root / f"r{i}")
    return runs


# ---- alpha chosen on dev ---------------------------------------------------------------------------

def _counting(curve):
    asked = []

    def dev_of(a):
        asked.append(a)
        return curve(a)

    return dev_of, asked


def test_alpha_search_extends_past_a_winning_end_and_stops_inside():
    peaked, asked = _counting(lambda a: -abs(math.log10(a) - 3.5))  # best between 1e3 and 1e4
    assert search_alphas(peaked, [1, 10, 100, 1000]) == 1000 and asked == [1, 10, 100, 1000, 10000]
    rising, asked = _counting(lambda a: a)
    assert search_alphas(rising, [1, 10]) == 10000 and asked == [1, 10, 100, 1000, 10000]  # at most 3 extensions
    falling, asked = _counting(lambda a: -a)
    assert search_alphas(falling, [1, 10, 100]) == pytest.approx(0.001) and asked == pytest.approx([1, 10, 100, 0.1, 0.01, 0.001])
    flat, asked = _counting(lambda a: 0.7)
    assert search_alphas(flat, [10, 1, 100]) == 1 and asked == [1, 10, 100]  # ties: the smaller; nothing extended


def test_alpha_search_stops_on_a_plateau_and_takes_its_smallest_alpha():
    """What real Criteo gave DeepFM: dev AUC rises to alpha 1000, then moves in the 6th decimal
    (the peer term dominates and the members agree). Differences below ALPHA_TIE are ties."""
    dev = {1: 0.75442, 10: 0.75490, 100: 0.75549, 1000: 0.755512, 10000: 0.755514, 100000: 0.755515}
    plateau, asked = _counting(dev.__getitem__)
    assert ALPHA_TIE == 1e-5
    # 1000 beats 100 by 2e-5, so 10000 is tried; it ties with 1000, so the search stops there
    assert search_alphas(plateau, [1, 10, 100, 1000]) == 1000 and asked == [1, 10, 100, 1000, 10000]
    assert choose_alpha({1: 0.7, 10: 0.7 + 0.9e-5, 100: 0.7 + 2e-5}) == 100
    assert choose_alpha({1: 0.7, 10: 0.7 + 0.9e-5}) == 1
    climbing, asked = _counting(lambda a: 0.75 + 1e-4 * math.log10(a))  # each step clearly better: extend
    assert search_alphas(climbing, [1, 10]) == 10000 and asked == [1, 10, 100, 1000, 10000]


def test_auto_alpha_group_reports_the_curve_and_its_choice(tiny_store, tmp_path, pretrained):
    g = jobs.mutual(tiny_store, tmp_path / "g", init=pretrained, group=MutualConfig(alpha_grid=[0.5, 50.0]),
                    quiet=True).to_dict()
    curve = g["alpha_search"]
    assert {0.5, 50.0} <= {p["alpha"] for p in curve} and [p["alpha"] for p in curve] == sorted(p["alpha"] for p in curve)
    best = max(curve, key=lambda p: p["dev_auc"])
    assert g["settings"]["alpha"] == best["alpha"] and g["mean"]["dev_auc"] == best["dev_auc"]
    for p in curve:  # each alpha's group is a complete group of its own
        sub = json.loads((tmp_path / "g" / f"alpha-{p['alpha']:g}" / "group.json").read_text())
        assert sub["mean"]["test_auc"] == p["test_auc"] and sub["settings"]["alpha"] == p["alpha"]
    assert json.loads((tmp_path / "g" / "group.json").read_text())["alpha_search"] == curve
    # a second call resumes the finished search without training again
    again = jobs.mutual(tiny_store, tmp_path / "g", init=pretrained, group=MutualConfig(alpha_grid=[0.5, 50.0]),
                        resume=True, quiet=True).to_dict()
    assert again["alpha_search"] == curve


# ---- the start is a candidate ------------------------------------------------------------------------

def test_a_finetuning_that_only_hurts_keeps_its_start(tiny_store, tmp_path, pretrained):
    g = jobs.mutual(tiny_store, tmp_path / "g", init=pretrained, group=group(alpha=0.0, lr=0.1, evals_per_epoch=2),
                    quiet=True).to_dict()
    for m, run in zip(g["members"], pretrained):
        assert m["kept_start"] is True and m["best_step"] == 0
        assert m["dev_auc"] == m["start"]["dev_auc"] and m["test_auc"] == m["start"]["test_auc"]
        kept, parent = (ModelCheckpoint.load(p / "checkpoints" / "best.pt").state_dict
                        for p in (tmp_path / "g" / f"m{pretrained.index(run)}-{m['model']}", run))
        assert all(torch.equal(kept[k], parent[k]) for k in parent)
        history = [json.loads(l) for l in open(tmp_path / "g" / f"m{pretrained.index(run)}-{m['model']}" / "metrics.jsonl")]
        assert history[0]["step"] == 0 and history[0]["train_loss"] is None
        assert all(h["dev_auc"] < history[0]["dev_auc"] for h in history[1:])  # it really got worse


# ---- scopes and rates ------------------------------------------------------------------------------

def test_dense_scope_leaves_every_embedding_row_bit_identical(tiny_store, tmp_path, pretrained):
    jobs.mutual(tiny_store, tmp_path / "g", init=pretrained, group=group(scope="dense", lr=1e-2), quiet=True).to_dict()
    last = GroupCheckpoint.load(tmp_path / "g" / "checkpoints" / "last.pt")
    for state, run in zip(last.members, pretrained):
        parent = ModelCheckpoint.load(run / "checkpoints" / "best.pt").state_dict
        tables = [k for k in parent if k.endswith(("embedding.weight", "linear.weight"))]
        assert tables and all(torch.equal(state.model[k], parent[k]) for k in tables)
        assert any(not torch.equal(state.model[k], parent[k]) for k in parent if k not in tables)  # the net moved


def test_embedding_lr_scale_sets_the_tables_rate_all_along_the_schedule(tiny_store, tmp_path):
    from dataclasses import replace

    from mutualctr.training.optim import OptimConfig, Schedule, build_optimizers

    cfg = tiny_config()
    model = jobs.build(cfg, Store.open(tiny_store))
    opts = build_optimizers(model, replace(cfg.optim, embedding_lr_scale=0.1))
    sched = Schedule(replace(cfg.optim, embedding_lr_scale=0.1), opts, steps_per_epoch=10)
    for step in (0, 7, 29):
        lr = sched.set_step(step)
        assert opts[0].param_groups[0]["lr"] == pytest.approx(lr)
        assert opts[1].param_groups[0]["lr"] == pytest.approx(0.1 * lr)
    with pytest.raises(ValueError, match="embedding_lr_scale"):
        OptimConfig(embedding_lr_scale=0.0)


def test_finetune_split_trains_on_the_last_rows_only(tiny_store, tmp_path, pretrained):
    from dataclasses import replace

    from mutualctr.training.jobs import finetune_train_config
    from mutualctr.training.member import Member
    from mutualctr.training.trainer import Trainer

    store = Store.open(tiny_store)
    base = finetune_train_config(tiny_config().train, group(finetune_split=0.25))
    assert base.row_range == (0.75, 1.0) and base.epochs == 1 and base.patience == 0
    cfg = replace(tiny_config(), train=base)
    tr = Trainer(store, [Member(cfg, jobs.build(cfg, store), tmp_path / "m")], tmp_path, base, quiet=True)
    n = len(store.split("train")[1])
    assert tr.loader.rows == n - round(0.75 * n)
    np.testing.assert_array_equal(tr.loader.X, store.split("train")[0][round(0.75 * n):])


# ---- churn -------------------------------------------------------------------------------------------

def test_churn_equals_a_hand_computation():
    z = [np.array([0.0, 1.0, -2.0, 3.0]), np.array([0.5, 0.5, -1.0, 2.0]), np.array([-1.0, 2.0, 0.0, 0.0])]
    p = [1 / (1 + np.exp(-v)) for v in z]
    pairs = [(0, 1), (0, 2), (1, 2)]
    want_diff = sum(np.abs(p[i] - p[j]).sum() / 4 for i, j in pairs) / 3

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())

    c = churn(z)
    assert c["mean_abs_diff"] == pytest.approx(want_diff, rel=1e-12)
    assert c["logit_corr"] == pytest.approx(sum(corr(z[i], z[j]) for i, j in pairs) / 3, rel=1e-12)
    assert math.isnan(churn(z[:1])["mean_abs_diff"])


def test_group_churn_before_and_after_are_those_of_the_members_test_predictions(tiny_store, tmp_path, pretrained):
    g = jobs.mutual(tiny_store, tmp_path / "g", init=pretrained, group=group(), quiet=True).to_dict()
    store = Store.open(tiny_store)
    X, _ = store.split("test")

    def logits(run):
        model, _, _ = jobs.load_run(run, store)
        return predict_logits(model, X, 0, torch.device("cpu"))

    assert g["churn"]["before"] == pytest.approx(churn([logits(r) for r in pretrained]))
    assert g["churn"]["after"] == pytest.approx(churn([logits(m["run_dir"]) for m in g["members"]]))
    ens = jobs.ensemble(pretrained, tiny_store).to_dict()
    assert ens["churn"] == pytest.approx(g["churn"]["before"])
    assert np.all(sigmoid(logits(pretrained[0])) > 0)


# ---- the group config ------------------------------------------------------------------------------

def test_group_config_is_strict_and_flags_override_single_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown key mutual.alph"):
        run_config_from_dict({"mutual": {"alph": 1.0}})
    for bad in ({"alpha": -1}, {"alpha": "nan"}, {"scope": "sparse"}, {"finetune_split": 1.0}, {"lr": 0}):
        with pytest.raises(ConfigError, match="mutual."):
            run_config_from_dict({"mutual": bad})
    cfg = run_config_from_dict({"mutual": {"alpha": 10, "scope": "dense"}})
    assert cfg.mutual.alpha == 10.0 and cfg.mutual.scope == "dense" and cfg.mutual.lr == 1e-4
    g = with_group_overrides(cfg.mutual, alpha="auto", lr=None, epochs=2)
    assert g.alpha == "auto" and g.scope == "dense" and g.epochs == 2 and g.lr == 1e-4
    with pytest.raises(ConfigError, match="mutual.alpha"):
        with_group_overrides(cfg.mutual, alpha="often")
    path = tmp_path / "g.yaml"
    path.write_text("mutual:\n  alpha: 3\n  evals_per_epoch: 2\n")
    resolved = jobs.resolve_group(config_file=path, epochs=3)
    assert (resolved.alpha, resolved.evals_per_epoch, resolved.epochs) == (3.0, 2, 3)


def test_a_group_of_one_is_refused(tiny_store, tmp_path, pretrained):
    with pytest.raises(ConfigError, match="at least two members"):
        jobs.mutual(tiny_store, tmp_path / "g", init=pretrained[:1], group=group(), quiet=True).to_dict()
    assert not (tmp_path / "g").exists()
