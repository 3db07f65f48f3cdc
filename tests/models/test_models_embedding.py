"""The fast lookup's backward (dense and sparse) against nn.Embedding with an explicit penalty."""

import copy

import pytest
import torch
import torch.nn.functional as F_
from torch.func import functional_call, grad, stack_module_state, vmap

from mutualctr.models import FeatureEmbedding, build_model, l2_penalty, set_plain

N, D, B, F = 60, 4, 16, 5


def ids_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, N // 2, (B, F), generator=g)  # repeated ids, untouched rows


def head(x):  # any non-linear function of the looked-up rows
    return (x.sin() * torch.arange(1.0, D + 1)).sum()


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_lookup_matches_nn_embedding(sparse, l2):
    torch.manual_seed(0)
    table = FeatureEmbedding(N, D, init_std=0.5, l2=l2, sparse_grad=sparse)
    ref = torch.nn.Embedding(N, D)
    ref.weight.data.copy_(table.weight.data)
    ids = ids_batch()

    out = table(ids)
    (head(out) + table.penalty(ids)).backward()
    rows = ref(ids)
    (head(rows) + l2 * rows.pow(2).sum() / B).backward()

    torch.testing.assert_close(out, rows)
    torch.testing.assert_close(table.penalty(ids), l2 * rows.pow(2).sum().detach() / B)
    g = table.weight.grad
    assert g.is_sparse == sparse
    if sparse:
        assert g.is_coalesced()
        assert torch.equal(g.indices()[0], torch.unique(ids))
        g = g.to_dense()
    torch.testing.assert_close(g, ref.weight.grad)


@pytest.mark.parametrize("name", ["deepfm", "dcn", "pnn", "fibinet", "dcnv2"])
@pytest.mark.parametrize("sparse", [False, True])
def test_model_gradients_match_plain_reference(name, sparse):
    """``bce + l2_penalty`` on the fast path == the plain F.embedding path with explicit L2."""
    cfg = {"embed_dim": D, "init_std": 0.3, "embedding_l2": 0.05, "net_l2": 0.01,
           "mlp": {"hidden": [8, 4]}}
    torch.manual_seed(0)
    fast = build_model(name, N, F, cfg, sparse_grad=sparse)
    plain = build_model(name, N, F, cfg)
    plain.load_state_dict(fast.state_dict())
    set_plain(plain, True)
    ids, y = ids_batch(), torch.randint(0, 2, (B,)).float()
    losses = []
    for model in (fast, plain):
        loss = F_.binary_cross_entropy_with_logits(model(ids), y) + l2_penalty(model, ids)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    for (pname, p), q in zip(fast.named_parameters(), plain.parameters()):
        g = p.grad.to_dense() if p.grad.is_sparse else p.grad
        assert p.grad.is_sparse == (sparse and p.dim() == 2 and p.shape[0] == N), pname
        torch.testing.assert_close(g, q.grad, msg=pname)


def test_l2_penalty_value_and_terms():
    torch.manual_seed(0)
    model = build_model("deepfm", N, F, {"embed_dim": D, "init_std": 0.3, "embedding_l2": 0.1,
                                         "net_l2": 0.01, "mlp": {"hidden": [8]}})
    ids = ids_batch()
    emb = model.embedding.weight[ids].pow(2).sum() + model.linear.weight[ids].pow(2).sum()
    net = sum(m.weight.pow(2).sum() for m in model.mlp if isinstance(m, torch.nn.Linear))
    torch.testing.assert_close(l2_penalty(model, ids), 0.1 * emb / B + 0.01 * net)
    assert build_model("dcn", N, F)(ids).shape == (B,)
    assert l2_penalty(build_model("dcn", N, F), ids).item() == 0.0


def test_fast_lookup_vmaps_over_stacked_members():
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(FeatureEmbedding(N, D, init_std=0.5, l2=0.2))
    params, buffers = stack_module_state(members)
    skeleton = copy.deepcopy(members[0]).to("meta")
    ids = ids_batch()

    def loss(p, b):
        return head(functional_call(skeleton, (p, b), (ids,)))

    grads = vmap(grad(loss))(params, buffers)["weight"]
    for i, m in enumerate(members):
        m.plain = True
        want, = torch.autograd.grad(head(m(ids)) + m.penalty(ids), m.weight)
        torch.testing.assert_close(grads[i], want)


def test_sparse_grad_stays_coalesced_after_deepcopy_and_accumulates_correctly():
    torch.manual_seed(0)
    table = copy.deepcopy(FeatureEmbedding(N, D, init_std=0.5, l2=0.1, sparse_grad=True))
    ref = torch.nn.Embedding(N, D)
    ref.weight.data.copy_(table.weight.data)
    for seed in (0, 1):  # two backward passes without zero_grad: the grads add up
        ids = ids_batch(seed)
        (head(table(ids)) + table.penalty(ids)).backward()
        g = table.weight.grad
        assert g.is_coalesced() or seed == 1  # a sum may be left uncoalesced
        if g.is_coalesced():  # the flag must be true: sorted unique rows
            assert torch.equal(g.indices()[0], g.indices()[0].unique())
        rows = ref(ids)
        (head(rows) + 0.1 * rows.pow(2).sum() / B).backward()
    torch.testing.assert_close(table.weight.grad.to_dense(), ref.weight.grad)
