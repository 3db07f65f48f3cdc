"""Scoring a model on id matrices: batched logits, AUC/logloss of a split."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mutualctr.data.loader import read_inputs
from mutualctr.metrics import auc, logloss, sigmoid
from mutualctr.training.device import autocast


def eval_batch(batch_size: int, device: torch.device) -> int:
    """Rows per evaluation forward; ``0`` picks one for the device.

    On CPU small batches are fastest: the (B, F*D) activations of 2048 rows stay in the L2
    cache, and DeepFM/DCN/PNN score ~1.5-3x faster than at 32768 rows (measured, 2-core Xeon).
    On a GPU large batches amortise the launches.
    """
    if batch_size > 0:
        return batch_size
    return 2048 if torch.device(device).type == "cpu" else 65536


@torch.inference_mode()
def predict_logits(model: nn.Module, X: np.ndarray, batch_size: int, device: torch.device,
                   precision: str = "fp32") -> np.ndarray:
    """Logits for every row of a (rows, F) id matrix (or the SplitArrays of a store with list or
    dense fields: ``Store.split``), in order (``batch_size`` 0: auto)."""
    was_training = model.training
    model.eval()
    batch_size = eval_batch(batch_size, device)
    out = np.empty(len(X), dtype=np.float32)
    with autocast(precision, device):
        for start in range(0, len(X), batch_size):
            ids = read_inputs(X, slice(start, start + batch_size)).to(device)
            out[start:start + len(ids)] = model(ids).float().cpu().numpy()
    model.train(was_training)
    return out


def scores(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """{"auc", "logloss", "rows"} of logits against 0/1 labels."""
    return {"auc": auc(labels, logits), "logloss": logloss(labels, sigmoid(logits)), "rows": int(len(labels))}
