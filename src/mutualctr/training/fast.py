"""Step-level speed options that live outside the trainer: bf16 autocast and thread count.

The trainer's step (``Trainer._step``) runs ``group_losses`` (every member's forward and loss)
and one backward. On CPUs with AMX/AVX512-BF16 the MLP's matrix products are ~2x faster in
bfloat16; :func:`autocast` runs the forward (and so the matching backward) under
``torch.autocast(device, dtype=torch.bfloat16)``: linear layers compute in bf16, the
embedding lookup, the losses and every parameter and optimizer state stay float32.

Hook for the trainer (one line in ``Trainer._step``)::

    with fast.autocast(self.train_cfg.bf16, self.device):
        losses = self.group_losses(ids, labels)

:func:`apply_fast` does the same to an existing trainer instance without editing the trainer
(the benchmark suite uses it), and :func:`set_threads` is ``torch.set_num_threads`` with a
check. Evaluation under the same autocast: :func:`predict_logits_bf16`.
"""

from __future__ import annotations

import contextlib
import types

import numpy as np
import torch


def autocast(enabled: bool, device: torch.device | str = "cpu"):
    """A context: bf16 autocast on ``device`` when ``enabled``, else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    dev = torch.device(device).type
    return torch.autocast(dev, dtype=torch.bfloat16)


def set_threads(n: int) -> int:
    """``torch.set_num_threads(n)`` for ``n > 0``; returns the number in force."""
    if n < 0:
        raise ValueError(f"threads must be >= 0, got {n}")
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def apply_fast(trainer, bf16: bool = False, threads: int = 0) -> None:
    """Make ``trainer``'s step run its forward under bf16 autocast (and set the thread count).

    Patches the instance's ``group_losses`` only; ``bf16=False`` restores the class method.
    """
    set_threads(threads)
    cls_method = type(trainer).group_losses
    if not bf16:
        trainer.group_losses = types.MethodType(cls_method, trainer)
        return

    def group_losses(self, ids, labels):
        with autocast(True, self.device):
            losses = cls_method(self, ids, labels)
        return [l.float() for l in losses]

    trainer.group_losses = types.MethodType(group_losses, trainer)


@torch.inference_mode()
def predict_logits_bf16(model, X, batch_size: int, device) -> np.ndarray:
    """As :func:`mutualctr.training.trainer.predict_logits`, the forward under bf16 autocast."""
    was_training = model.training
    model.eval()
    out = np.empty(len(X), dtype=np.float32)
    with autocast(True, device):
        for start in range(0, len(X), batch_size):
            ids = torch.from_numpy(np.asarray(X[start:start + batch_size], dtype=np.int64)).to(device)
            out[start:start + len(ids)] = model(ids).float().cpu().numpy()
    model.train(was_training)
    return out
