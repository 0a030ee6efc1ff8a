"""torchrun / DDP helpers: optional, so one process on a laptop needs none of it.

`torchrun --nproc_per_node G -m trainer run ...` sets RANK / WORLD_SIZE / LOCAL_RANK;
without them the run is a single process. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from storyboard_common.device import resolve_device
from storyboard_common.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only this process writes files and prints progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device)
    if torch_device.type == "cuda":
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, torch_device)


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


def main_first(make: Callable[[], T], dist_info: DistInfo) -> T:
    """`make()` on the main rank, then on the others; returns once every rank has made it.

    For what the main rank creates and the others open (a cache's meta.json). A UserError
    on the main rank is raised on every rank, so none waits for a rank that has stopped.
    """
    if not dist_info.enabled:
        return make()
    result, error = None, [None]
    if dist_info.is_main:
        try:
            result = make()
        except UserError as exc:
            error = [str(exc)]
    dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise UserError(error[0])
    if not dist_info.is_main:
        result = make()
    dist.barrier()
    return result


def gather_objects(value: T, dist_info: DistInfo) -> list[T]:
    """Every rank's `value`, in rank order (one process: `[value]`)."""
    if not dist_info.enabled:
        return [value]
    gathered: list = [None] * dist_info.world
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
