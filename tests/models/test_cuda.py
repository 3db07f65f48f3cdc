"""The models and a mutual step on a CUDA device equal the same on the CPU.

Marked ``cuda`` (``pytest -m cuda``; benchmarks/gpu_check.sh runs them) and skipped without a
CUDA device. ``GPU_CHECK_DRY_RUN=1`` (the rehearsal of gpu_check.sh on a machine without a GPU)
runs them with the CPU standing in for the device: that checks the tests and the script, not
CUDA, since the CPU then equals itself.

fp32 with TF32 off: the device sums in another order (and ``index_add_`` with atomics), so the
results agree to rounding, checked relative to the largest value of each tensor.
"""

from __future__ import annotations

import copy
import os
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F_
from torch import nn

from mutualctr.data.store import Store
from mutualctr.models import MODELS, build_model, embedding_tables, l2_penalty
from mutualctr.training import jobs as api
from mutualctr.training.config import MutualConfig
from mutualctr.training.trainer import Member, Trainer
from tests.conftest import tiny_config

pytestmark = pytest.mark.cuda

N, F, D, H = 600, 8, 8, [32, 16]
REL = 1e-4  # of the largest |value| of the CPU tensor


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("GPU_CHECK_DRY_RUN") == "1":
        return torch.device("cpu")
    pytest.skip("no CUDA device")


@pytest.fixture
def device():
    dev = _device()
    if dev.type != "cuda":
        yield dev
        return
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 matmuls, comparable with the CPU's
    try:
        yield dev
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _close(got: torch.Tensor, want: torch.Tensor, what: str, rel: float = REL) -> None:
    got = got.detach().to("cpu")
    want = want.detach()
    if got.is_sparse:
        got, want = got.to_dense(), want.to_dense()
    assert got.shape == want.shape, what
    scale = float(want.abs().max()) if want.numel() else 0.0
    err = float((got - want).abs().max()) if want.numel() else 0.0
    assert err <= rel * scale + 1e-12, f"{what}: max |device - cpu| {err:.3g}, max |cpu| {scale:.3g}"


def _batch(rows: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, N // F, (rows, F), generator=g) + torch.arange(F) * (N // F)
    return ids, torch.randint(0, 2, (rows,), generator=g).float()


@pytest.mark.parametrize("sparse", [True, False], ids=["row-grad", "dense-grad"])
@pytest.mark.parametrize("name", list(MODELS))
def test_forward_and_backward_on_the_device_equal_the_cpu(name, sparse, device):
    torch.manual_seed(0)
    cpu = build_model(name, N, F, {"embed_dim": D, "embedding_l2": 1e-3, "net_l2": 1e-4, "mlp": {"hidden": H}},
                      sparse_grad=sparse)
    with torch.no_grad():  # embeddings large enough to move the logits (the default init is 1e-4)
        for t in embedding_tables(cpu):
            nn.init.normal_(t.weight, 0.0, 0.1)
    dev = copy.deepcopy(cpu).to(device)
    ids, labels = _batch()
    out = {}
    for key, model, where in (("cpu", cpu, "cpu"), ("dev", dev, device)):
        i, y = ids.to(where), labels.to(where)
        z = model(i)
        loss = F_.binary_cross_entropy_with_logits(z, y) + l2_penalty(model, i)
        loss.backward()
        out[key] = (z, loss)
    _close(out["dev"][0], out["cpu"][0], "logits")
    _close(out["dev"][1], out["cpu"][1], "loss")
    for (n, p), q in zip(cpu.named_parameters(), dev.parameters()):
        assert q.device.type == device.type and (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            assert p.grad.is_sparse == q.grad.is_sparse, n
            _close(q.grad, p.grad, f"{name} grad {n}")


def _trainer(store, models: list[str], device: torch.device, tmp, vectorize: bool) -> Trainer:
    members = []
    for i, name in enumerate(models):
        cfg = tiny_config(name, seed=i)
        cfg = replace(cfg, train=replace(cfg.train, device=device.type))
        members.append(Member(config=cfg, model=api.build(cfg, store, seed=i), run_dir=tmp / f"m{i}"))
    return Trainer(store, members, tmp, members[0].config.train, MutualConfig(alpha=1.0), quiet=True,
                   vectorize=vectorize)


@pytest.mark.parametrize("models,vectorize", [(["deepfm", "dcn"], False), (["deepfm", "deepfm"], True)],
                         ids=["looped", "vectorised"])
def test_a_two_member_mutual_step_on_the_device_equals_the_cpu(tiny_store, tmp_path, device, models, vectorize):
    """Three row-wise-Adam steps of a 2-member group (alpha 1): the losses of each step and the
    weights after them; the device group runs looped or vectorised, the CPU group looped."""
    store = Store.open(tiny_store)
    cpu = _trainer(store, models, torch.device("cpu"), tmp_path / "cpu", vectorize=False)
    dev = _trainer(store, models, device, tmp_path / "dev", vectorize=vectorize)
    for k, (ids, labels) in enumerate(cpu.loader.epoch(0)):
        if k == 3:
            break
        for tr in (cpu, dev):
            for m in tr.members:
                m.schedule.set_step(k)
        want = cpu.step(ids, labels)
        got = dev.step(ids.to(device), labels.to(device))
        assert got.device.type == device.type
        _close(got, want, f"losses of step {k}", rel=1e-5)
    for i, (c, d) in enumerate(zip(cpu.members, dev.members)):
        for (n, p), q in zip(c.model.named_parameters(), d.model.parameters()):
            # an Adam step moves a touched weight by up to lr = 3e-3; rounding stays far below 1e-5
            assert q.device.type == device.type
            assert float((q.detach().cpu() - p.detach()).abs().max()) < 1e-5, (i, n)
