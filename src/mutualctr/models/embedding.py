"""One embedding table for all fields, with a fast, L2-aware backward.

A batch of global ids ``(B, F)`` (field offsets already applied by the store) is one lookup
into a single ``(num_features, D)`` table, giving ``(B, F, D)``.

Fast path (default, ``plain=False``): the lookup is :class:`_Lookup`, a custom autograd
function whose backward

* accumulates the ``B*F`` per-occurrence gradients into the touched rows with one
  ``index_add_`` (PyTorch's dense embedding backward sorts the ids first and is ~3x slower on
  CPU; ``index_put_(accumulate=True)`` is faster but not deterministic on CPU, so not used), and
* folds in the gradient of the batch-local penalty ``l2 * sum_{b,f} ||w[ids[b,f]]||^2 / B``,
  i.e. ``2 * l2 / B * w[ids[b,f]]`` per occurrence, reusing the looked-up rows it saved, so the
  penalty needs no second lookup and touches only the rows the batch uses.

``sparse_grad=False`` gives a dense ``(num_features, D)`` gradient (drop-in for torch
optimizers); ``sparse_grad=True`` gives a coalesced ``torch.sparse_coo_tensor`` with one
row per unique id, for a row-wise optimizer. The unique rows and each occurrence's position
among them come from :func:`unique_rows`: a "mark" pass over a persistent ``(num_features,)``
flag/position buffer (O(B*F) scatter + one O(num_features) scan), several times cheaper than
``torch.unique``'s sort for tables up to tens of millions of rows, and computed once per batch
for all the tables (embedding, first-order; every member of a group) looked up with the same
ids. The penalty's *value* (for the reported loss) is taken from the rows the forward already
looked up. ``unique_method = "sort"`` selects ``torch.unique`` (the reference).

Reference path (``plain=True``): ``F.embedding`` plus an explicit differentiable penalty in
:meth:`FeatureEmbedding.penalty`. The fast function also supports ``torch.func.vmap`` in
dense mode (``setup_context`` + ``generate_vmap_rule=True``); sparse mode does not vmap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# "mark" (default) or "sort" (torch.unique); tables larger than MARK_MAX_ROWS always sort
unique_method = "mark"
MARK_MAX_ROWS = 1 << 28

_buffers: dict = {}  # (device, num_rows) -> (bool mark, int32 position) buffers, kept zeroed
_last: list = [None, None]  # [key (holding the ids tensor alive), (uniq, inverse)]


def _key(ids: torch.Tensor, num_rows: int):
    return (ids, ids.data_ptr(), ids.storage_offset(), tuple(ids.shape), ids.stride(), ids._version,
            ids.device, num_rows, unique_method)


def unique_rows(ids: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uniq, inverse)`` of ``ids`` (any shape, values in ``[0, num_rows)``): the sorted distinct
    ids and, for each id of ``ids.reshape(-1)``, its position in ``uniq`` (as ``torch.unique(...,
    return_inverse=True)`` on the flattened ids). The last answer is cached (keyed on the very
    ids tensor, which the cache keeps alive, its version, shape and ``num_rows``)."""
    key = _key(ids, num_rows)
    last = _last[0]
    if last is not None and last[0] is ids and last[1:] == key[1:]:
        return _last[1]
    flat = ids.reshape(-1)
    if unique_method == "sort" or num_rows > MARK_MAX_ROWS or flat.numel() >= 2**31:
        uniq, inverse = torch.unique(flat, return_inverse=True)
    else:
        bkey = (ids.device, num_rows)
        bufs = _buffers.get(bkey)
        if bufs is None:
            _buffers.clear()  # one table size at a time (all tables of a store share it)
            bufs = (torch.zeros(num_rows, dtype=torch.bool, device=ids.device),
                    torch.empty(num_rows, dtype=torch.int32, device=ids.device))
            _buffers[bkey] = bufs
        mark, pos = bufs
        if mark.device.type == "cpu":
            # index_fill_'s threads write the same cache lines for every repeated id (and CTR
            # ids repeat): 1.6-1.7 ms for a 4000 x 39 batch vs 0.12 ms for numpy's serial store
            mark.numpy()[flat.numpy()] = True
        else:
            mark.index_fill_(0, flat, True)
        uniq = mark.nonzero().squeeze(1)  # sorted
        mark.index_fill_(0, uniq, False)  # leave the buffer zeroed
        pos.index_copy_(0, uniq, torch.arange(uniq.numel(), dtype=torch.int32, device=ids.device))
        inverse = pos.index_select(0, flat).long()
    _last[0], _last[1] = key, (uniq, inverse)
    return uniq, inverse


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
            grad = torch.add(grad, rows, alpha=2.0 * ctx.l2 / ids.shape[0])
        flat_ids, grad = ids.reshape(-1), grad.reshape(-1, dim)
        if ctx.sparse:
            uniq, inverse = unique_rows(ids, ctx.num_rows)
            values = grad.new_zeros(uniq.numel(), dim).index_add_(0, inverse, grad)  # deterministic
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
        self._looked_up = None  # (ids, weight version, rows) of the last fast-path lookup

    # Under train.compile the lookup runs eagerly: its custom backward and Python-side caches
    # break dynamo's graph anyway, and tracing into it recompiled this frame for every table
    # and every member of a group until dynamo's recompile limit stopped compiling.
    @torch.compiler.disable
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.plain or not (torch.is_grad_enabled() and self.weight.requires_grad):
            return F.embedding(ids, self.weight, sparse=self.sparse_grad)  # also: eval, frozen
        if self.sparse_grad and self._hooked_weight != id(self.weight) and self.weight.requires_grad:
            self.weight.register_post_accumulate_grad_hook(self._keep_coalesced_flag)
            self._hooked_weight = id(self.weight)
        out = _Lookup.apply(self.weight, ids, self.l2, self)
        self._looked_up = (ids, self.weight._version, out.detach()) if self.l2 else None
        return out

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
        self._looked_up = None

    def penalty(self, ids: torch.Tensor) -> torch.Tensor:
        """``l2 * sum_{b,f} ||w[ids[b,f]]||^2 / B``: differentiable on the plain path only.

        On the fast path its gradient is already added by the lookup's backward, so the value
        is computed without autograd (adding it to the loss changes no gradient), from the rows
        the forward looked up for these very ids when the weight has not changed since.
        """
        if not self.l2:
            return self.weight.new_zeros(())
        if self.plain:
            rows = F.embedding(ids, self.weight, sparse=self.sparse_grad)
            return self.l2 * rows.pow(2).sum() / ids.shape[0]
        with torch.no_grad():
            seen = self._looked_up
            if seen is not None and seen[0] is ids and seen[1] == self.weight._version:
                flat = seen[2].reshape(-1)
            else:
                flat = F.embedding(ids, self.weight).reshape(-1)
            return self.l2 * torch.dot(flat, flat) / ids.shape[0]

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
