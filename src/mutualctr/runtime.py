"""Run-time options: how a job runs, not what it computes.

The protocol (model, optimizer, loop, the group's settings) lives in the typed configs
(:class:`mutualctr.training.config.RunConfig`, ``MutualConfig``) and decides the result. What is
here decides where and how fast it runs, what it shows and where it also logs: the device, the
precision of the forward, ``torch.compile``, the vectorised group, CPU threads, progress bars,
resuming, TensorBoard, the distributed timeout. One :class:`RuntimeOptions` is built by the CLI
(from its flags) or the API (from its keyword arguments) and handed down whole to the jobs and
the trainer: a new run-time option is one field here and one CLI flag.

``device``, ``precision`` and ``compile`` replace the run config's ``train.device``,
``train.precision`` and ``train.compile`` when given (None: the config's); the run records the
values it ran with in its config.yaml, so runs written before these options existed read as
before. ``threads`` (None: ``train.threads``, 0: torch's default) is not recorded: it changes
speed only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mutualctr.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class RuntimeOptions:
    """How a train / mutual / distill job runs (see the module docstring). Checked when built:
    a bad value raises :class:`ConfigError` naming the option."""

    device: str | None = None  # auto | cpu | cuda; None: the config's train.device
    precision: str | None = None  # fp32 | bf16 | auto; None: the config's train.precision
    compile: bool | str | None = None  # torch.compile the forward (true, false or "auto"); None: the config's train.compile
    vectorize: bool = False  # a group of one architecture as one vmapped forward
    threads: int | None = None  # torch intra-op threads; None: the config's train.threads; 0: torch's default
    quiet: bool = False  # no progress bars
    resume: bool = False  # continue the run or group in the output directory
    tensorboard: Path | None = None  # also write each evaluation as TensorBoard scalars here
    dist_timeout: float | None = None  # seconds a torchrun worker waits in a collective (None: 600)

    def __post_init__(self):
        if self.device is not None and self.device not in DEVICES:
            raise ConfigError(f"train.device: expected one of {_choices(DEVICES)}, got {self.device!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision: expected one of {_choices(PRECISIONS)}, got {self.precision!r}")
        for name in ("compile", "vectorize", "quiet", "resume"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "compile" and value in (None, "auto")):
                raise ConfigError(f"{name}: expected true/false{' or auto' if name == 'compile' else ''}, "
                                  f"got {value!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 0):
            raise ConfigError(f"threads must be an integer >= 0 (0: torch's default), got {self.threads!r}")
        t = self.dist_timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)
                              or t <= 0):
            raise ConfigError(f"dist_timeout must be a positive number of seconds, got {t!r}")
        if self.tensorboard is not None and not isinstance(self.tensorboard, Path):
            if not isinstance(self.tensorboard, str):
                raise ConfigError(f"tensorboard: expected a directory path, got {self.tensorboard!r}")
            object.__setattr__(self, "tensorboard", Path(self.tensorboard))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RuntimeOptions":
        """Options from a mapping; an unknown key is an error naming it."""
        return cls().with_values(**values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tensorboard"] = None if self.tensorboard is None else str(self.tensorboard)
        return d

    def with_values(self, **values: Any) -> "RuntimeOptions":
        """A copy with the given values (None = keep); an unknown name is an error naming it."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown run-time option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        given = {k: v for k, v in values.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    def config_overrides(self) -> dict[str, Any]:
        """The run config's ``train`` values these options replace (with_overrides' keywords)."""
        return {"device": self.device, "precision": self.precision, "compile": self.compile}


def _choices(values: tuple[str, ...]) -> str:
    return " | ".join(repr(v) for v in values)


def options_of(options: RuntimeOptions | None, **values: Any) -> RuntimeOptions:
    """``options`` (default: the defaults) with single values replaced (keyword arguments of the
    API and the jobs; None = keep)."""
    return (options if options is not None else RuntimeOptions()).with_values(**values)
