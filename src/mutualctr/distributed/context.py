"""How one process takes part in a (members x data) grid of workers.

The trainer talks to a *parallel context* through a handful of hooks whose single-process
defaults (:class:`Local`) are identities, so one code path serves every mode:

- ``member_ids``: the global indices of the group members this process holds;
- ``shard(rows)``: the contiguous part ``[lo, hi)`` of a global batch (or of an evaluation
  split) this process reads;
- ``exchange(logits)``: this process's members' logits -> all N members' logits, the remote
  ones detached (one ``all_gather`` of N x B floats; never the autograd-aware one);
- ``sync(members, losses, weight)``: between backward and the optimizer step, sums the
  gradients of the data-parallel replicas of a member (each scaled by its share of the global
  batch) and returns the global losses; a member exposes ``dense_parameters()`` and
  ``table_parameters()`` (:class:`~mutualctr.training.member.Member`);
- ``gather_rows(values, rows)``: the per-shard predictions of a split, in row order;
- ``is_writer`` (this process writes its members' run files) and ``is_main`` (global rank 0:
  group files, progress bar).

:class:`Grid` is the torch.distributed implementation. World size ``W`` and ``N`` members:

- ``W % N == 0``: ``K = W // N`` workers per member; rank ``r`` holds member ``r // K`` and is
  data rank ``r % K`` of it (``N = 1``: data-parallel training; ``K = 1``: one member per
  worker; otherwise the combined model x data grid).
- ``N % W == 0`` (``W < N``): each worker holds ``N // W`` consecutive members, no data
  parallelism.

Gradient synchronisation without DDP: dense parameters are all-reduced in one flattened
bucket (with a has-gradient mask and the losses appended); embedding tables send only the rows
the shard touched (indices and values, one ``all_gather`` padded to the largest count) and
sum them. The per-replica weight ``B_local / B_global`` is applied to the *gradients*, not to
the loss: the embedding's fused backward adds its batch-local L2 gradient ``2 l2 w / B_local``
itself, unaffected by any scaling of the loss, and only gradient scaling gives it (and the
net L2, counted once) the single-process value.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from mutualctr.errors import TrainingError

DEFAULT_TIMEOUT_S = 600.0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """True outside torchrun and on global rank 0 inside it."""
    return os.environ.get("RANK", "0") == "0"


def shard_bounds(rows: int, part: int, parts: int) -> tuple[int, int]:
    """The contiguous slice ``[rows*part//parts, rows*(part+1)//parts)``."""
    return rows * part // parts, rows * (part + 1) // parts


class Local:
    """One process holds every member: every hook is the identity."""

    distributed = False
    world = 1
    rank = 0
    data_rank = 0
    data_size = 1
    is_main = True
    is_writer = True
    sharded_members = False  # True when the group's members live in several processes

    def __init__(self, num_members: int = 1):
        self.num_members = num_members
        self.member_ids = list(range(num_members))
        self.step = 0  # the trainer keeps this current, for error messages

    def shard(self, rows: int) -> tuple[int, int]:
        return 0, rows

    def exchange(self, logits: list[torch.Tensor]) -> list[torch.Tensor]:
        return logits

    def sync(self, members, losses: torch.Tensor, weight: float) -> torch.Tensor:
        return losses

    def gather_rows(self, values: np.ndarray, rows: int) -> np.ndarray:
        return values

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def member_results(self, results: list[Any]) -> list[Any]:
        return results

    def barrier(self, what: str = "") -> None:
        return None



class Grid(Local):
    """This process's place in a torch.distributed (members x data) grid."""

    distributed = True

    def __init__(self, num_members: int, device: torch.device):
        if not dist.is_initialized():
            raise RuntimeError("Grid needs an initialised torch.distributed process group")
        self.dist = dist
        self.world = dist.get_world_size()
        self.rank = dist.get_rank()
        self.num_members = n = num_members
        self.step = 0
        self.backend = dist.get_backend()
        self.comm_device = device if self.backend == "nccl" else torch.device("cpu")
        self.timeout_s = float(os.environ.get("MUTUALCTR_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        w = self.world
        if w % n == 0:
            k = w // n
            self.data_size, self.data_rank = k, self.rank % k
            me = self.rank // k
            self.member_ids = [me]
            member_groups = [list(range(m * k, (m + 1) * k)) for m in range(n)]
            exchange_groups = [[m * k + d for m in range(n)] for d in range(k)]
        elif n % w == 0:
            per = n // w
            self.data_size, self.data_rank = 1, 0
            self.member_ids = list(range(self.rank * per, (self.rank + 1) * per))
            member_groups = [[r] for r in range(w)]
            exchange_groups = [list(range(w))]
        else:
            raise TrainingError(f"{w} workers cannot hold {n} members: the number of workers must be a "
                                f"multiple of the number of members (or divide it)")
        self.sharded_members = len(self.member_ids) < n
        self.is_main = self.rank == 0
        self.is_writer = self.data_rank == 0
        # every rank creates every subgroup, in the same order (a torch.distributed rule)
        self.data_group = self._group(member_groups, self.rank)
        self.exchange_group = self._group(exchange_groups, self.rank)
        self.exchange_size = len(next(g for g in exchange_groups if self.rank in g))

    def _group(self, groups: list[list[int]], rank: int):
        if len(groups) == 1 and len(groups[0]) == self.world:
            return None  # the default (world) group
        mine = None
        for ranks in groups:
            g = self.dist.new_group(ranks) if len(ranks) > 1 else None
            if rank in ranks:
                mine = g
        return mine

    def close(self) -> None:
        """Release this grid's subgroups (their gloo/NCCL threads and sockets) now, while the
        interpreter is alive, instead of whenever the garbage collector or the interpreter's
        teardown gets to them; a process that runs several jobs would otherwise keep every
        job's subgroups. Call on every rank once all of them are done with the grid."""
        groups = {id(g): g for g in (self.data_group, self.exchange_group) if g is not None}
        self.data_group = self.exchange_group = None
        for g in groups.values():
            self.dist.destroy_process_group(g)

    # ---- error handling -------------------------------------------------------------------
    @contextmanager
    def _guard(self, op: str) -> Iterator[None]:
        try:
            yield
        except TrainingError:
            raise
        except (RuntimeError, ValueError, OSError) as e:  # DistBackendError is a RuntimeError
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TrainingError(
                f"rank {self.rank}/{self.world}: lost contact with the other workers during {op} at step "
                f"{self.step} (a worker died, or did not answer within {self.timeout_s:.0f} s): {first[:300]}; "
                f"stopped. Rerun the same command with --resume to continue from the last group checkpoint"
            ) from e

    # ---- hooks ------------------------------------------------------------------------------
    def shard(self, rows: int) -> tuple[int, int]:
        return shard_bounds(rows, self.data_rank, self.data_size)

    def _all_gather_flat(self, t: torch.Tensor, group, size: int) -> torch.Tensor:
        out = torch.empty(size * t.numel(), dtype=t.dtype, device=t.device)
        gather = getattr(self.dist, "all_gather_single", None) or self.dist.all_gather_into_tensor
        gather(out, t.contiguous(), group=group)
        return out

    def exchange(self, logits: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.exchange_size == 1:
            return logits
        dev = logits[0].device
        local = torch.stack([z.detach() for z in logits]).to(self.comm_device)  # (n_local, B)
        with self._guard("the prediction exchange"):
            flat = self._all_gather_flat(local.reshape(-1), self.exchange_group, self.exchange_size)
        every = list(flat.to(dev).view(self.num_members, -1).unbind(0))
        for i, gi in enumerate(self.member_ids):
            every[gi] = logits[i]  # the own member keeps its graph
        return every

    def sync(self, members, losses: torch.Tensor, weight: float) -> torch.Tensor:
        if self.data_size == 1:
            return losses
        with self._guard("the gradient all-reduce"):
            for m in members:
                losses = self._sync_dense(m.dense_parameters(), losses, weight)
                self._sync_rows(m.table_parameters(), weight)
        return losses

    def _sync_dense(self, params: Sequence[torch.Tensor], losses: torch.Tensor, weight: float) -> torch.Tensor:
        dev = losses.device
        parts = [(p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=dev, dtype=p.dtype))
                 for p in params]
        mask = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dev)
        flat = torch.cat([x.float() for x in parts] + [losses.float()]).mul_(weight)
        flat = torch.cat([flat, mask]).to(self.comm_device)
        self.dist.all_reduce(flat, group=self.data_group)
        flat = flat.to(dev)
        off = 0
        for p in params:
            n = p.numel()
            if p.grad is not None:
                p.grad.copy_(flat[off:off + n].view_as(p))
            off += n
        out = flat[off:off + losses.numel()].clone()
        off += losses.numel()
        has = flat[off:off + len(params)]
        start = 0
        for j, p in enumerate(params):
            n = p.numel()
            if p.grad is None and has[j] > 0:
                p.grad = flat[start:start + n].view_as(p).to(p.dtype).clone()
            start += n
        return out.to(losses.dtype)

    def _sync_rows(self, tables: Sequence[torch.Tensor], weight: float) -> None:
        """Sum the touched rows of each table's gradient over the data group."""
        if not tables:
            return
        dev = tables[0].device
        idx, vals = [], []
        for p in tables:
            g = p.grad
            if g is None:
                idx.append(torch.zeros(0, dtype=torch.int64, device=dev))
                vals.append(torch.zeros(0, p.shape[1], dtype=torch.float32, device=dev))
            elif g.is_sparse:
                g = g.coalesce()
                idx.append(g.indices()[0])
                vals.append(g.values().float() * weight)
            else:  # dense gradient: only the rows the shard touched are non-zero
                rows = (g != 0).any(dim=1).nonzero().squeeze(1)
                idx.append(rows)
                vals.append(g.index_select(0, rows).float() * weight)
        k = self.data_size
        counts = torch.tensor([len(i) for i in idx], dtype=torch.int64, device=self.comm_device)
        all_counts = self._all_gather_flat(counts, self.data_group, k).view(k, len(tables)).cpu()
        dims = [p.shape[1] for p in tables]
        sizes = [int(sum(int(c) * (1 + d) for c, d in zip(row, dims))) for row in all_counts]
        # one float32 buffer per rank: [int32 row ids (bit pattern) | values] per table
        buf = torch.cat([torch.cat([i.to(torch.int32).view(torch.float32), v.reshape(-1)]) for i, v in zip(idx, vals)])
        buf = torch.cat([buf, buf.new_zeros(max(sizes) - buf.numel())]).to(self.comm_device)
        every = self._all_gather_flat(buf, self.data_group, k).view(k, -1).to(dev)
        got_i: list[list[torch.Tensor]] = [[] for _ in tables]
        got_v: list[list[torch.Tensor]] = [[] for _ in tables]
        for r in range(k):
            off = 0
            for t, d in enumerate(dims):
                c = int(all_counts[r, t])
                got_i[t].append(every[r, off:off + c].contiguous().view(torch.int32).long())
                off += c
                got_v[t].append(every[r, off:off + c * d].view(c, d))
                off += c * d
        for t, p in enumerate(tables):
            rows, values = torch.cat(got_i[t]), torch.cat(got_v[t]).to(p.dtype)
            if rows.numel() == 0 and p.grad is None:
                continue
            if p.grad is None or p.grad.is_sparse:
                p.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, p.shape, check_invariants=False).coalesce()
            else:
                p.grad.zero_().index_add_(0, rows, values)

    def gather_rows(self, values: np.ndarray, rows: int) -> np.ndarray:
        if self.data_size == 1:
            return values
        k = self.data_size
        bounds = [shard_bounds(rows, d, k) for d in range(k)]
        longest = max(hi - lo for lo, hi in bounds)
        t = torch.zeros(longest, dtype=torch.float32)
        t[:len(values)] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        with self._guard("the evaluation gather"):
            every = self._all_gather_flat(t.to(self.comm_device), self.data_group, k).view(k, longest).cpu().numpy()
        return np.concatenate([every[d, :hi - lo] for d, (lo, hi) in enumerate(bounds)])

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        with self._guard("an object gather"):
            self.dist.all_gather_object(out, obj)
        return out

    def member_results(self, results: list[Any]) -> list[Any]:
        """Every member's result (in member order) on every rank, from the writer ranks."""
        every = self.all_gather_object((self.member_ids, results) if self.is_writer else None)
        by_id = {}
        for item in every:
            if item is not None:
                by_id.update(dict(zip(*item)))
        return [by_id[i] for i in range(self.num_members)]

    def barrier(self, what: str = "") -> None:
        with self._guard(what or "a barrier"):
            if self.backend == "gloo":
                # names the ranks that did not arrive, within the timeout
                self.dist.monitored_barrier(timeout=datetime.timedelta(seconds=self.timeout_s))
            else:
                self.dist.barrier()


# ---- process group set-up -------------------------------------------------------------------

def backend_for(device: str | None) -> str:
    if device in ("cuda", "auto", None) and torch.cuda.is_available():
        return "nccl"
    return "gloo"


@contextmanager
def session(num_members: int, device: str | None = None, timeout_s: float | None = None) -> Iterator[Local]:
    """The parallel context of this process: :class:`Local` outside torchrun, else a :class:`Grid`.

    Under torchrun (``WORLD_SIZE > 1``) it initialises the default process group when nobody has
    (gloo on CPU, NCCL on CUDA, each collective bounded by ``timeout_s``, default
    ``$MUTUALCTR_DIST_TIMEOUT`` or 600 s) and destroys it at the end.
    """
    if env_world_size() <= 1 and not (dist.is_available() and dist.is_initialized()):
        yield Local(num_members)
        return
    timeout_s = float(timeout_s if timeout_s is not None else os.environ.get("MUTUALCTR_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    os.environ["MUTUALCTR_DIST_TIMEOUT"] = str(timeout_s)
    owned = False
    backend = backend_for(device)
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        owned = True
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    finished = False
    try:
        grid = Grid(num_members, dev)
        yield grid
        finished = True
    finally:
        if finished:
            # Tear down only when every rank is done: a rank that destroys a group while a
            # peer's gloo threads still finish the last collective can abort that peer
            # ("terminate called without an active exception", SIGABRT at exit).
            dist.barrier()
            grid.close()
        if owned:
            dist.destroy_process_group()
