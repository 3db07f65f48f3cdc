"""The vectorised group forward (training/group.py) against the members run one by one."""

import pytest
import torch

from mutualctr.errors import TrainingError
from mutualctr.models import build_model
from mutualctr.models.plugins import Features
from mutualctr.training import jobs as api
from mutualctr.training.group import VectorisedGroup
from tests.conftest import group, tiny_config
from tests.models.user_models import Plain, PlainConfig

SMALL = {"embed_dim": 8, "mlp": {"hidden": [32, 16], "dropout": 0.0}}


def _members(name, n=3, config=SMALL):
    out = []
    for s in range(n):
        torch.manual_seed(s)
        m = build_model(name, 500, 7, dict(config), sparse_grad=True)
        out.append(m)
    return out


def _grads(models):
    return [{n: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone() for n, p in m.named_parameters()}
            for m in models]


@pytest.mark.parametrize("name", ["deepfm", "dcn", "pnn", "fibinet"])
def test_vectorised_logits_and_gradients_equal_the_loop(name):
    models = _members(name)
    ids = torch.randint(0, 500, (64, 7))
    w = torch.randn(len(models), 64)  # a different loss weight per member: grads must not mix
    out = VectorisedGroup(models)(ids)
    sum((o * wi).sum() for o, wi in zip(out, w)).backward()
    got = _grads(models)
    for m in models:
        m.zero_grad(set_to_none=True)
    ref = [m(ids) for m in models]
    sum((o * wi).sum() for o, wi in zip(ref, w)).backward()
    want = _grads(models)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-6)
    for g, h in zip(got, want):
        assert g.keys() == h.keys()
        for k in g:
            torch.testing.assert_close(g[k], h[k], rtol=1e-4, atol=1e-6, msg=k)


def test_vectorised_group_trains_like_the_loop(tiny_store, tmp_path):
    cfgs = [tiny_config("deepfm", seed=s, epochs=1, evals_per_epoch=2) for s in (1, 2, 3)]
    loop = api.mutual(tiny_store, tmp_path / "loop", configs=cfgs, group=group(), quiet=True).to_dict()
    vec = api.mutual(tiny_store, tmp_path / "vec", configs=cfgs, group=group(), vectorize=True, quiet=True).to_dict()
    for a, b in zip(loop["members"], vec["members"]):
        assert a["best_step"] == b["best_step"]
        assert b["test_auc"] == pytest.approx(a["test_auc"], abs=2e-4)
        assert b["test_logloss"] == pytest.approx(a["test_logloss"], rel=1e-3)


def test_vectorise_refuses_mixed_architectures_and_batch_norm():
    with pytest.raises(TrainingError, match="one architecture"):
        VectorisedGroup(_members("deepfm", 1) + _members("dcn", 1))
    with pytest.raises(TrainingError, match="one architecture"):
        VectorisedGroup(_members("deepfm", 1) + _members("deepfm", 1, {**SMALL, "embed_dim": 4}))
    with pytest.raises(TrainingError, match="batch_norm"):
        VectorisedGroup(_members("deepfm", 2, {**SMALL, "mlp": {"hidden": [8], "batch_norm": True}}))


def test_vectorise_refuses_a_user_model():
    """A user model may call its tables otherwise than the stand-ins replay (the example DIN's
    sequence lookup): refused up front with one line rather than failing mid-step."""
    models = [Plain(Features.anonymous(50, 3), PlainConfig()) for _ in range(2)]
    with pytest.raises(TrainingError, match=r"^--vectorize supports the built-in models only \(lr, fm, deepfm, "
                                            r".*\), got tests.models.user_models:Plain; train without --vectorize$"):
        VectorisedGroup(models)
