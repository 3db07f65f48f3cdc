"""The fast paths give the reference's gradients and updates (correctness only; nothing is timed)."""

from __future__ import annotations

import copy

import pytest
import torch

from mutualctr.models import RowCache, build_model, l2_penalty, set_plain, use_row_cache
from mutualctr.training.device import autocast
from mutualctr.training.losses import bce
from mutualctr.training.optim import OptimConfig, RowAdam, build_optimizers

torch.set_num_threads(1)
CONFIG = {"embed_dim": 8, "embedding_l2": 1e-3, "mlp": {"hidden": [16, 8]}}


def _ids(n_rows: int, batch: int = 64, fields: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    per = n_rows // fields
    return (torch.randint(0, per, (batch, fields), generator=g) ** 1).clamp(max=per - 1) + torch.arange(fields) * per


@pytest.mark.parametrize("num_rows", [50, 1000, 100_000])
def test_unique_rows_mark_equals_torch_unique(num_rows):
    ids = _ids(num_rows, batch=300)
    ref_u, ref_i = torch.unique(ids.reshape(-1), return_inverse=True)
    cache = RowCache("mark")
    u, i = cache.unique(ids.clone(), num_rows)
    assert torch.equal(u, ref_u) and torch.equal(i, ref_i)
    # a second batch of the same table: the buffers were left clean
    ids2 = _ids(num_rows, batch=17, seed=1)
    u2, i2 = cache.unique(ids2, num_rows)
    r2 = torch.unique(ids2.reshape(-1), return_inverse=True)
    assert torch.equal(u2, r2[0]) and torch.equal(i2, r2[1])


def test_unique_rows_cache_follows_in_place_changes():
    ids = _ids(1000)
    cache = RowCache()
    u1, _ = cache.unique(ids, 1000)
    assert cache.unique(ids, 1000)[0] is u1  # the same tensor again: the remembered answer
    ids[0, 0] = 999  # a new version of the same tensor must not reuse the cached answer
    u2, i2 = cache.unique(ids, 1000)
    r = torch.unique(ids.reshape(-1), return_inverse=True)
    assert torch.equal(u2, r[0]) and torch.equal(i2, r[1])


def _grads(model, ids, labels):
    model.zero_grad(set_to_none=True)
    (bce(model(ids), labels) + l2_penalty(model, ids)).backward()
    out = {}
    for n, p in model.named_parameters():
        g = p.grad
        out[n] = g.to_dense() if g.is_sparse else g
    return out


@pytest.mark.parametrize("name", ["deepfm", "dcn", "pnn", "fibinet"])
@pytest.mark.parametrize("method", ["mark", "sort"])
def test_fast_sparse_gradients_equal_plain_dense(name, method):
    """Fast lookup (sparse row grads, unique by mark or sort, L2 folded in) == F.embedding reference."""
    torch.manual_seed(0)
    model = build_model(name, 500, 5, CONFIG, sparse_grad=True)
    ref = build_model(name, 500, 5, CONFIG)
    ref.load_state_dict(model.state_dict())
    set_plain(ref, True)
    use_row_cache(model, RowCache(method))
    ids, labels = _ids(500), (torch.rand(64) < 0.3).float()
    fast = _grads(model, ids, labels)
    slow = _grads(ref, ids, labels)
    for n in slow:
        torch.testing.assert_close(fast[n], slow[n], rtol=1e-5, atol=1e-7, msg=n)


def test_penalty_value_from_forward_rows_equals_second_lookup():
    torch.manual_seed(0)
    model = build_model("deepfm", 500, 5, CONFIG)
    ids = _ids(500)
    model(ids)  # the fast lookup keeps the rows it looked up
    fast = l2_penalty(model, ids)
    set_plain(model, True)
    ref = l2_penalty(model, ids)
    torch.testing.assert_close(fast, ref.detach(), rtol=1e-5, atol=0)


def test_penalty_after_a_weight_update_looks_up_again():
    torch.manual_seed(0)
    model = build_model("fm", 500, 5, CONFIG)
    ids = _ids(500)
    model(ids)
    with torch.no_grad():
        model.embedding.weight.mul_(2.0)  # bumps the version: the kept rows are stale
    got = model.embedding.penalty(ids)
    want = model.embedding.l2 * model.embedding.weight[ids].pow(2).sum() / ids.shape[0]
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dense", [False, True])
def test_rowadam_fused_equals_reference(dense):
    torch.manual_seed(0)
    w0 = torch.randn(200, 8)
    a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    oa, ob = RowAdam([a], lr=1e-2, impl="reference"), RowAdam([b], lr=1e-2, impl="fused")
    for t in range(6):
        rows = torch.randperm(200)[:50].sort().values
        vals = torch.randn(50, 8)
        if dense:
            g = torch.randn(200, 8)
            a.grad, b.grad = g.clone(), g.clone()
        else:
            mk = lambda: torch.sparse_coo_tensor(rows.unsqueeze(0), vals.clone(), (200, 8), is_coalesced=True,
                                                 check_invariants=False)
            a.grad, b.grad = mk(), mk()
        oa.step(), ob.step()
        torch.testing.assert_close(b.data, a.data, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ob.state[b]["exp_avg_sq"], oa.state[a]["exp_avg_sq"], rtol=1e-5, atol=1e-9)
    assert float(ob.state[b]["step"]) == 6.0  # the same state layout: checkpoints interchange


def test_rowadam_fused_state_loads_into_reference():
    p = torch.nn.Parameter(torch.randn(10, 4))
    o = RowAdam([p], impl="fused")
    p.grad = torch.randn(10, 4)
    o.step()
    q = torch.nn.Parameter(p.detach().clone())
    o2 = RowAdam([q], impl="reference")
    o2.load_state_dict(copy.deepcopy(o.state_dict()))
    q.grad = p.grad = torch.randn(10, 4)
    o.step(), o2.step()
    torch.testing.assert_close(q.data, p.data, rtol=1e-5, atol=1e-6)


def test_fused_and_unfused_optimizers_one_step_agree():
    torch.manual_seed(0)
    m1 = build_model("deepfm", 500, 5, CONFIG)
    m2 = copy.deepcopy(m1)
    o1 = build_optimizers(m1, OptimConfig(fused=True))
    o2 = build_optimizers(m2, OptimConfig(fused=False))
    ids, labels = _ids(500), (torch.rand(64) < 0.3).float()
    for model, opts in ((m1, o1), (m2, o2)):
        _grads(model, ids, labels)
        for o in opts:
            o.step()
    for (n, p), q in zip(m1.named_parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)


def test_bf16_autocast_gradients_close_to_fp32():
    torch.manual_seed(0)
    model = build_model("deepfm", 500, 5, CONFIG)
    ids, labels = _ids(500), (torch.rand(64) < 0.3).float()
    ref = _grads(model, ids, labels)
    model.zero_grad(set_to_none=True)
    with autocast("bf16", "cpu"):
        loss = bce(model(ids), labels) + l2_penalty(model, ids)
    loss.float().backward()
    for n, p in model.named_parameters():
        g = p.grad.to_dense() if p.grad.is_sparse else p.grad
        scale = ref[n].abs().max().clamp(min=1e-12)
        assert float((g - ref[n]).abs().max() / scale) < 0.05, n


def test_autocast_context_by_precision():
    with autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="precision"):
        autocast("fp16x", "cpu")


def test_fast_backward_is_deterministic():
    """Exact resume and the alpha-0 bit-for-bit control need the same gradients every time."""
    torch.manual_seed(0)
    model = build_model("deepfm", 5000, 5, CONFIG, sparse_grad=True)
    ids, labels = _ids(5000, batch=2000), (torch.rand(2000) < 0.3).float()
    a = _grads(model, ids, labels)
    b = _grads(model, ids.clone(), labels)
    assert all(torch.equal(a[n], b[n]) for n in a)
