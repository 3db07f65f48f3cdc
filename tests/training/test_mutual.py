import json

import numpy as np
import pytest
import torch

from mutualctr.data.store import Store
from mutualctr.errors import CheckpointError
from mutualctr.training import jobs as api
from mutualctr.training.inference import predict_logits
from mutualctr.training.rundir import ModelCheckpoint
from mutualctr.training.config import MutualConfig
from mutualctr.training.losses import peer_term
from mutualctr.metrics import auc
from mutualctr.training.trainer import Member, Trainer
from tests.conftest import group, interrupted_at_step, tiny_config


def _weights(run):
    return ModelCheckpoint.load(run / "checkpoints" / "best.pt").state_dict


@pytest.fixture(scope="module")
def pretrained(tiny_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    runs = []
    for i, model in enumerate(["deepfm", "deepfm", "dcn"]):
        api.train(tiny_store, root / f"r{i}", tiny_config(model, seed=10 + i, epochs=2), quiet=True).to_dict()
        runs.append(root / f"r{i}")
    return runs


def _trainer(store_path, n, alpha, kind="mse_prob", tmp=None):
    store = Store.open(store_path)
    members = []
    for i in range(n):
        cfg = tiny_config(seed=i)
        members.append(Member(config=cfg, model=api.build(cfg, store, seed=i), run_dir=tmp / f"m{i}"))
    return Trainer(store, members, tmp, members[0].config.train, MutualConfig(alpha=alpha, loss=kind), quiet=True)


@pytest.mark.parametrize("n", [2, 3])
def test_group_loss_matches_hand_computation(tiny_store, tmp_path, n):
    from mutualctr.models import l2_penalty

    tr = _trainer(tiny_store, n, alpha=0.7, tmp=tmp_path)
    ids, labels = next(iter(tr.loader.epoch(0)))
    losses = tr.group_losses(ids, labels)
    with torch.no_grad():
        p = [torch.sigmoid(m.model(ids)).double() for m in tr.members]
        y = labels.double()
        for i in range(n):
            bce = -(y * torch.log(p[i]) + (1 - y) * torch.log(1 - p[i])).mean()
            mse = sum(((p[i] - p[j]) ** 2).mean() for j in range(n) if j != i) / (n - 1)
            want = bce + l2_penalty(tr.members[i].model, ids).double() + 0.7 * mse
            assert float(losses[i]) == pytest.approx(float(want), rel=1e-5)


def test_peer_terms_variants():
    z = torch.tensor([0.3, -1.0, 2.0])
    q = [torch.tensor([0.1, 0.5, -0.2]), torch.tensor([1.0, 1.0, 1.0])]
    sp, sq = torch.sigmoid(z), [torch.sigmoid(x) for x in q]
    assert float(peer_term("mse_prob", z, q)) == pytest.approx(float(sum(((sp - s) ** 2).mean() for s in sq) / 2))
    assert float(peer_term("mse_logit", z, q)) == pytest.approx(float(sum(((z - x) ** 2).mean() for x in q) / 2))
    kl = sum((s * torch.log(s / sp) + (1 - s) * torch.log((1 - s) / (1 - sp))).mean() for s in sq) / 2
    assert float(peer_term("kl", z, q)) == pytest.approx(float(kl), rel=1e-5)


def test_stop_gradient_a_members_loss_gives_peers_no_gradient(tiny_store, tmp_path):
    tr = _trainer(tiny_store, 3, alpha=1.0, tmp=tmp_path)
    ids, labels = next(iter(tr.loader.epoch(0)))
    losses = tr.group_losses(ids, labels)
    losses[0].backward()
    assert any(p.grad is not None for p in tr.members[0].model.parameters())
    for m in tr.members[1:]:
        assert all(p.grad is None for p in m.model.parameters())


def test_alpha_zero_equals_independent_continuations_bit_for_bit(tiny_store, tmp_path, pretrained):
    """At alpha 0 a member continues as if alone: a student whose teacher weighs 0 is that."""
    g = api.mutual(tiny_store, tmp_path / "g", init=pretrained[:2], group=group(alpha=0.0, evals_per_epoch=2), seed=7,
                   quiet=True).to_dict()
    for i, run in enumerate(pretrained[:2]):
        solo = api.distill(tiny_store, tmp_path / f"solo{i}", pretrained[2], str(run),
                           group=group(alpha=0.0, evals_per_epoch=2), seed=7, quiet=True).to_dict()
        assert solo["members"][0]["test_auc"] == g["members"][i]["test_auc"]
        a, b = _weights(tmp_path / f"solo{i}" / "m0-deepfm"), _weights(tmp_path / "g" / f"m{i}-deepfm")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_identical_members_on_identical_batches_stay_identical(tiny_store, tmp_path, pretrained):
    g = api.mutual(tiny_store, tmp_path / "g", init=[pretrained[0], pretrained[0]], group=group(), quiet=True).to_dict()
    a, b = _weights(tmp_path / "g" / "m0-deepfm"), _weights(tmp_path / "g" / "m1-deepfm")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert g["members"][0]["test_auc"] == g["members"][1]["test_auc"]


def test_finetune_reports_start_best_and_relaimp_and_members_are_plain_runs(tiny_store, tmp_path, pretrained):
    g = api.mutual(tiny_store, tmp_path / "g", init=pretrained, group=group(), quiet=True).to_dict()
    saved = json.loads((tmp_path / "g" / "group.json").read_text())
    assert saved["mean"]["test_auc"] == pytest.approx(np.mean([m["test_auc"] for m in g["members"]]))
    for m, run in zip(g["members"], pretrained):
        start = api.evaluate(run, tiny_store, "test").to_dict()
        assert m["start"]["test_auc"] == pytest.approx(start["auc"], abs=1e-12)
        assert m["relaimp_test"] == pytest.approx(((m["test_auc"] - 0.5) / (start["auc"] - 0.5) - 1) * 100)
        # a finetuned member is an ordinary run: evaluate and a later --init take it
        assert api.evaluate(m["run_dir"], tiny_store, "test").to_dict()["auc"] == pytest.approx(m["test_auc"], abs=1e-12)
    assert [m["model"] for m in g["members"]] == ["deepfm", "deepfm", "dcn"]
    again = api.mutual(tiny_store, tmp_path / "g2", init=[g["members"][0]["run_dir"], pretrained[2]], quiet=True,
                       group=group(evals_per_epoch=1)).to_dict()
    assert len(again["members"]) == 2


def _config_dir(tmp_path, *models, epochs=2):
    import yaml

    from mutualctr.training.config import run_config_to_dict

    d = tmp_path / "cfgs"
    d.mkdir(exist_ok=True)
    for m in models:
        (d / f"{m}.yaml").write_text(yaml.safe_dump(run_config_to_dict(tiny_config(m, seed=1, epochs=epochs))))
    return d


def test_scratch_group(tiny_store, tmp_path):
    g = api.mutual(tiny_store, tmp_path / "g", models=["deepfm", "dcn"], seeds=[1, 2], group=group(), quiet=True,
                   config_dir=_config_dir(tmp_path, "deepfm", "dcn", epochs=1)).to_dict()
    assert [m["model"] for m in g["members"]] == ["deepfm", "dcn"]
    assert all(m["test_auc"] > 0.55 for m in g["members"])
    assert "start" not in g["mean"]


def test_scratch_group_from_configs_equals_the_same_configs_from_a_config_dir(tiny_store, tmp_path):
    """``configs=`` (what the experiment runner passes) trains exactly what --models reads from files."""
    from mutualctr.config import ConfigError

    via_dir = api.mutual(tiny_store, tmp_path / "a", models=["deepfm", "dcn"], seeds=[1, 2], group=group(),
                         quiet=True, config_dir=_config_dir(tmp_path, "deepfm", "dcn", epochs=1)).to_dict()
    cfgs = [tiny_config("deepfm", seed=1, epochs=1), tiny_config("dcn", seed=2, epochs=1)]
    seeds_before = [c.train.seed for c in cfgs]
    given = api.mutual(tiny_store, tmp_path / "b", configs=cfgs, seeds=[1, 2], group=group(), quiet=True).to_dict()
    assert [m["test_auc"] for m in given["members"]] == [m["test_auc"] for m in via_dir["members"]]
    assert [c.train.seed for c in cfgs] == seeds_before  # the caller's configs are not modified
    with pytest.raises(ConfigError, match="not both"):
        api.mutual(tiny_store, tmp_path / "c", configs=cfgs, models=["deepfm"], quiet=True).to_dict()


def test_distill_with_beta_zero_equals_plain_training(tiny_store, tmp_path, pretrained):
    plain = api.train(tiny_store, tmp_path / "plain", tiny_config("deepfm", seed=1, epochs=2), quiet=True).to_dict()
    _config_dir(tmp_path, "deepfm")
    d = api.distill(tiny_store, tmp_path / "d", pretrained[2], "deepfm", group=group(alpha=0.0),
                    config_dir=tmp_path / "cfgs", quiet=True).to_dict()
    assert d["members"][0]["test_auc"] == plain["test_auc"]
    d1 = api.distill(tiny_store, tmp_path / "d1", pretrained[2], "deepfm", group=group(alpha=1.0),
                     config_dir=tmp_path / "cfgs", quiet=True).to_dict()
    assert d1["members"][0]["test_auc"] != plain["test_auc"]


def test_ensemble_auc_is_auc_of_averaged_probabilities(tiny_store, pretrained):
    res = api.ensemble(pretrained, tiny_store, "test").to_dict()
    store = Store.open(tiny_store)
    X, y = store.split("test")
    probs = []
    for run in pretrained:
        model, _, _ = api.load_run(run, store)
        probs.append(torch.sigmoid(torch.from_numpy(predict_logits(model, X, 1000, torch.device("cpu")))).numpy())
    avg = np.mean(probs, axis=0)
    assert res["auc"] == pytest.approx(auc(np.asarray(y), avg), abs=1e-9)
    assert res["rows"] == len(y)


def test_group_resume_equals_uninterrupted(tiny_store, tmp_path, pretrained):
    full = api.mutual(tiny_store, tmp_path / "full", init=pretrained[:2], group=group(), quiet=True).to_dict()
    with interrupted_at_step(12):
        api.mutual(tiny_store, tmp_path / "cut", init=pretrained[:2], group=group(), quiet=True).to_dict()
    res = api.mutual(tiny_store, tmp_path / "cut", init=pretrained[:2], group=group(), resume=True, quiet=True).to_dict()
    for a, b in zip(full["members"], res["members"]):
        assert a["test_auc"] == b["test_auc"] and a["start"] == b["start"]
    assert res["churn"] == full["churn"]


def test_mutual_needs_init_or_models(tiny_store, tmp_path):
    from mutualctr.config import ConfigError

    with pytest.raises(ConfigError):
        api.mutual(tiny_store, tmp_path / "g", quiet=True).to_dict()
    with pytest.raises(CheckpointError):
        api.mutual(tiny_store, tmp_path / "g", init=[tmp_path / "missing", tmp_path / "missing"], quiet=True).to_dict()
    with pytest.raises(ConfigError, match="at least two members"):
        api.mutual(tiny_store, tmp_path / "g", init=[tmp_path / "missing"], quiet=True).to_dict()
