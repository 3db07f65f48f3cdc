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


class _FMTerm(torch.autograd.Function):
    """``0.5 * (||sum_f v_f||^2 - sum_f ||v_f||^2)`` per row, with a one-pass backward
    ``d/dv_f = g * (sum_f' v_f' - v_f)``: autograd's backward of the same formula makes ~5
    passes over the (B, F, D) embeddings (7-9 ms vs 3 ms at B=4000, F=39, D=16 on 2 cores).
    vmap-able (``setup_context``) for the vectorised group path."""

    generate_vmap_rule = True

    @staticmethod
    def forward(emb: torch.Tensor) -> torch.Tensor:
        square_of_sum = emb.sum(dim=1).square().sum(dim=1)
        sum_of_square = torch.linalg.vector_norm(emb.flatten(1), dim=1).square()
        return 0.5 * (square_of_sum - sum_of_square)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

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
        return _FMTerm.apply(emb)


class _Cross(torch.autograd.Function):
    """The cross layers with a hand-written backward: per layer, with ``G = dL/dx_{l+1}`` and
    ``t = rowsum(G * x_0)`` (B,): ``dx_l = G + t w_l^T``, ``dx_0 += G * s_l``, ``dw_l = x_l^T t``,
    ``db_l = colsum(G)``; a few fused passes over (B, d) where autograd runs ~3x as many
    elementwise kernels plus an outer-product matmul. Not vmap-able: :class:`CrossNet` uses
    the plain formula under vmap."""

    @staticmethod
    def forward(ctx, x0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        n = len(params) // 2
        xs, ss, x = [], [], x0
        for w, b in zip(params[:n], params[n:]):
            s = x @ w  # (B, 1)
            xs.append(x)
            ss.append(s)
            x = torch.addcmul(x + b, x0, s)
        ctx.n = n
        ctx.save_for_backward(x0, *params[:n], *xs, *ss)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n = ctx.n
        saved = ctx.saved_tensors
        x0, ws, xs, ss = saved[0], saved[1:1 + n], saved[1 + n:1 + 2 * n], saved[1 + 2 * n:]
        dx0 = torch.zeros_like(x0)
        dws, dbs = [None] * n, [None] * n
        g = grad
        for l in reversed(range(n)):
            t = torch.linalg.vecdot(g, x0).unsqueeze(1)  # (B, 1)
            dx0.addcmul_(g, ss[l])
            dws[l] = xs[l].t() @ t  # (d, 1)
            dbs[l] = g.sum(dim=0)
            g = torch.addcmul(g, t, ws[l].t())  # dL/dx_l: the residual plus the scalar's path
        return (dx0 + g, *dws, *dbs)  # x_0 is also layer 0's input


class CrossNet(nn.Module):
    """DCN cross layers ``x_{l+1} = x_0 (x_l . w_l) + b_l + x_l``: ``(B, d)`` -> ``(B, d)``.

    ``x_l . w_l`` is a scalar per row, so each layer costs O(d) (2d parameters). Trained with
    the fused backward of :class:`_Cross`.
    """

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.weight = nn.ParameterList(_xavier(dim, 1) for _ in range(num_layers))
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        if len(self.weight) and torch.is_grad_enabled() and not torch._C._functorch.is_batchedtensor(x0):
            return _Cross.apply(x0, *self.weight, *self.bias)
        return self.formula(x0)

    def formula(self, x0: torch.Tensor) -> torch.Tensor:
        """The layers written out (autograd's backward): evaluation and under vmap."""
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


class InnerProduct(nn.Module):
    """IPNN: ``<v_i, v_j>`` for all pairs: ``(B, F, D)`` -> ``(B, P)``."""

    def __init__(self, num_fields: int):
        super().__init__()
        rows, cols = field_pairs(num_fields)
        self.register_buffer("flat", rows * num_fields + cols, persistent=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(emb, emb.transpose(1, 2))  # (B, F, F), one BLAS call
        return gram.flatten(1).index_select(1, self.flat)


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
        kernels side by side, ``(D, (F-1-i) * D)``) times that slice."""
        b, f, d = emb.shape
        out, start = [], 0
        for i in range(f - 1):
            k = f - 1 - i
            if self.bilinear_type == "field_interaction":
                kernels = self.weight[start:start + k].transpose(0, 1).reshape(d, k * d)  # [W_i,i+1 | ...]
                vw = (emb[:, i] @ kernels).view(b, k, d)
            else:
                vw = (emb[:, i] @ self.weight[0 if self.bilinear_type == "field_all" else i]).unsqueeze(1)
            out.append(vw * emb[:, i + 1:])
            start += k
        return out
