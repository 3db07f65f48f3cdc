"""Shared layers. Shapes: B batch, F fields, D embedding dim, P = F(F-1)/2 field pairs.

Every interaction layer takes the field embeddings ``(B, F, D)`` from
:class:`~mutualctr.models.embedding.FeatureEmbedding` and is vectorised over the field
pairs ``i < j`` (row-major order, as ``torch.triu_indices(F, F, 1)``), so a model is a
few lines of wiring. Dense weights use Xavier-normal init and zero biases (FuxiCTR's choice).
Public (``__all__``): a model of one's own built from them gets the built-ins' fast backward,
embedding L2 and row-wise optimizer (docs/models.md, "Writing a model").
"""

from __future__ import annotations

import torch
from torch import nn

from mutualctr.models.embedding import FeatureEmbedding, FeatureLinear

__all__ = [
    "FeatureEmbedding", "FeatureLinear", "MLP", "FactorizationMachine", "CrossNet",
    "CrossNetV2", "InnerProduct", "OuterProduct", "SENET", "Bilinear", "field_pairs", "autocast_input",
]


def field_pairs(num_fields: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index vectors ``(rows, cols)`` of the P pairs ``i < j``, row-major."""
    rows, cols = torch.triu_indices(num_fields, num_fields, 1)
    return rows, cols


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the autocast dtype (bf16) when autocast is on for its device, else ``x``.

    Autocast casts only the inputs of matrix products. A layer that gathers, multiplies and
    concatenates ``(B, P, D)`` pair tensors (FiBiNET's bilinear layers: 2 x 741 x 16 values a
    row on Criteo) would otherwise do that elementwise work in fp32 and cast its output again
    for the MLP, which costs more than bf16 saves. Casting its ``(B, F, D)`` input once makes
    the whole layer bf16; what it feeds would have been cast to bf16 anyway.
    """
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return x.to(torch.get_autocast_dtype(device))
    return x


def _xavier(*shape: int) -> nn.Parameter:
    """Xavier-normal over the last two dims (each matrix of a stack is one layer)."""
    std = (2.0 / (shape[-1] + shape[-2])) ** 0.5
    return nn.Parameter(torch.randn(*shape) * std)


class MLP(nn.Sequential):
    """``(B, in_dim)`` -> ``(B, hidden[-1])``, or ``(B,)`` when ``output_dim=1``.

    Per hidden layer: Linear, [BatchNorm1d], ReLU, [Dropout]; then an optional Linear to 1.
    """

    def __init__(self, in_dim: int, hidden, dropout=0.0, batch_norm=False, output_dim=None):
        layers: list[nn.Module] = []
        for h in hidden:
            layers.append(nn.Linear(in_dim, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_dim = h
        if output_dim is not None:
            layers.append(nn.Linear(in_dim, output_dim))
        super().__init__(*layers)
        self.out_dim = in_dim if output_dim is None else output_dim
        self.squeeze = output_dim == 1
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out.squeeze(-1) if self.squeeze else out


class _SavedInput(torch.autograd.Function):
    """Base of the one-tensor Functions with a hand-written backward that reads that tensor;
    vmap-able (``setup_context``) for the vectorised group path."""

    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @classmethod
    def call(cls, x: torch.Tensor) -> torch.Tensor:
        """The Function when a gradient is to be computed, else its forward's ops plainly
        (the same values; TorchScript's tracer cannot record a Python Function)."""
        return cls.apply(x) if x.requires_grad else cls.forward(x)


class _FMTerm(_SavedInput):
    """``0.5 * (||sum_f v_f||^2 - sum_f ||v_f||^2)`` per row, with a one-pass backward
    ``d/dv_f = g * (sum_f' v_f' - v_f)``: autograd's backward of the same formula makes ~5
    passes over the (B, F, D) embeddings (7-9 ms vs 3 ms at B=4000, F=39, D=16 on 2 cores)."""

    @staticmethod
    def forward(emb: torch.Tensor) -> torch.Tensor:
        square_of_sum = emb.sum(dim=1).square().sum(dim=1)
        sum_of_square = torch.linalg.vector_norm(emb.flatten(1), dim=1).square()
        return 0.5 * (square_of_sum - sum_of_square)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (emb,) = ctx.saved_tensors
        g = grad.view(-1, 1, 1)
        # g * s - g * v_f, written in one pass over (B, F, D): (B, 1, D) broadcasts over F
        return torch.addcmul(emb.sum(dim=1, keepdim=True) * g, emb, g, value=-1.0)


class FactorizationMachine(nn.Module):
    """Second-order FM term ``sum_{i<j} <v_i, v_j>``: ``(B, F, D)`` -> ``(B,)``.

    Uses ``((sum_i v_i)^2 - sum_i v_i^2) / 2``, O(F D) instead of O(F^2 D), with a fused
    backward (:class:`_FMTerm`).
    """

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return _FMTerm.call(emb)


class CrossNet(nn.Module):
    """DCN cross layers ``x_{l+1} = x_0 (x_l . w_l) + b_l + x_l``: ``(B, d)`` -> ``(B, d)``.

    ``x_l . w_l`` is a scalar per row, so each layer costs O(d) (2d parameters). Computed in
    closed form: by induction ``x_l = c_l x_0 + beta_l``, with a scalar ``c_l`` per row (B,)
    and ``beta_l = b_0 + ... + b_{l-1}`` (d,), so ``x_l . w_l = c_l (x_0 . w_l) + beta_l . w_l``
    and ``c_{l+1} = c_l + x_l . w_l``. One ``(B, d) x (d, L)`` product gives every
    ``x_0 . w_l``, the recursion runs on ``(B,)`` scalars, and one pass writes
    ``x_L = c_L x_0 + beta_L``: the same function as :meth:`formula` (which the tests check,
    values and gradients) with two passes over ``(B, d)`` forward instead of ~3 a layer, and
    autograd's backward stays as short. That DCN's cross output is a per-row multiple of ``x_0``
    plus a bias was noted by xDeepFM (Lian et al. 2018).
    """

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.weight = nn.ParameterList(_xavier(dim, 1) for _ in range(num_layers))
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        if not len(self.weight):
            return x0
        c, beta, _ = self._closed_form(x0)
        return torch.addcmul(beta, x0, c.unsqueeze(1))

    def project(self, x0: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``x_L . v`` per row ``(B,)`` for a vector ``v (d,)``, without forming ``x_L (B, d)``:
        ``c_L (x_0 . v) + beta_L . v``, with ``x_0 . v`` a column of the same product. What a
        Linear after the cross network computes (DCN's output layer)."""
        if not len(self.weight):
            return x0 @ v.to(x0.dtype)
        c, beta, xv = self._closed_form(x0, v)
        return c * xv + beta @ v.to(beta.dtype)

    def _closed_form(self, x0: torch.Tensor, v: torch.Tensor | None = None):
        """``c_L (B,)``, ``beta_L (d,)`` and, given ``v``, ``x_0 . v (B,)``."""
        cols = [*self.weight] if v is None else [*self.weight, v.unsqueeze(1)]
        w = torch.cat(cols, dim=1).to(x0.dtype)  # (d, L [+ 1])
        # The products have one output column per layer: bandwidth-bound, so bf16 would only
        # add a cast pass over (B, d). The (B,) scalars stay in x_0's dtype (fp32 under autocast).
        with torch.autocast(x0.device.type, enabled=False):
            p = x0 @ w  # (B, L [+ 1]): x_0 . w_l
            c, beta = torch.ones_like(p[:, 0]), torch.zeros_like(w[:, 0])
            for l, b in enumerate(self.bias):
                c = c + c * p[:, l] + beta @ w[:, l]  # c_{l+1} = c_l + x_l . w_l
                beta = beta + b.to(x0.dtype)
        return c, beta, (None if v is None else p[:, -1])

    def formula(self, x0: torch.Tensor) -> torch.Tensor:
        """The layers written out, one after the other: the reference the tests compare with."""
        x = x0
        for w, b in zip(self.weight, self.bias):
            x = x0 * (x @ w) + b + x
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 matrix cross ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``: ``(B, d)`` -> ``(B, d)``.

    Full rank ``W_l (d, d)``, or low rank ``W_l = U_l V_l^T`` with ``U_l, V_l (d, r)`` when
    ``low_rank=r`` (the paper's cheaper variant): ``d^2 + d`` or ``2dr + d`` per layer.
    """

    def __init__(self, dim: int, num_layers: int, low_rank: int | None = None):
        super().__init__()
        self.low_rank = low_rank
        shape = (dim, dim) if low_rank is None else (dim, low_rank)
        self.weight = nn.ParameterList(_xavier(*shape) for _ in range(num_layers))
        self.weight_v = nn.ParameterList(
            _xavier(*shape) for _ in range(num_layers if low_rank is not None else 0)
        )
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for i, (w, b) in enumerate(zip(self.weight, self.bias)):
            wx = x @ w.t() if self.low_rank is None else (x @ self.weight_v[i]) @ w.t()
            x = x0 * (wx + b) + x
        return x


class _PairDots(_SavedInput):
    """``<v_i, v_j>`` for the pairs ``i < j``: the upper triangle of the Gram matrix, row by row
    (the pairs of field ``i`` are the slice ``gram[:, i, i+1:]``). Backward: with ``U (B, F, F)``
    holding each pair's gradient at ``(i, j)`` and zeros elsewhere, ``d emb = U emb + U^T emb``,
    two matmuls. Autograd's backward of the former gather (index_select) from the Gram matrix
    scattered into a zeroed ``(B, F, F)`` and added two matmuls' outputs, and index_select is
    slow on bf16 CPU tensors; with the embeddings cast once, a bf16 PNN step is 1.55x faster
    (docs/performance.md, "DCN and PNN cut to their matrix products")."""

    @staticmethod
    def forward(emb: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(emb, emb.transpose(1, 2))  # (B, F, F), one BLAS call
        return torch.cat([gram[:, i, i + 1:] for i in range(gram.shape[1] - 1)], dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (emb,) = ctx.saved_tensors
        batch, fields = emb.shape[:2]
        upper, start = grad.new_zeros(batch, fields, fields), 0
        for i in range(fields - 1):
            end = start + fields - 1 - i
            upper[:, i, i + 1:] = grad[:, start:end]
            start = end
        upper = upper.to(emb.dtype)
        return torch.baddbmm(torch.bmm(upper, emb), upper.transpose(1, 2), emb)


class InnerProduct(nn.Module):
    """IPNN: ``<v_i, v_j>`` for all pairs: ``(B, F, D)`` -> ``(B, P)`` (:class:`_PairDots`)."""

    def __init__(self, num_fields: int):
        super().__init__()
        self.num_fields = num_fields

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return _PairDots.call(emb)


class _Pairs(nn.Module):
    """Base for pairwise layers: gathers ``(v_i, v_j)`` as two ``(B, P, D)`` tensors."""

    def __init__(self, num_fields: int):
        super().__init__()
        rows, cols = field_pairs(num_fields)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.num_pairs = rows.numel()

    def pairs(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return emb.index_select(1, self.rows), emb.index_select(1, self.cols)


class OuterProduct(_Pairs):
    """OPNN with a kernel matrix per pair: ``v_i^T K_ij v_j``: ``(B, F, D)`` -> ``(B, P)``.

    Kernel ``(P, D, D)``: the outer product ``v_i v_j^T`` contracted with ``K_ij``
    (pytorch-fm's / FuxiCTR's 'mat' kernel), without forming the ``(B, P, D, D)`` outer products.
    """

    def __init__(self, num_fields: int, dim: int):
        super().__init__(num_fields)
        self.kernel = _xavier(self.num_pairs, dim, dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        p, q = self.pairs(emb)
        pk = torch.einsum("bpd,pde->bpe", p, self.kernel)
        return (pk * q).sum(dim=-1)


class SENET(nn.Module):
    """Squeeze-excitation field re-weighting (FiBiNET): ``(B, F, D)`` -> ``(B, F, D)``.

    Squeeze: mean over D -> ``(B, F)``; excitation: ``F -> max(1, F // r) -> F`` with ReLUs,
    no biases; the ``F`` weights rescale each field's embedding.
    """

    def __init__(self, num_fields: int, reduction_ratio: int):
        super().__init__()
        reduced = max(1, num_fields // reduction_ratio)
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, reduced, bias=False), nn.ReLU(),
            nn.Linear(reduced, num_fields, bias=False), nn.ReLU(),
        )
        for m in self.excitation:
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return emb * self.excitation(emb.mean(dim=2)).unsqueeze(-1)


class Bilinear(nn.Module):
    """FiBiNET bilinear interaction ``(v_i W) * v_j`` for pairs: ``(B, F, D)`` -> ``(B, P, D)``.

    ``field_all``: one ``W (D, D)``; ``field_each``: ``W_i`` per field ``(F, D, D)``;
    ``field_interaction``: ``W_ij`` per pair ``(P, D, D)``. No bias (as FiBiNET).
    """

    def __init__(self, num_fields: int, dim: int, bilinear_type: str):
        super().__init__()
        self.num_pairs = num_fields * (num_fields - 1) // 2
        self.bilinear_type = bilinear_type
        count = {"field_all": 1, "field_each": num_fields, "field_interaction": self.num_pairs}
        self.weight = _xavier(count[bilinear_type], dim, dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.by_field(emb), dim=1)

    def by_field(self, emb: torch.Tensor) -> list[torch.Tensor]:
        """The pairs ``(i, j > i)`` of each field ``i`` in turn: ``F - 1`` tensors
        ``(B, F-1-i, D)``, in the row-major pair order.

        The pairs of field ``i`` are contiguous in that order and their ``v_j`` are the slice
        ``emb[:, i+1:]``, so nothing is gathered (no index_select forward, no scatter backward):
        ``v_i W`` is one matrix product per field (for ``field_interaction`` against the pairs'
        kernels side by side, ``(D, (F-1-i) * D)``) times that slice. Trained through
        :class:`_FieldPairs` (its backward); evaluation, export and vmap run the same ops
        plainly."""
        if emb.requires_grad and not torch._C._functorch.is_batchedtensor(emb):
            return list(_FieldPairs.apply(emb, self.weight, self.bilinear_type))
        return _field_pairs(emb, self.weight, self.bilinear_type)


def _field_kernels(weight: torch.Tensor, kind: str, num_fields: int) -> list[torch.Tensor]:
    """Per field ``i < F - 1`` its kernels side by side, ``(D, m_i * D)``: the pairs' ``W_ij``
    for ``field_interaction`` (``m_i = F-1-i``), else the one ``W_i`` / ``W`` (``m_i = 1``)."""
    d, out, start = weight.shape[-1], [], 0
    for i in range(num_fields - 1):
        k = num_fields - 1 - i
        if kind == "field_interaction":
            out.append(weight[start:start + k].transpose(0, 1).reshape(d, k * d))  # [W_i,i+1 | ...]
        else:
            out.append(weight[0 if kind == "field_all" else i])
        start += k
    return out


def _field_pairs(emb: torch.Tensor, weight: torch.Tensor, kind: str) -> list[torch.Tensor]:
    """The products of :meth:`Bilinear.by_field`: per field ``i``, ``v_i`` times its kernels
    (:func:`_field_kernels`), ``(B, m_i, D)``, times the slice ``emb[:, i+1:]``."""
    b, f, d = emb.shape
    return [(emb[:, i] @ m).view(b, -1, d) * emb[:, i + 1:] for i, m in enumerate(_field_kernels(weight, kind, f))]


class _FieldPairs(torch.autograd.Function):
    """:meth:`Bilinear.by_field` with a backward that adds every field's gradients into one
    ``(B, F, D)`` tensor. Autograd's backward of the per-field ``emb[:, i]`` and ``emb[:, i+1:]``
    fills a zeroed ``(B, F, D)`` for each of those 2(F-1) slices and adds it to the total: 152
    fills and adds a FiBiNET step, 100 of its 635 ms (docs/performance.md). Per field, with
    ``G_i (B, k, D)`` the gradient of its pairs and ``vw_i = v_i M_i`` recomputed:
    ``d emb[:, i+1:] += G_i * vw_i``, ``d vw_i = G_i * emb[:, i+1:]`` (summed over the pairs
    when one kernel serves them all), ``d v_i += d vw_i M_i^T``, ``d M_i = v_i^T d vw_i``."""

    @staticmethod
    def forward(ctx, emb: torch.Tensor, weight: torch.Tensor, kind: str):
        ctx.save_for_backward(emb, weight)
        ctx.kind = kind
        return tuple(_field_pairs(emb, weight, kind))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        emb, weight = ctx.saved_tensors
        b, f, d = emb.shape
        d_emb = torch.zeros_like(emb)
        d_kernels = []
        for i, (m, g) in enumerate(zip(_field_kernels(weight.to(emb.dtype), ctx.kind, f), grads)):
            g = g.to(emb.dtype)
            vw = (emb[:, i] @ m).view(b, -1, d)  # (B, m_i, D)
            d_emb[:, i + 1:].addcmul_(g, vw)
            d_vw = g * emb[:, i + 1:]
            if vw.shape[1] == 1:  # one kernel for all of field i's pairs
                d_vw = d_vw.sum(dim=1, keepdim=True)
            d_vw = d_vw.flatten(1)  # (B, m_i * D)
            d_emb[:, i] += d_vw @ m.t()
            d_kernels.append(emb[:, i].t() @ d_vw)  # (D, m_i * D)
        return d_emb, _kernel_grads(d_kernels, ctx.kind, weight), None


def _kernel_grads(d_kernels: list[torch.Tensor], kind: str, weight: torch.Tensor) -> torch.Tensor:
    """The gradient of ``weight`` from the per-field kernel gradients of :func:`_field_kernels`."""
    d = weight.shape[-1]
    if kind == "field_all":
        return torch.stack(d_kernels).sum(dim=0, keepdim=True).to(weight.dtype)
    if kind == "field_each":
        return torch.cat([torch.stack(d_kernels).to(weight.dtype), weight.new_zeros(1, d, d)])  # W_F-1: unused
    return torch.cat([m.view(d, -1, d).transpose(0, 1) for m in d_kernels]).to(weight.dtype)
