"""Scale-out on torchrun: data-parallel training and members spread over workers.

See docs/distributed.md. ``session`` gives the trainer its parallel context (identities in
one process); ``launch`` re-runs a command under torchrun for ``--nproc K``.
"""

from mutualctr.distributed.context import (
                                           DEFAULT_TIMEOUT_S,
                                           Grid,
                                           Local,
                                           env_world_size,
                                           is_main_process,
                                           session,
                                           shard_bounds,
)
from mutualctr.distributed.launch import launch, strip_option

__all__ = ["DEFAULT_TIMEOUT_S", "Grid", "Local", "env_world_size", "is_main_process", "session", "shard_bounds",
           "launch", "strip_option"]
