"""The example DIN (examples/mutualctr_plugins/mutualctr_plugins/din.py) against brute-force loops
written here: its target attention (masked, with and without softmax) and its whole forward on a
batch with list and dense fields; bad field names refused with one line."""

from __future__ import annotations

import math
import tomllib

import pytest
import torch

from mutualctr.errors import ConfigError
from mutualctr.models import FieldLayout, build_model, set_plain
from mutualctr.models.plugins import Features, Field, resolve
from tests.models.test_kinds_embedding import FIELDS, ROWS, _batch, _reference
from tests.models.test_user_models import PLUGINS

DIN = "mutualctr_plugins.din:DIN"


@pytest.fixture(autouse=True)
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


def _attend(att, q: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One row: a score per real item, one at a time; softmax over the real items only."""
    scores = {l: float(att.score(torch.cat([q, k, q - k, q * k]).unsqueeze(0))[0])
              for l, k in enumerate(keys) if mask[l]}
    if att.softmax:
        total = sum(math.exp(s) for s in scores.values())
        scores = {l: math.exp(s) / total for l, s in scores.items()}
    return sum((scores[l] * keys[l] for l in scores), torch.zeros_like(q))


@pytest.mark.parametrize("softmax", [False, True])
def test_target_attention_equals_the_loop(softmax):
    from mutualctr_plugins.din import TargetAttention  # importable once the fixture put the example on the path

    torch.manual_seed(0)
    att = TargetAttention(5, [7, 3], softmax)
    q, keys = torch.randn(4, 5), torch.randn(4, 6, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 1, 0]]).bool()
    with torch.no_grad():
        got = att(q, keys, mask)
        want = torch.stack([_attend(att, q[b], keys[b], mask[b]) for b in range(4)])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        weights = att.weights(q, keys, mask)
    assert torch.all(weights[~mask] == 0)
    if softmax:
        torch.testing.assert_close(weights.sum(1), torch.ones(4))


def _features() -> Features:
    return Features(tuple(Field(f.name, f.kind, 0, f.offset) for f in FIELDS), ROWS)


def _din(softmax: bool, **kw):
    cfg = {"target": "item", "sequence": "hist", "embed_dim": 4, "attention_hidden": [8], "softmax": softmax,
           "hidden": [8], "init_std": 0.1, **kw}
    return build_model(DIN, ROWS, len(FIELDS), cfg, features=_features(), layout=FieldLayout.from_fields(FIELDS))


@pytest.mark.parametrize("plain", [False, True])
@pytest.mark.parametrize("softmax", [False, True])
def test_din_forward_equals_the_loop(plain, softmax):
    """Fields (B, F, D) by loops, the mean-pooled hist replaced by the attended items, the MLP."""
    torch.manual_seed(1)
    model = _din(softmax)
    set_plain(model, plain)
    b = _batch()
    got = model(b)
    w = model.embedding.weight.detach()
    fields = _reference(w, b)
    with torch.no_grad():
        want = []
        for r in range(len(b)):
            hist = b.bags["hist"][r]
            attended = _attend(model.attention, w[b.ids[r, 1]], w[hist], hist != 0)
            want.append(model.mlp(torch.cat([fields[r, [0, 1, 2, 4, 5]].flatten(), attended]).unsqueeze(0))[0])
    assert got.shape == (3,)
    torch.testing.assert_close(got.detach(), torch.stack(want), rtol=1e-5, atol=1e-6)
    got.sum().backward()  # the sequence's items get a gradient through the attention
    assert model.embedding.weight.grad is not None


@pytest.mark.parametrize("cfg, match", [
    ({"target": "item_id"}, "model.target: the store has no field 'item_id'"),
    ({"sequence": "history"}, "model.sequence: the store has no field 'history'"),
    ({"sequence": "price"}, "model.sequence: field 'price' is not a list field"),
    ({"atention_hidden": [4]}, "unknown key model.atention_hidden"),
])
def test_bad_settings_are_one_line(cfg, match):
    with pytest.raises(ConfigError, match=match) as e:
        _din(False, **cfg)
    assert "\n" not in str(e.value)


def test_the_example_declares_both_models_as_entry_points():
    declared = tomllib.loads((PLUGINS / "pyproject.toml").read_text())["project"]["entry-points"]["mutualctr.models"]
    assert declared == {"plugin-mlp": "mutualctr_plugins.mlp:MLP", "plugin-din": DIN}
    assert resolve(declared["plugin-din"]).config_class.__name__ == "DINConfig"
