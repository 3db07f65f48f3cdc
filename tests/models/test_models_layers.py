"""Each interaction layer against a brute-force reference with explicit loops over pairs."""

import pytest
import torch

from mutualctr.models.layers import (
    SENET, Bilinear, CrossNet, CrossNetV2, FactorizationMachine, InnerProduct, OuterProduct, autocast_input,
)

B, F, D = 3, 5, 4


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture
def emb():
    torch.manual_seed(0)
    return torch.randn(B, F, D, dtype=torch.float64)


def pairs():
    return [(i, j) for i in range(F) for j in range(i + 1, F)]


def test_fm(emb):
    want = torch.zeros(B, dtype=emb.dtype)
    for b in range(B):
        for i, j in pairs():
            want[b] += torch.dot(emb[b, i], emb[b, j])
    torch.testing.assert_close(FactorizationMachine()(emb), want)


def test_fm_gradient_equals_autograd_of_the_pairwise_sum(emb):
    """The fused backward against autograd through the explicit sum over pairs."""
    g = torch.randn(B, dtype=emb.dtype)
    with torch.enable_grad():
        x = emb.clone().requires_grad_(True)
        (FactorizationMachine()(x) * g).sum().backward()
        y = emb.clone().requires_grad_(True)
        want = torch.stack([sum(torch.dot(y[b, i], y[b, j]) for i, j in pairs()) for b in range(B)])
        (want * g).sum().backward()
        assert torch.autograd.gradcheck(FactorizationMachine(), (emb.clone().requires_grad_(True),))
    torch.testing.assert_close(x.grad, y.grad)


def test_inner_product(emb):
    want = torch.tensor([[float(emb[b, i] @ emb[b, j]) for i, j in pairs()] for b in range(B)])
    torch.testing.assert_close(InnerProduct(F)(emb), want.to(emb.dtype))


def test_inner_product_gradient_equals_autograd_of_the_pairwise_dots(emb):
    """InnerProduct's hand-written backward (two matmuls with the pair gradients) against
    autograd through the explicit dot of every pair."""
    g = torch.randn(B, len(pairs()), dtype=emb.dtype)
    with torch.enable_grad():
        x = emb.clone().requires_grad_(True)
        (InnerProduct(F)(x) * g).sum().backward()
        y = emb.clone().requires_grad_(True)
        want = torch.stack([torch.stack([y[b, i] @ y[b, j] for i, j in pairs()]) for b in range(B)])
        (want * g).sum().backward()
        assert torch.autograd.gradcheck(InnerProduct(F), (emb.clone().requires_grad_(True),))
    torch.testing.assert_close(x.grad, y.grad)


def test_outer_product_with_kernel(emb):
    layer = OuterProduct(F, D).double()
    want = torch.zeros(B, len(pairs()), dtype=emb.dtype)
    for b in range(B):
        for p, (i, j) in enumerate(pairs()):
            outer = torch.outer(emb[b, i], emb[b, j])  # (D, D)
            want[b, p] = (outer * layer.kernel[p]).sum()
    torch.testing.assert_close(layer(emb), want)


def test_cross(emb):
    x0 = emb.flatten(1)
    layer = CrossNet(F * D, 3).double()
    with torch.no_grad():
        for b in layer.bias:
            b.normal_()
    want = torch.zeros_like(x0)
    for b in range(B):
        x = x0[b].clone()
        for w, bias in zip(layer.weight, layer.bias):
            s = sum(float(x[k]) * float(w[k, 0]) for k in range(F * D))
            x = x0[b] * s + bias + x
        want[b] = x
    torch.testing.assert_close(layer(x0), want)


@pytest.mark.parametrize("layers", [0, 1, 3, 6])
def test_cross_closed_form_gradients_equal_autograd_of_the_formula(emb, layers):
    """CrossNet computes x_L = c_L x_0 + beta_L in closed form (and x_L . v without forming
    x_L); values and gradients for x_0, every w_l, b_l (and v) must be those of the layers
    written out one after the other, looped here."""
    layer = CrossNet(F * D, layers).double()
    with torch.no_grad():
        for b in layer.bias:
            b.normal_()
    g = torch.randn(B, F * D, dtype=emb.dtype)

    def grads(fn):
        layer.zero_grad()
        x0 = emb.flatten(1).clone().requires_grad_(True)
        v = torch.randn(F * D, dtype=emb.dtype, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        out, proj = fn(x0, v)
        ((out * g).sum() + (proj * g[:, 0]).sum()).backward()
        return [out.detach(), proj.detach(), x0.grad, v.grad] + [p.grad for p in layer.parameters()]

    def written_out(x0, v):
        x = x0
        for w, b in zip(layer.weight, layer.bias):
            x = x0 * (x @ w) + b + x
        return x, x @ v

    with torch.enable_grad():
        got = grads(lambda x0, v: (layer(x0), layer.project(x0, v)))
        want = grads(written_out)
        assert torch.autograd.gradcheck(lambda a: layer(a), (emb.flatten(1).clone().requires_grad_(True),))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("low_rank", [None, 2])
def test_cross_v2(emb, low_rank):
    x0 = emb.flatten(1)
    layer = CrossNetV2(F * D, 2, low_rank).double()
    with torch.no_grad():
        for b in layer.bias:
            b.normal_()
    want = torch.zeros_like(x0)
    for b in range(B):
        x = x0[b].clone()
        for i in range(2):
            w = layer.weight[i] if low_rank is None else layer.weight[i] @ layer.weight_v[i].t()
            x = x0[b] * (torch.mv(w, x) + layer.bias[i]) + x
        want[b] = x
    torch.testing.assert_close(layer(x0), want)


def test_senet(emb):
    layer = SENET(F, reduction_ratio=2).double()
    w1, w2 = layer.excitation[0].weight, layer.excitation[2].weight  # (2, F), (F, 2)
    want = torch.zeros_like(emb)
    for b in range(B):
        z = [float(emb[b, f].mean()) for f in range(F)]
        hidden = [max(0.0, sum(w1[r, f] * z[f] for f in range(F))) for r in range(w1.shape[0])]
        for f in range(F):
            a = max(0.0, float(sum(w2[f, r] * hidden[r] for r in range(len(hidden)))))
            want[b, f] = emb[b, f] * a
    torch.testing.assert_close(layer(emb), want)


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear(emb, kind):
    layer = Bilinear(F, D, kind).double()
    want = torch.zeros(B, len(pairs()), D, dtype=emb.dtype)
    for b in range(B):
        for p, (i, j) in enumerate(pairs()):
            index = {"field_all": 0, "field_each": i, "field_interaction": p}[kind]
            w = layer.weight[index]
            want[b, p] = (emb[b, i] @ w) * emb[b, j]
    torch.testing.assert_close(layer(emb), want)


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_gradients_equal_autograd_of_the_pairwise_products(emb, kind):
    """Training goes through _FieldPairs' hand-written backward; the gradients of the embeddings
    and of every kernel must be autograd's through the products written pair by pair."""
    layer = Bilinear(F, D, kind).double()
    g = torch.randn(B, len(pairs()), D, dtype=emb.dtype)
    with torch.enable_grad():
        x = emb.clone().requires_grad_(True)
        (layer(x) * g).sum().backward()
        got = [x.grad, layer.weight.grad.clone()]
        layer.zero_grad()
        y = emb.clone().requires_grad_(True)
        index = {"field_all": lambda p, i: 0, "field_each": lambda p, i: i, "field_interaction": lambda p, i: p}[kind]
        want = torch.stack([(y[:, i] @ layer.weight[index(p, i)]) * y[:, j] for p, (i, j) in enumerate(pairs())], 1)
        (want * g).sum().backward()
        assert torch.autograd.gradcheck(layer, (emb.clone().requires_grad_(True),))
    for a, b in zip(got, [y.grad, layer.weight.grad]):
        torch.testing.assert_close(a, b)


def test_autocast_input_casts_only_under_autocast():
    x = torch.randn(B, F, D)
    assert autocast_input(x) is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_input(x).dtype == torch.bfloat16
        torch.testing.assert_close(autocast_input(x).float(), x.bfloat16().float())


def test_fibinet_builds_its_pairs_in_bf16_under_autocast_and_stays_near_fp32():
    """The bilinear output (the MLP's (B, 2P*D) input) is bf16 under bf16 autocast, not fp32
    cast again by the MLP; the logits move by bf16 rounding only."""
    from mutualctr.models.config import FiBiNETConfig
    from mutualctr.models.fibinet import FiBiNET

    torch.manual_seed(0)
    model = FiBiNET(50, 6, FiBiNETConfig(embed_dim=8))
    ids = torch.randint(0, 50, (64, 6))
    seen = []
    hook = model.mlp[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    fp32 = model(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(ids)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert fp32.dtype == bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, atol=0.05, rtol=0.05)
    assert not torch.equal(bf16, fp32)
