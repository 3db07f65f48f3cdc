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

The gradient layout is fixed when the table is built (``sparse_grad``, as ``nn.Embedding``'s
``sparse``): ``False`` gives a dense ``(num_features, D)`` gradient (drop-in for torch
optimizers); ``True`` gives a coalesced ``torch.sparse_coo_tensor`` with one row per unique id,
for a row-wise optimizer. The unique rows and each occurrence's position among them come from
a :class:`RowCache`: a "mark" pass over a persistent ``(num_features,)`` flag/position buffer
(O(B*F) scatter + one O(num_features) scan), several times cheaper than ``torch.unique``'s sort
for tables up to tens of millions of rows. Each table has its own cache; a trainer hands one
cache to every table it trains (:func:`use_row_cache`), so the rows are computed once per batch
for all the tables (embedding, first-order; every member of a group) looked up with the same
ids. The penalty's *value* (for the reported loss) is taken from the rows the forward already
looked up.

Reference path (``plain=True``): ``F.embedding`` plus an explicit differentiable penalty in
:meth:`FeatureEmbedding.penalty`. The fast function also supports ``torch.func.vmap`` in
dense mode (``setup_context`` + ``generate_vmap_rule=True``); sparse mode does not vmap.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mutualctr.models.fields import FieldLayout, lookup_ids

MARK_MAX_ROWS = 1 << 28  # larger tables always sort: the mark buffers would cost 5 bytes a row


class RowCache:
    """The distinct rows of a batch of ids, remembered for the very ids tensor last asked about.

    ``unique(ids, num_rows) -> (uniq, inverse)``: the sorted distinct ids and, for each id of
    ``ids.reshape(-1)``, its position in ``uniq`` (as ``torch.unique(..., return_inverse=True)``
    on the flattened ids). ``method``: ``"mark"`` (default; flag and position buffers of
    ``num_rows`` entries, kept zeroed between calls) or ``"sort"`` (``torch.unique``, the
    reference). The last answer is reused while the same ids tensor (same storage, version,
    shape) and ``num_rows`` are asked about again; :meth:`clear` forgets it.
    """

    def __init__(self, method: Literal["mark", "sort"] = "mark"):
        if method not in ("mark", "sort"):
            raise ValueError(f"RowCache method must be 'mark' or 'sort', got {method!r}")
        self.method = method
        self._marks: tuple | None = None  # (device, num_rows, bool flags, int32 positions)
        self._last: tuple | None = None  # (key holding the ids tensor alive, (uniq, inverse))

    def clear(self) -> None:
        self._last = None

    def unique(self, ids: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (ids, ids.data_ptr(), ids.storage_offset(), tuple(ids.shape), ids.stride(), ids._version,
               ids.device, num_rows)
        if self._last is not None and self._last[0][0] is ids and self._last[0][1:] == key[1:]:
            return self._last[1]
        flat = ids.reshape(-1)
        if self.method == "sort" or num_rows > MARK_MAX_ROWS or flat.numel() >= 2**31:
            out = torch.unique(flat, return_inverse=True)
        else:
            out = self._mark_unique(flat, num_rows)
        self._last = (key, out)
        return out

    def _mark_unique(self, flat: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._marks is None or self._marks[:2] != (flat.device, num_rows):
            self._marks = (flat.device, num_rows, torch.zeros(num_rows, dtype=torch.bool, device=flat.device),
                           torch.empty(num_rows, dtype=torch.int32, device=flat.device))
        mark, pos = self._marks[2:]
        if mark.device.type == "cpu":
            # index_fill_'s threads write the same cache lines for every repeated id (and CTR
            # ids repeat): 1.6-1.7 ms for a 4000 x 39 batch vs 0.12 ms for numpy's serial store
            mark.numpy()[flat.numpy()] = True
        else:
            mark.index_fill_(0, flat, True)
        uniq = mark.nonzero().squeeze(1)  # sorted
        mark.index_fill_(0, uniq, False)  # leave the buffer zeroed
        pos.index_copy_(0, uniq, torch.arange(uniq.numel(), dtype=torch.int32, device=flat.device))
        return uniq, pos.index_select(0, flat).long()


def unique_rows(ids: torch.Tensor, num_rows: int, method: Literal["mark", "sort"] = "mark"):
    """``(uniq, inverse)`` of ``ids`` by ``method``, with nothing remembered (see :class:`RowCache`)."""
    return RowCache(method).unique(ids, num_rows)


class _Lookup(torch.autograd.Function):
    """``weight[ids]`` whose backward scatter-adds grads and the batch-local L2 gradient."""

    generate_vmap_rule = True

    @staticmethod
    def forward(weight: torch.Tensor, ids: torch.Tensor, l2: float, rows: RowCache | None) -> torch.Tensor:
        return F.embedding(ids, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, ids, l2, rows = inputs
        ctx.num_rows, ctx.l2, ctx.rows = weight.shape[0], l2, rows  # rows: None = dense gradient
        ctx.save_for_backward(ids, output if l2 else None)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ids, looked_up = ctx.saved_tensors
        dim = grad.shape[-1]
        if ctx.l2:  # d/dw of l2 * sum ||w[ids]||^2 / B, per occurrence
            grad = torch.add(grad, looked_up, alpha=2.0 * ctx.l2 / ids.shape[0])
        flat_ids, grad = ids.reshape(-1), grad.reshape(-1, dim)
        if ctx.rows is not None:
            uniq, inverse = ctx.rows.unique(ids, ctx.num_rows)
            values = grad.new_zeros(uniq.numel(), dim).index_add_(0, inverse, grad)  # deterministic
            out = torch.sparse_coo_tensor(
                uniq.unsqueeze(0), values, (ctx.num_rows, dim),
                is_coalesced=True, check_invariants=False,
            )
        elif torch._C._functorch.is_batchedtensor(grad):  # under vmap: out-of-place
            out = torch.zeros(ctx.num_rows, dim, dtype=grad.dtype, device=grad.device)
            out = out.index_add(0, flat_ids, grad)
        else:
            out = grad.new_zeros(ctx.num_rows, dim).index_add_(0, flat_ids, grad)
        return out, None, None, None


def _restore_coalesced_flag(weight: torch.Tensor) -> None:
    """Post-accumulate hook: re-flag a row gradient that is coalesced but lost the flag.

    When ``.grad`` was empty, autograd's AccumulateGrad stores a shallow copy of the lookup's
    coalesced gradient without the flag, and the row-wise optimizer would sort it again.
    Coalesced means strictly increasing row indices, which one cheap comparison checks; a sum
    of several backward passes (indices concatenated) fails it and is left as it is.
    """
    grad = weight.grad
    if grad is not None and grad.is_sparse and not grad.is_coalesced() and grad.sparse_dim() == 1:
        rows = grad._indices()[0]
        if rows.numel() < 2 or bool((rows[1:] > rows[:-1]).all()):
            grad._coalesced_(True)


class FeatureEmbedding(nn.Module):
    """Single table ``weight (num_features, dim)``: ids ``(B, F)`` -> embeddings ``(B, F, dim)``.

    ``l2`` is the coefficient of the batch-local penalty (see module docstring).
    ``sparse_grad`` (fixed at construction) selects the coalesced row-sparse gradient that the
    row-wise optimizer reads. ``plain`` selects the reference lookup (``F.embedding``) and may be
    switched at any time. ``row_cache`` is the :class:`RowCache` the sparse backward asks for
    the batch's distinct rows (see :func:`use_row_cache`).
    """

    def __init__(self, num_features: int, dim: int, init_std: float = 1e-4, l2: float = 0.0,
                 sparse_grad: bool = False):
        super().__init__()
        self.num_features, self.dim, self.l2 = num_features, dim, float(l2)
        self.weight = nn.Parameter(torch.empty(num_features, dim))
        nn.init.normal_(self.weight, 0.0, init_std)
        self._sparse_grad = bool(sparse_grad)
        self.plain = False
        self.row_cache = RowCache()
        self._hooked_weight = None  # id() of the weight that carries the coalesced-flag hook
        self._looked_up = None  # (ids, weight version, rows) of the last fast-path lookup
        self.layout: FieldLayout | None = None  # set by set_layout for a store with list/dense fields

    @property
    def sparse_grad(self) -> bool:
        return self._sparse_grad

    def forward(self, x) -> torch.Tensor:
        """ids ``(B, F)`` -> ``(B, F, dim)`` (:meth:`lookup`), or a batch with list or dense
        fields -> its field embeddings ``(B, F, dim)`` (:meth:`fields`)."""
        if isinstance(x, torch.Tensor):
            return self.lookup(x)
        return self.fields(x)

    # Under train.compile the lookup runs eagerly: its custom backward and Python-side caches
    # break dynamo's graph anyway, and tracing into it recompiled this frame for every table
    # and every member of a group until dynamo's recompile limit stopped compiling.
    @torch.compiler.disable
    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """The rows of ``ids`` (any shape) -> ``ids.shape + (dim,)``, by the fast or plain path."""
        if self.plain or not (torch.is_grad_enabled() and self.weight.requires_grad):
            return F.embedding(ids, self.weight, sparse=self._sparse_grad)  # also: eval, frozen
        if self._sparse_grad and self._hooked_weight != id(self.weight):
            self.weight.register_post_accumulate_grad_hook(_restore_coalesced_flag)
            self._hooked_weight = id(self.weight)
        out = _Lookup.apply(self.weight, ids, self.l2, self.row_cache if self._sparse_grad else None)
        self._looked_up = (ids, self.weight._version, out.detach()) if self.l2 else None
        return out

    def set_layout(self, layout: FieldLayout | None) -> None:
        """Read batches of ``layout`` (None: ids tensors only). With list fields row 0 is the pad:
        it is zeroed here and, masked out of every pooling, never gets a gradient."""
        self.layout = layout
        if layout is not None:
            self.register_buffer("field_order", layout.order(), persistent=False)
            if layout.bags:
                with torch.no_grad():
                    self.weight[0].zero_()

    def fields(self, batch) -> torch.Tensor:
        """A batch's field embeddings ``(B, F, dim)`` in field order (:attr:`layout`): a one-id
        field its row; a list field the ``mean`` (or ``sum``, ``spec.pooling``) of its items'
        rows, the pad masked out; a dense field its value row times its value, or its missing
        row when the value is missing. One lookup (:func:`lookup_ids`) for all of them."""
        lay = self.layout
        if lay is None:
            raise ValueError("this table reads ids tensors only: its model was built without the "
                             "store's field layout (build_model(..., layout=...))")
        rows = self.lookup(lookup_ids(batch, lay))  # (B, T, dim)
        n = batch.ids.shape[1]
        parts = [rows[:, :n]]
        for name, pool in zip(lay.bags, [p for p in lay.pooling if p is not None]):
            bag = batch.bags[name]
            items = rows[:, n:n + bag.shape[1]] * (bag != 0).unsqueeze(-1).to(rows.dtype)
            pooled = items.sum(dim=1)
            if pool == "mean":
                pooled = pooled / batch.lengths[name].clamp(min=1).unsqueeze(-1).to(rows.dtype)
            parts.append(pooled.unsqueeze(1))
            n += bag.shape[1]
        if lay.dense_rows:
            scale = torch.where(batch.missing, torch.ones_like(batch.values), batch.values)
            parts.append(rows[:, n:] * scale.unsqueeze(-1).to(rows.dtype))
        return torch.cat(parts, dim=1).index_select(1, self.field_order)

    def sequence(self, batch, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The un-pooled items of list field ``name``: rows ``(B, L, dim)`` (zero on the pad,
        oldest first, most recent at ``length - 1``) and the mask ``(B, L)`` (True on an item).
        A lookup of its own (same fast backward and batch-local L2 gradient as :meth:`lookup`),
        for models that attend over a behaviour sequence (e.g. DIN)."""
        bag = batch.bags[name]
        mask = bag != 0
        return self.lookup(bag) * mask.unsqueeze(-1).to(self.weight.dtype), mask

    def penalty(self, ids) -> torch.Tensor:
        """``l2 * sum_{b,f} ||w[ids[b,f]]||^2 / B``: differentiable on the plain path only.

        On the fast path its gradient is already added by the lookup's backward, so the value
        is computed without autograd (adding it to the loss changes no gradient), from the rows
        the forward looked up for these very ids when the weight has not changed since. For a
        batch with list or dense fields ``ids`` are every id it looks up (:func:`lookup_ids`;
        the pad row is zero and adds nothing).
        """
        if not isinstance(ids, torch.Tensor):
            ids = lookup_ids(ids, self.layout)
        if not self.l2:
            return self.weight.new_zeros(())
        if self.plain:
            rows = F.embedding(ids, self.weight, sparse=self._sparse_grad)
            return self.l2 * rows.pow(2).sum() / ids.shape[0]
        with torch.no_grad():
            seen, self._looked_up = self._looked_up, None
            if seen is not None and seen[0] is ids and seen[1] == self.weight._version:
                flat = seen[2].reshape(-1)
            else:
                flat = F.embedding(ids, self.weight).reshape(-1)
            return self.l2 * torch.dot(flat, flat) / ids.shape[0]

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, {self.dim}, l2={self.l2}, "
            f"sparse_grad={self._sparse_grad}, plain={self.plain}"
        )


class FeatureLinear(FeatureEmbedding):
    """First-order term: a ``(num_features, 1)`` table plus a bias; ids ``(B, F)`` -> ``(B,)``.

    Shares the fast lookup and the batch-local L2 of :class:`FeatureEmbedding`.
    """

    def __init__(self, num_features: int, init_std: float = 1e-4, l2: float = 0.0, sparse_grad: bool = False):
        super().__init__(num_features, 1, init_std, l2, sparse_grad)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).sum(dim=(1, 2)) + self.bias
