"""Training curves as TensorBoard event files (``--tensorboard DIR``, optional).

metrics.jsonl stays the record; this writes the same evaluations (each member's training loss,
dev AUC and logloss, learning rate) as scalars tagged ``<member>/<metric>`` against the global
step, so a group's members can be compared in TensorBoard. It needs the ``tensorboard`` package
(``pip install 'mutualctr[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mutualctr.errors import TrainingError

SCALARS = ("train_loss", "dev_auc", "dev_logloss", "lr")


class TensorBoardLog:
    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter  # lazy: optional dependency
        except ImportError as e:
            raise TrainingError(f"--tensorboard needs the tensorboard package ({e}); "
                                "pip install 'mutualctr[tensorboard]'") from None
        self.dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def evaluation(self, member: str, record: dict[str, Any]) -> None:
        for key in SCALARS:
            value = record.get(key)
            if value is not None:
                self.writer.add_scalar(f"{member}/{key}", value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
