"""torchrun / DDP helpers: optional, so one process on a laptop needs none of it.

`torchrun --nproc_per_node G -m trainer run ...` sets RANK / WORLD_SIZE / LOCAL_RANK;
without them the run is a single process. NCCL on CUDA, gloo on CPU.

Two kinds of waiting: collectives in lock-step (training steps, evaluation) stop the run
after `--dist-timeout` minutes, the sign of a dead or stuck peer; a rank waiting for the main
rank's set-up (probing videos, checking or repairing a cache) or for the others' shares of
independent work waits on a gloo group of its own (`DistInfo.wait_group`), up to
`SET_UP_WAIT`: that time grows with the dataset, not with a fault.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from storyboard_common.device import resolve_device
from storyboard_common.errors import UserError

from .settings import DIST_TIMEOUT_MINUTES

T = TypeVar("T")

# How long a rank waits for another's set-up or share of work (a week: unbounded in practice;
# a rank that dies ends the others through torchrun, not through this timeout).
SET_UP_WAIT = timedelta(days=7)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    wait_group: Any = None  # the long-waiting gloo group (`SET_UP_WAIT`); None: one process

    @property
    def is_main(self) -> bool:
        """Only this process writes files and prints progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def local_processes() -> int:
    """The processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE; 1 without)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


@functools.cache
def _wait_group():
    """The gloo group whose collectives wait up to `SET_UP_WAIT` (one per process group:
    creating it is itself a collective, which every rank reaches in `init_distributed`)."""
    return dist.new_group(backend="gloo", timeout=SET_UP_WAIT)


def init_distributed(
    device: str = "auto", timeout_minutes: float = DIST_TIMEOUT_MINUTES
) -> DistInfo:
    """This process's place in the run (torchrun's environment, else one process) and its
    device (`resolve_device`); under torchrun the process group, bound to that device, with
    collectives that give up after `timeout_minutes`, and the long-waiting group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank, local_processes())
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    wait_group = None
    if world > 1:
        if not dist.is_initialized():
            cuda = torch_device.type == "cuda"
            dist.init_process_group(
                "nccl" if cuda else "gloo",
                timeout=timedelta(minutes=timeout_minutes),
                device_id=torch_device if cuda else None,
            )
        wait_group = _wait_group()
    return DistInfo(rank, world, local_rank, torch_device, wait_group)


def exchange_counts(counts: list[int], dist_info: DistInfo) -> list[list[int]]:
    """Every rank's `counts` (one number per micro-batch of a step), in rank order: one
    all-gather, read back once (an optimiser step's one host-device synchronisation). One
    process: `[counts]`, nothing exchanged."""
    if not dist_info.enabled:
        return [list(counts)]
    mine = torch.tensor(counts, dtype=torch.long, device=dist_info.device)
    parts = [torch.empty_like(mine) for _ in range(dist_info.world)]
    dist.all_gather(parts, mine)
    return torch.stack(parts).tolist()


def gather_with_grad(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All ranks' rows in rank order; gradient flows to the local rows. `sizes`: every
    rank's row count, in rank order (`exchange_counts`), so nothing is read back here.

    The loss needs the logits of the global batch (Eq. 13-15 sum over it), but each rank
    only back-propagates through its own slice, as in CLIP's distributed loss.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    rank = dist.get_rank()
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    parts = [p[:size] for p, size in zip(parts, sizes)]
    parts[rank] = x
    return torch.cat(parts)


def _all_reduce(x: torch.Tensor, op) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=op)
    return x


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _all_reduce(x, dist.ReduceOp.SUM)


def all_reduce_min(x: torch.Tensor) -> torch.Tensor:
    return _all_reduce(x, dist.ReduceOp.MIN)


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    return _all_reduce(x, dist.ReduceOp.MAX)


def on_main(work: Callable[[], T], dist_info: DistInfo) -> T | None:
    """`work()` on the main rank while the others wait for it without a collective's timeout
    (`wait_group`): for the main rank's long set-up (probing videos, checking a cache). A
    UserError there is raised on every rank, so none waits for a rank that has stopped.
    -> its result on the main rank, None on the others."""
    if not dist_info.enabled:
        return work()
    result, error = None, [None]
    if dist_info.is_main:
        try:
            result = work()
        except UserError as exc:
            error = [str(exc)]
    dist.broadcast_object_list(error, src=0, group=dist_info.wait_group)
    if error[0] is not None:
        raise UserError(error[0])
    return result


def main_first(make: Callable[[], T], dist_info: DistInfo) -> T:
    """`make()` on the main rank, then on the others; returns once every rank has made it.

    For what the main rank creates and the others open (a cache's meta.json). The waits are
    `on_main`'s (no collective timeout), and so is its UserError on every rank.
    """
    result = on_main(make, dist_info)
    if not dist_info.enabled:
        return result
    if not dist_info.is_main:
        result = make()
    wait_for_all(dist_info)
    return result


def gather_objects(value: T, dist_info: DistInfo) -> list[T]:
    """Every rank's `value`, in rank order (one process: `[value]`), once every rank has
    done its share of independent work: the wait is `wait_group`'s, not a collective's."""
    if not dist_info.enabled:
        return [value]
    gathered: list = [None] * dist_info.world
    dist.all_gather_object(gathered, value, group=dist_info.wait_group)
    return gathered


def gather_to_main(value: T, dist_info: DistInfo) -> list[T] | None:
    """Every rank's `value`, in rank order, on the main rank alone (one process: `[value]`);
    None on the others, which hold only their own."""
    if not dist_info.enabled:
        return [value]
    gathered: list | None = [None] * dist_info.world if dist_info.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def from_main(value: T, dist_info: DistInfo) -> T:
    """The main rank's `value` on every rank (small things: a few metrics)."""
    if not dist_info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wait_for_all(dist_info: DistInfo) -> None:
    """Return once every rank is here, however long the others take to come (`wait_group`):
    after set-up, before the first collective of lock-step work."""
    if dist_info.enabled:
        dist.barrier(group=dist_info.wait_group)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        _wait_group.cache_clear()  # destroyed with the process group
