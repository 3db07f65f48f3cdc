"""The embedding of a batch with list and dense fields (issue 25) against brute-force references
written here: pooled bags (mean and sum, with padding), value-scaled dense fields with their
missing row, the first-order term, the pad row's gradient, and the un-pooled sequence API."""

from __future__ import annotations

import pytest
import torch

from mutualctr.data.loader import Batch
from mutualctr.models import MODELS, FieldLayout, build_model, l2_penalty, set_plain
from mutualctr.models.embedding import FeatureEmbedding, FeatureLinear


class _F:  # what FieldLayout.from_fields reads of a store's FieldInfo
    def __init__(self, name, kind, offset, spec=None):
        self.name, self.kind, self.offset, self.spec = name, kind, offset, spec


# fields in store order: id, bag (sum), dense, sequence (mean), id, dense; 30 rows, 0 = pad
FIELDS = [_F("user", "categorical", 1), _F("genres", "multi-valued", 6, {"pooling": "sum"}),
          _F("price", "dense", 12), _F("hist", "sequence", 14, {"vocab_from": "item"}),
          _F("item", "categorical", 14), _F("age", "dense", 28)]
ROWS = 30


def _batch() -> Batch:
    ids = torch.tensor([[1, 14], [3, 20], [5, 27]])
    genres = torch.tensor([[6, 9, 0], [7, 0, 0], [8, 10, 11]])
    hist = torch.tensor([[14, 15, 16, 17], [20, 0, 0, 0], [21, 22, 0, 0]])
    values = torch.tensor([[0.5, -2.0], [0.0, 3.0], [1.5, 0.0]])
    missing = torch.tensor([[False, False], [True, False], [False, True]])
    bags = {"genres": genres, "hist": hist}
    lengths = {k: (v != 0).sum(1) for k, v in bags.items()}
    return Batch(ids, bags, lengths, values, missing, torch.tensor([1.0, 0.0, 1.0]))


def _reference(w: torch.Tensor, b: Batch) -> torch.Tensor:
    """(B, F, D) by loops: a field at a time, a row at a time."""
    out = []
    for r in range(len(b)):
        fields = [w[b.ids[r, 0]]]
        fields.append(sum(w[i] for i in b.bags["genres"][r].tolist() if i != 0))  # sum pooling
        fields.append(w[13] if b.missing[r, 0] else w[12] * b.values[r, 0])
        items = [w[i] for i in b.bags["hist"][r].tolist() if i != 0]
        fields.append(sum(items) / len(items))  # mean pooling
        fields.append(w[b.ids[r, 1]])
        fields.append(w[29] if b.missing[r, 1] else w[28] * b.values[r, 1])
        out.append(torch.stack(fields))
    return torch.stack(out)


@pytest.mark.parametrize("plain", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_field_embeddings_and_gradient_equal_the_loops(plain, sparse):
    torch.manual_seed(0)
    emb = FeatureEmbedding(ROWS, 4, init_std=0.1, l2=0.01, sparse_grad=sparse)
    emb.set_layout(FieldLayout.from_fields(FIELDS))
    emb.plain = plain
    assert torch.equal(emb.weight[0], torch.zeros(4))  # the pad row
    b = _batch()
    got = emb(b)
    ref_w = emb.weight.detach().clone().requires_grad_(True)
    want = _reference(ref_w, b)
    assert got.shape == (3, 6, 4)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(got)
    ((got * g).sum() + emb.penalty(b)).backward()
    looked = [i for i in torch.cat([b.ids.flatten(), b.bags["genres"].flatten(), b.bags["hist"].flatten(),
                                    torch.tensor([12, 13, 12, 28, 28, 29])]).tolist() if i != 0]
    ((want * g).sum() + 0.01 * sum(ref_w[i].pow(2).sum() for i in looked) / 3).backward()
    grad = emb.weight.grad.to_dense() if sparse else emb.weight.grad
    torch.testing.assert_close(grad, ref_w.grad)
    assert torch.equal(grad[0], torch.zeros(4))  # the pad gets no gradient
    want_penalty = 0.01 * sum(ref_w[i].detach().pow(2).sum() for i in looked) / 3
    assert float(emb.penalty(b).detach()) == pytest.approx(float(want_penalty))


def test_first_order_term_sums_the_scalar_field_embeddings():
    torch.manual_seed(1)
    lin = FeatureLinear(ROWS, init_std=0.1)
    with torch.no_grad():
        lin.bias.fill_(0.25)
    lin.set_layout(FieldLayout.from_fields(FIELDS))
    b = _batch()
    want = _reference(lin.weight.detach(), b).sum(dim=(1, 2)) + 0.25
    torch.testing.assert_close(lin(b), want)


def test_sequence_api_gives_the_unpooled_items_and_mask():
    emb = FeatureEmbedding(ROWS, 3, init_std=0.1)
    emb.set_layout(FieldLayout.from_fields(FIELDS))
    b = _batch()
    rows, mask = emb.sequence(b, "hist")
    assert rows.shape == (3, 4, 3) and mask.tolist() == (b.bags["hist"] != 0).tolist()
    for r in range(3):
        for j in range(4):
            i = int(b.bags["hist"][r, j])
            want = torch.zeros(3) if i == 0 else emb.weight[i]
            torch.testing.assert_close(rows[r, j], want)


def test_mean_pooling_of_a_multi_valued_field():
    fields = [_F("a", "categorical", 1), _F("g", "multi-valued", 4, {"pooling": "mean"})]
    emb = FeatureEmbedding(10, 2, init_std=0.1)
    emb.set_layout(FieldLayout.from_fields(fields))
    bags = {"g": torch.tensor([[4, 5, 6], [7, 0, 0]])}
    b = Batch(torch.tensor([[1], [2]]), bags, {"g": torch.tensor([3, 1])}, None, None, torch.zeros(2))
    w = emb.weight
    torch.testing.assert_close(emb(b)[:, 1], torch.stack([(w[4] + w[5] + w[6]) / 3, w[7]]))


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_reads_a_batch_and_equals_its_ids_path_on_one_id_fields(name):
    """A batch whose fields are all one-id fields laid out as bags of length 1 (and a model
    given the ids) score alike: the batch path feeds the same (B, F, D) to the same network."""
    torch.manual_seed(2)
    fields = [_F("a", "categorical", 1), _F("b", "multi-valued", 5, {"pooling": "sum"}), _F("c", "categorical", 9)]
    model = build_model(name, 14, 3, {"embed_dim": 4, "init_std": 0.1}, layout=FieldLayout.from_fields(fields))
    model.eval()
    ids = torch.tensor([[1, 6, 9], [3, 8, 13]])
    b = Batch(ids[:, [0, 2]], {"b": ids[:, 1:2]}, {"b": torch.ones(2, dtype=torch.long)}, None, None, torch.zeros(2))
    torch.testing.assert_close(model(b), model(ids))
    set_plain(model, True)
    torch.testing.assert_close(model(b), model(ids))
    assert l2_penalty(model, b).shape == ()
