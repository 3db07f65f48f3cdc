"""Losses: label BCE and the peer (mutual / distillation) term of SPEC.md equation (3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE of (B,) logits against (B,) 0/1 labels (SPEC.md eq. 2)."""
    return F.binary_cross_entropy_with_logits(logits, labels)


def peer_term(kind: str, logits: torch.Tensor, peer_logits: list[torch.Tensor]) -> torch.Tensor:
    """Mean over peers of the distance from this member's prediction to each peer's.

    Peers must already be detached (stop-gradient): a member learns from them, never pushes
    them. ``mse_prob`` is the paper's MSE(p_i, p_j); ``mse_logit`` compares logits; ``kl`` is
    the binary KL(p_j || p_i), i.e. BCE against the peer's soft label minus its entropy.
    """
    if not peer_logits:
        return logits.new_zeros(())
    total = logits.new_zeros(())
    if kind == "mse_prob":
        p = torch.sigmoid(logits)
        for q in peer_logits:
            total = total + F.mse_loss(p, torch.sigmoid(q))
    elif kind == "mse_logit":
        for q in peer_logits:
            total = total + F.mse_loss(logits, q)
    elif kind == "kl":
        for q in peer_logits:
            pq = torch.sigmoid(q)
            ce = F.binary_cross_entropy_with_logits(logits, pq)
            ent = F.binary_cross_entropy_with_logits(q, pq)
            total = total + (ce - ent)
    else:
        raise ValueError(f"unknown mutual loss {kind!r} (mse_prob, mse_logit, kl)")
    return total / len(peer_logits)
