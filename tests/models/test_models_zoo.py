"""Every model: shapes, parameter counts, gradients, overfitting, seeding, state_dict."""

import io

import pytest
import torch
import torch.nn.functional as F_

from mutualctr.models import MODELS, build_model

N, F, D, H = 400, 8, 8, [16, 8]
SMALL = {"embed_dim": D, "mlp": {"hidden": H}}
VARIANTS = [
    ("lr", {}), ("fm", {}), ("deepfm", {}), ("dcn", {}), ("dcnv2", {}),
    ("dcnv2", {"low_rank": 4, "structure": "stacked"}), ("pnn", {}), ("pnn", {"product": "outer"}),
    ("fibinet", {"bilinear_type": "field_all"}), ("fibinet", {"bilinear_type": "field_each"}),
    ("fibinet", {}),
]
IDS = pytest.mark.parametrize("name,extra", VARIANTS, ids=[f"{n}-{'-'.join(map(str, e.values()))}" for n, e in VARIANTS])


def batch(rows=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, N // F, (rows, F), generator=g) + torch.arange(F) * (N // F)
    return ids, torch.randint(0, 2, (rows,), generator=g).float()


def mlp_params(in_dim, hidden, out=True):
    total = 0
    for h in hidden:
        total, in_dim = total + in_dim * h + h, h
    return total + (in_dim + 1 if out else 0)


def expected_params(name, extra):
    d, p = F * D, F * (F - 1) // 2
    emb, lin = N * D, N + 1
    if name == "lr":
        return lin
    if name == "fm":
        return lin + emb
    if name == "deepfm":
        return lin + emb + mlp_params(d, H)
    if name == "dcn":
        return emb + 3 * 2 * d + mlp_params(d, H, out=False) + d + H[-1] + 1
    if name == "dcnv2":
        r = extra.get("low_rank")
        cross = 3 * ((d * d if r is None else 2 * d * r) + d)
        head = H[-1] + 1 + (d if extra.get("structure", "parallel") == "parallel" else 0)
        return emb + cross + mlp_params(d, H, out=False) + head
    if name == "pnn":
        kernel = p * D * D if extra.get("product") == "outer" else 0
        return emb + kernel + mlp_params(d + p, H)
    if name == "fibinet":
        count = {"field_all": 1, "field_each": F}.get(extra.get("bilinear_type"), p)
        senet = 2 * F * (F // 3)
        return lin + emb + senet + 2 * count * D * D + mlp_params(2 * p * D, H)
    raise AssertionError(name)


def test_registry_names():
    assert set(MODELS) == {"lr", "fm", "deepfm", "dcn", "dcnv2", "pnn", "fibinet"}


@IDS
def test_shape_and_parameter_count(name, extra):
    model = build_model(name, N, F, SMALL | extra)
    ids, _ = batch()
    assert model(ids).shape == (32,)
    assert sum(p.numel() for p in model.parameters()) == expected_params(name, extra)


def test_default_config_sizes():
    model = build_model("deepfm", 1000, 39)
    assert model.embedding.weight.shape == (1000, 16)
    assert model.linear.weight.shape == (1000, 1)
    assert [m.out_features for m in model.mlp if isinstance(m, torch.nn.Linear)] == [400, 200, 100, 1]
    assert len(build_model("dcn", 1000, 39).cross.weight) == 3
    assert build_model("fibinet", 1000, 39).bilinear.bilinear_type == "field_interaction"


@pytest.mark.parametrize("name,extra", [("dcn", {}), ("dcnv2", {}), ("dcnv2", {"structure": "stacked"})])
def test_cross_network_alone(name, extra):
    model = build_model(name, N, F, {"embed_dim": D, "mlp": {"hidden": []}} | extra)
    assert model.mlp is None and model.out.in_features == F * D
    assert model(batch()[0]).shape == (32,)


@pytest.mark.parametrize("hidden", [H, []])
def test_dcn_is_its_paper_formula(hidden):
    """DCN applies its output Linear part by part without forming the cross output; written out
    here as the paper and FuxiCTR do: cross layers one after the other, concatenated with the
    MLP's output, one Linear. Logits and every gradient in float64."""
    torch.manual_seed(0)
    model = build_model("dcn", N, F, {"embed_dim": D, "init_std": 0.1, "mlp": {"hidden": hidden}}).double()
    with torch.no_grad():
        for b in model.cross.bias:
            b.normal_()
    ids, y = batch()

    def written_out(ids):
        x0 = model.embedding(ids).flatten(1)
        x = x0
        for w, b in zip(model.cross.weight, model.cross.bias):
            x = x0 * (x @ w) + b + x
        parts = [x] if model.mlp is None else [x, model.mlp(x0)]
        return model.out(torch.cat(parts, dim=1)).squeeze(-1)

    got, want = [], []
    for fn, out in ((model, got), (written_out, want)):
        model.zero_grad()
        logits = fn(ids)
        F_.binary_cross_entropy_with_logits(logits, y.double()).backward()
        out += [logits.detach()] + [p.grad.to_dense() if p.grad.is_sparse else p.grad for p in model.parameters()]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@IDS
def test_every_parameter_gets_a_gradient(name, extra):
    torch.manual_seed(0)
    cfg = SMALL | extra | {"init_std": 0.1, "mlp": {"hidden": H, "batch_norm": True, "dropout": 0.1}}
    model = build_model(name, N, F, cfg)
    ids, y = batch()
    F_.binary_cross_entropy_with_logits(model(ids), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@IDS
def test_overfits_256_rows(name, extra):
    torch.manual_seed(0)
    model = build_model(name, N, F, SMALL | extra)
    ids, y = batch(256, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05 if name in ("lr", "fm") else 0.01)
    for step in range(100):  # worst ratio seen over seeds 0-2: 0.03 (LR)
        loss = F_.binary_cross_entropy_with_logits(model(ids), y)
        start = loss.item() if step == 0 else start
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < start / 10, (start, loss.item())


@IDS
def test_same_seed_same_model(name, extra):
    ids, _ = batch()
    models = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        models.append(build_model(name, N, F, SMALL | extra))
    a, b, c = models
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    assert torch.equal(a(ids), b(ids))
    assert not torch.equal(a.embedding.weight if hasattr(a, "embedding") else a.linear.weight,
                           c.embedding.weight if hasattr(c, "embedding") else c.linear.weight)


@IDS
def test_state_dict_round_trip(name, extra):
    cfg = SMALL | extra | {"init_std": 0.1, "mlp": {"hidden": H, "batch_norm": True}}
    torch.manual_seed(0)
    model = build_model(name, N, F, cfg)
    ids, y = batch()
    F_.binary_cross_entropy_with_logits(model(ids), y)  # BN running stats move
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    other = build_model(name, N, F, cfg)
    other.load_state_dict(torch.load(buf, weights_only=True))
    model.eval(), other.eval()
    assert torch.equal(model(ids), other(ids))
