import math

import pytest
import torch

from mutualctr.training.optim import OptimConfig, RowAdam, Schedule


def _sparse_grad(rows, vals, shape):
    return torch.sparse_coo_tensor(torch.tensor([rows]), vals, shape, check_invariants=True).coalesce()


def test_rowadam_equals_adam_when_every_row_is_touched():
    torch.manual_seed(0)
    w0 = torch.randn(6, 4)
    a = torch.nn.Parameter(w0.clone())
    b = torch.nn.Parameter(w0.clone())
    opt_a = torch.optim.Adam([a], lr=1e-2)
    opt_b = RowAdam([b], lr=1e-2)
    for _ in range(5):
        g = torch.randn(6, 4)
        a.grad = g.clone()
        b.grad = _sparse_grad(list(range(6)), g.clone(), (6, 4))
        opt_a.step()
        opt_b.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_rowadam_updates_only_touched_rows_like_adam_on_them():
    torch.manual_seed(1)
    w0 = torch.randn(10, 3)
    dense = torch.nn.Parameter(w0.clone())
    rows = torch.nn.Parameter(w0.clone())
    opt_d = torch.optim.Adam([dense], lr=1e-2)
    opt_r = RowAdam([rows], lr=1e-2)
    touched = [1, 4, 7]
    g = torch.randn(3, 3)
    full = torch.zeros(10, 3)
    full[touched] = g
    dense.grad = full
    rows.grad = _sparse_grad(touched, g, (10, 3))
    opt_d.step()
    opt_r.step()
    torch.testing.assert_close(rows[touched], dense[touched])
    untouched = [i for i in range(10) if i not in touched]
    assert torch.equal(rows[untouched], w0[untouched])


def test_rowadam_dense_grad_equals_adam():
    torch.manual_seed(2)
    w0 = torch.randn(5, 2)
    a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    oa, ob = torch.optim.Adam([a], lr=3e-3), RowAdam([b], lr=3e-3)
    for _ in range(3):
        g = torch.randn(5, 2)
        a.grad, b.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    torch.testing.assert_close(a, b)


def test_exp_schedule_reaches_a_tenth_after_three_epochs():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    s = Schedule(OptimConfig(lr=1e-3), [opt], steps_per_epoch=100)
    assert s.set_step(0) == pytest.approx(1e-3)
    assert s.set_step(300) == pytest.approx(1e-4)
    assert s.set_step(150) == pytest.approx(1e-3 * 0.1**0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.1**0.5)
    # SPEC.md: lr(t) = lr0 * 0.1 ** (t / (3 * steps_per_epoch))
    for t in (1, 17, 250, 1000):
        assert s.lr_at(t) == pytest.approx(1e-3 * 0.1 ** (t / 300))


def test_constant_and_plateau_schedules():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p])
    c = Schedule(OptimConfig(lr=0.01, schedule="constant"), [opt], 10)
    assert c.set_step(1000) == 0.01
    pl = Schedule(OptimConfig(lr=0.01, schedule="plateau", plateau_factor=0.5, plateau_patience=2), [opt], 10)
    for auc in (0.70, 0.71, 0.709, 0.708):  # two evaluations without improvement -> halve
        pl.observe(auc)
    assert pl.set_step(5) == pytest.approx(0.005)
    state = pl.state_dict()
    pl2 = Schedule(OptimConfig(lr=0.01, schedule="plateau", plateau_factor=0.5, plateau_patience=2), [opt], 10)
    pl2.load_state_dict(state)
    assert pl2.lr_at(0) == pl.lr_at(0)
    assert math.isclose(pl2.plateau_best, 0.71)
