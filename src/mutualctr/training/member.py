"""One trainable model of a group, with what the trainer keeps for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mutualctr.errors import CheckpointError
from mutualctr.models import embedding_tables
from mutualctr.results import StartMetrics
from mutualctr.training.config import RunConfig, run_config_to_dict
from mutualctr.training.optim import Schedule, build_optimizers
from mutualctr.training.rundir import MemberState, RunDir


@dataclass
class Member:
    """A model with its own config and run directory; the trainer fills the rest.

    For synchronisation across data-parallel workers a member exposes its parameters in two
    kinds (:meth:`dense_parameters`, :meth:`table_parameters`): the network's, whose gradients
    are dense, and the embedding tables', whose gradients touch only a batch's rows.
    """

    config: RunConfig
    model: nn.Module
    run_dir: Path
    init_from: str | None = None  # the run it started from (finetuning)
    start: StartMetrics | None = None  # dev/test metrics before training (finetuning)
    optimizers: list = field(default_factory=list)
    schedule: Schedule | None = None
    best: dict[str, Any] | None = None  # step, epoch and dev metrics of the best evaluation
    best_state: dict[str, torch.Tensor] | None = None  # its weights, on the CPU
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per evaluation
    test_logits: np.ndarray | None = None  # of the best weights, filled when training ends
    seed: int | None = None  # the seed it was built with, where not its config's (a finetuned member: its run's)

    @property
    def name(self) -> str:
        return self.config.model_name

    @property
    def files(self) -> RunDir:
        return RunDir(self.run_dir)

    def prepare(self, device: torch.device, steps_per_epoch: int) -> None:
        """Move the model to ``device`` and build its optimizers and learning-rate schedule."""
        self.model.to(device)
        self.optimizers = build_optimizers(self.model, self.config.optim)
        self.schedule = Schedule(self.config.optim, self.optimizers, steps_per_epoch)

    def table_parameters(self) -> list[nn.Parameter]:
        return [t.weight for t in embedding_tables(self.model)]

    def freeze_tables(self) -> None:
        """Finetune only the network: the embedding tables get no gradient and stay as they are."""
        for p in self.table_parameters():
            p.requires_grad_(False)

    def dense_parameters(self) -> list[nn.Parameter]:
        tables = {id(p) for p in self.table_parameters()}
        return [p for p in self.model.parameters() if id(p) not in tables and p.requires_grad]

    def keep_best(self, record: dict[str, Any]) -> None:
        self.best = record
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def state(self) -> MemberState:
        return MemberState(model=self.model.state_dict(), optimizers=[o.state_dict() for o in self.optimizers],
                           schedule=self.schedule.state_dict(), best=self.best, best_state=self.best_state,
                           history=self.history, config=run_config_to_dict(self.config))

    def restore(self, s: MemberState, where: Path) -> None:
        if s.config["model"] != run_config_to_dict(self.config)["model"]:
            raise CheckpointError(f"{where}: member {self.name} was saved with another model config")
        self.model.load_state_dict(s.model)
        for opt, state in zip(self.optimizers, s.optimizers):
            opt.load_state_dict(state)
        self.schedule.load_state_dict(s.schedule)
        self.best, self.best_state, self.history = s.best, s.best_state, s.history
