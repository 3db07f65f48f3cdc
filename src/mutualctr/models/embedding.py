"""One embedding table for all fields, with a fast, L2-aware backward.

A batch of global ids ``(B, F)`` (field offsets already applied by the store) is one lookup
into a single ``(num_features, D)`` table, giving ``(B, F, D)``.

Fast path (default, ``plain=False``): the lookup is :class:`_Lookup`, a custom autograd
function whose backward

* accumulates the ``B*F`` per-occurrence gradients into the touched rows with one
  ``index_add_`` (PyTorch's dense embedding backward sorts the ids first and is ~3x slower
  on CPU), and
* folds in the gradient of the batch-local penalty ``l2 * sum_{b,f} ||w[ids[b,f]]||^2 / B``,
  i.e. ``2 * l2 / B * w[ids[b,f]]`` per occurrence, reusing the looked-up rows it saved, so the
  penalty needs no second lookup and touches only the rows the batch uses.

``sparse_grad=False`` gives a dense ``(num_features, D)`` gradient (drop-in for torch
optimizers); ``sparse_grad=True`` gives a coalesced ``torch.sparse_coo_tensor`` with one
row per unique id, for a row-wise optimizer.

Reference path (``plain=True``): ``F.embedding`` plus an explicit differentiable penalty in
:meth:`FeatureEmbedding.penalty`. The fast function also supports ``torch.func.vmap`` in
dense mode (``setup_context`` + ``generate_vmap_rule=True``); sparse mode does not vmap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Lookup(torch.autograd.Function):
    """``weight[ids]`` whose backward scatter-adds grads and the batch-local L2 gradient."""

    generate_vmap_rule = True

    @staticmethod
    def forward(weight: torch.Tensor, ids: torch.Tensor, l2: float, owner) -> torch.Tensor:
        return F.embedding(ids, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, ids, l2, owner = inputs
        ctx.num_rows, ctx.l2, ctx.owner = weight.shape[0], l2, owner
        ctx.sparse = owner.sparse_grad  # the mode at forward time decides
        ctx.save_for_backward(ids, output if l2 else None)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ids, rows = ctx.saved_tensors
        dim = grad.shape[-1]
        if ctx.l2:  # d/dw of l2 * sum ||w[ids]||^2 / B, per occurrence
            grad = grad + (2.0 * ctx.l2 / ids.shape[0]) * rows
        flat_ids, grad = ids.reshape(-1), grad.reshape(-1, dim)
        if ctx.sparse:
            uniq, inverse = torch.unique(flat_ids, return_inverse=True)  # sorted
            values = grad.new_zeros(uniq.numel(), dim).index_add_(0, inverse, grad)
            out = torch.sparse_coo_tensor(
                uniq.unsqueeze(0), values, (ctx.num_rows, dim),
                is_coalesced=True, check_invariants=False,
            )
            ctx.owner._sparse_values_ptr = values.data_ptr()
        elif torch._C._functorch.is_batchedtensor(grad):  # under vmap: out-of-place
            out = torch.zeros(ctx.num_rows, dim, dtype=grad.dtype, device=grad.device)
            out = out.index_add(0, flat_ids, grad)
        else:
            out = grad.new_zeros(ctx.num_rows, dim).index_add_(0, flat_ids, grad)
        return out, None, None, None


class FeatureEmbedding(nn.Module):
    """Single table ``weight (num_features, dim)``: ids ``(B, F)`` -> embeddings ``(B, F, dim)``.

    ``l2`` is the coefficient of the batch-local penalty (see module docstring).
    ``sparse_grad`` and ``plain`` are plain attributes the trainer may set at any time.
    """

    def __init__(self, num_features: int, dim: int, init_std: float = 1e-4, l2: float = 0.0):
        super().__init__()
        self.num_features, self.dim, self.l2 = num_features, dim, float(l2)
        self.weight = nn.Parameter(torch.empty(num_features, dim))
        nn.init.normal_(self.weight, 0.0, init_std)
        self.sparse_grad = False
        self.plain = False
        self._hooked_weight = None  # id() of the weight that carries _keep_coalesced_flag
        self._sparse_values_ptr = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.plain or not (torch.is_grad_enabled() and self.weight.requires_grad):
            return F.embedding(ids, self.weight, sparse=self.sparse_grad)  # also: eval, frozen
        if self.sparse_grad and self._hooked_weight != id(self.weight) and self.weight.requires_grad:
            self.weight.register_post_accumulate_grad_hook(self._keep_coalesced_flag)
            self._hooked_weight = id(self.weight)
        return _Lookup.apply(self.weight, ids, self.l2, self)

    def _keep_coalesced_flag(self, weight: torch.Tensor) -> None:
        """Restore the coalesced flag that autograd's AccumulateGrad drops.

        When ``.grad`` was empty, AccumulateGrad stores a shallow copy of our coalesced
        gradient (same values storage) without the flag; re-flag it, without any copy. A sum
        of several backward passes is genuinely uncoalesced and is left as it is.
        """
        grad = weight.grad
        if (
            grad is not None and grad.is_sparse and not grad.is_coalesced()
            and grad._values().data_ptr() == self._sparse_values_ptr
        ):
            grad._coalesced_(True)
        self._sparse_values_ptr = None

    def penalty(self, ids: torch.Tensor) -> torch.Tensor:
        """``l2 * sum_{b,f} ||w[ids[b,f]]||^2 / B``: differentiable on the plain path only.

        On the fast path its gradient is already added by the lookup's backward, so the value
        is computed without autograd (adding it to the loss changes no gradient).
        """
        if not self.l2:
            return self.weight.new_zeros(())
        if self.plain:
            rows = F.embedding(ids, self.weight, sparse=self.sparse_grad)
            return self.l2 * rows.pow(2).sum() / ids.shape[0]
        with torch.no_grad():
            return self.l2 * F.embedding(ids, self.weight).pow(2).sum() / ids.shape[0]

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, {self.dim}, l2={self.l2}, "
            f"sparse_grad={self.sparse_grad}, plain={self.plain}"
        )


class FeatureLinear(FeatureEmbedding):
    """First-order term: a ``(num_features, 1)`` table plus a bias; ids ``(B, F)`` -> ``(B,)``.

    Shares the fast lookup and the batch-local L2 of :class:`FeatureEmbedding`.
    """

    def __init__(self, num_features: int, init_std: float = 1e-4, l2: float = 0.0):
        super().__init__(num_features, 1, init_std, l2)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).sum(dim=(1, 2)) + self.bias
