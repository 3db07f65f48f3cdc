"""Optimizers and learning-rate schedules.

Dense parameters (MLP, cross, product, SENET, bilinear weights) use torch's Adam (its fused
kernel unless ``optim.fused: false``). The one
embedding table uses either torch's Adam on a dense gradient (``dense``, parity with the
peers) or :class:`RowAdam` (``rowwise``, default), which reads the coalesced sparse gradient
the embedding layer produces and updates only the rows the batch touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mutualctr.config import ConfigError, check_fields, check_range
from mutualctr.models import embedding_tables


class RowAdam(torch.optim.Optimizer):
    """Adam restricted to the rows present in a sparse gradient ("lazy" Adam).

    For a touched row r at global step t:  m_r <- b1 m_r + (1-b1) g_r;  v_r <- b2 v_r + (1-b2) g_r^2;
    w_r <- w_r - lr * (m_r / (1-b1^t)) / (sqrt(v_r / (1-b2^t)) + eps).
    Untouched rows keep their weights and moments. On a step where every row is touched this is
    exactly torch.optim.Adam; otherwise it differs only in not decaying the moments (and not
    moving) rows the batch did not use, which is what makes a step cost O(touched rows) instead
    of O(table). Dense gradients are accepted too (all rows touched).

    ``impl``: ``"fused"`` (default) gathers the touched rows of the weight and both moments,
    updates them with torch's fused CPU/GPU Adam kernel (one pass instead of ~10 elementwise
    kernels) and writes them back; ``"reference"`` is the step written out with elementwise
    ops (the formula above, kept for comparison and tests). Both give the same update within
    float rounding; the optimizer state (``step``, ``exp_avg``, ``exp_avg_sq``) is the same, so
    checkpoints are interchangeable.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 impl: Literal["fused", "reference"] = "fused"):
        if impl not in ("fused", "reference"):
            raise ValueError(f"RowAdam impl must be 'fused' or 'reference', got {impl!r}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.impl = impl

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                g = p.grad
                if g.is_sparse:
                    if not g.is_coalesced():
                        g = g.coalesce()
                    rows, vals = g.indices()[0], g.values()
                else:
                    rows, vals = None, g
                if self.impl == "fused" and p.dtype in (torch.float32, torch.float64) and vals.numel():
                    self._fused(p, state, rows, vals, lr, b1, b2, eps)
                else:
                    self._reference(p, state, rows, vals, lr, b1, b2, eps)
        return None

    @staticmethod
    def _fused(p, state, rows, vals, lr, b1, b2, eps) -> None:
        m, v = state["exp_avg"], state["exp_avg_sq"]
        # the fused kernel reads the step count from a float32 tensor on the parameter's device
        step = state["step"].to(device=p.device, dtype=torch.float32)
        if rows is None:
            torch._fused_adam_([p], [vals], [m], [v], [], [step], lr=lr, beta1=b1, beta2=b2,
                               weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
            return
        p_r, m_r, v_r = p.index_select(0, rows), m.index_select(0, rows), v.index_select(0, rows)
        torch._fused_adam_([p_r], [vals], [m_r], [v_r], [], [step], lr=lr, beta1=b1, beta2=b2,
                           weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
        p.index_copy_(0, rows, p_r)
        m.index_copy_(0, rows, m_r)
        v.index_copy_(0, rows, v_r)

    @staticmethod
    def _reference(p, state, rows, vals, lr, b1, b2, eps) -> None:
        t = float(state["step"])
        m, v = state["exp_avg"], state["exp_avg_sq"]
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        if rows is not None:
            m_r = m.index_select(0, rows).mul_(b1).add_(vals, alpha=1 - b1)
            v_r = v.index_select(0, rows).mul_(b2).addcmul_(vals, vals, value=1 - b2)
            m.index_copy_(0, rows, m_r)
            v.index_copy_(0, rows, v_r)
            denom = (v_r / bc2).sqrt_().add_(eps)
            p.index_add_(0, rows, (m_r / denom).mul_(-lr / bc1))
        else:
            m.mul_(b1).add_(vals, alpha=1 - b1)
            v.mul_(b2).addcmul_(vals, vals, value=1 - b2)
            denom = (v / bc2).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / bc1)


@dataclass
class OptimConfig:
    """Optimizer and schedule settings (YAML section ``optim``)."""

    lr: float = 1e-3
    embedding_optimizer: Literal["rowwise", "dense"] = "rowwise"
    embedding_lr_scale: float = 1.0  # the tables' learning rate is lr x this (the schedule included)
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    # fused kernels: torch's fused Adam for the network, RowAdam(impl="fused") for the table;
    # false selects the reference implementations (same updates within float rounding)
    fused: bool = True
    schedule: Literal["exp", "constant", "plateau"] = "exp"
    decay_epochs: float = 3.0  # exp: reach `decay_to` x lr after this many epochs (paper: 3)
    decay_to: float = 0.1
    plateau_factor: float = 0.1  # plateau: multiply lr by this when dev AUC stops improving
    plateau_patience: int = 1

    def __post_init__(self):
        check_fields(self, "optim")  # also values set by dataclasses.replace (CLI flags)
        check_range("optim.lr", self.lr, gt=0)
        check_range("optim.beta1", self.beta1, ge=0, lt=1)
        check_range("optim.beta2", self.beta2, ge=0, lt=1)
        check_range("optim.eps", self.eps, gt=0)
        check_range("optim.decay_epochs", self.decay_epochs, gt=0)
        check_range("optim.decay_to", self.decay_to, gt=0, le=1)
        check_range("optim.plateau_factor", self.plateau_factor, gt=0, le=1)
        check_range("optim.plateau_patience", self.plateau_patience, ge=1)
        check_range("optim.embedding_lr_scale", self.embedding_lr_scale, gt=0)


class Schedule:
    """Per-step learning rate: exp decay, constant, or plateau decay (driven by dev AUC).

    exp: lr(t) = lr0 * decay_to ** (t / (decay_epochs * steps_per_epoch))  (SPEC.md: one tenth
    after three epochs).
    """

    def __init__(self, cfg: OptimConfig, optimizers: list[torch.optim.Optimizer], steps_per_epoch: int):
        self.cfg = cfg
        self.optimizers = optimizers
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.base_lr = cfg.lr
        self.plateau_scale = 1.0
        self.plateau_best = -math.inf
        self.plateau_bad = 0
        self.set_step(0)

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if c.schedule == "exp":
            return self.base_lr * c.decay_to ** (step / (c.decay_epochs * self.steps_per_epoch))
        return self.base_lr * self.plateau_scale

    def set_step(self, step: int) -> float:
        """Set every parameter group's rate for ``step`` (times the group's ``lr_scale``)."""
        lr = self.lr_at(step)
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
        self.lr = lr
        return lr

    def observe(self, dev_auc: float) -> None:
        """Plateau decay: call after each dev evaluation."""
        if self.cfg.schedule != "plateau":
            return
        if dev_auc > self.plateau_best:
            self.plateau_best, self.plateau_bad = dev_auc, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad >= self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.plateau_factor
                self.plateau_bad = 0

    def state_dict(self) -> dict:
        return dict(base_lr=self.base_lr, plateau_scale=self.plateau_scale,
                    plateau_best=self.plateau_best, plateau_bad=self.plateau_bad)

    def load_state_dict(self, state: dict) -> None:
        self.base_lr = state["base_lr"]
        self.plateau_scale = state["plateau_scale"]
        self.plateau_best = state["plateau_best"]
        self.plateau_bad = state["plateau_bad"]


def sparse_grad_for(cfg: OptimConfig) -> bool:
    """The gradient layout to build a model's tables with for ``cfg``: row-sparse for the
    row-wise embedding optimizer (``build_model(..., sparse_grad=...)``), dense otherwise."""
    return cfg.embedding_optimizer == "rowwise"


def build_optimizers(model: nn.Module, cfg: OptimConfig) -> list[torch.optim.Optimizer]:
    """[dense Adam for the network, embedding optimizer].

    The tables' gradient layout was fixed when the model was built (:func:`sparse_grad_for`):
    row-wise Adam reads either layout (a dense gradient touches every row), torch's Adam only
    the dense one.
    """
    tables = embedding_tables(model)
    sparse = cfg.embedding_optimizer == "rowwise"
    if not sparse and any(t.sparse_grad for t in tables):
        raise ConfigError("optim.embedding_optimizer: dense needs tables with dense gradients; "
                          "build the model with sparse_grad=False (see optim.sparse_grad_for)")
    emb = [t.weight for t in tables]
    emb_ids = {id(p) for p in emb}
    dense = [p for p in model.parameters() if id(p) not in emb_ids]
    betas = (cfg.beta1, cfg.beta2)
    opts: list[torch.optim.Optimizer] = []
    fused = cfg.fused or None  # None: torch's default (foreach/for-loop)
    if dense:
        opts.append(torch.optim.Adam(dense, lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused))
    if emb:
        lr = cfg.lr * cfg.embedding_lr_scale
        if sparse:
            opt = RowAdam(emb, lr=lr, betas=betas, eps=cfg.eps, impl="fused" if cfg.fused else "reference")
        else:
            opt = torch.optim.Adam(emb, lr=lr, betas=betas, eps=cfg.eps, fused=fused)
        opt.param_groups[0]["lr_scale"] = cfg.embedding_lr_scale
        opts.append(opt)
    return opts
