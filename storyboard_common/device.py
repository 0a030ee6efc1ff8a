"""The choice of device, the same for both stages, and the CPU cores a process may use."""

from __future__ import annotations

import os

import torch

from .errors import UserError


def choose_device(
    device: str | None, device_count: int, local_rank: int = 0, processes: int = 1
) -> torch.device:
    """The device a process computes on, from `device` (`auto`: CUDA when there is one, else
    CPU; `cpu`; `cuda`; `cuda:N`), the CUDA devices it sees and its place among the
    `processes` of its node (torchrun's LOCAL_RANK and LOCAL_WORLD_SIZE). CUDA is device
    `local_rank % device_count`, so a process that sees one GPU (CUDA_VISIBLE_DEVICES) takes
    it; `cuda:N` is that device, in a run of one process. Pure, for the tests."""
    device = device or "auto"
    if device == "auto":
        device = "cuda" if device_count else "cpu"
    if not device.startswith("cuda"):
        return torch.device(device)
    if not device_count:
        raise UserError(f"--device {device} asked for CUDA, but no CUDA device is available.")
    chosen = torch.device(device)
    if chosen.index is None:
        return torch.device("cuda", local_rank % device_count)
    if processes > 1:
        raise UserError(
            f"--device {device} names one GPU, but {processes} processes share this machine: "
            "pass --device cuda (process k takes GPU k) and pick the GPUs with "
            "CUDA_VISIBLE_DEVICES."
        )
    if chosen.index >= device_count:
        raise UserError(
            f"--device {device}: this process sees {device_count} CUDA device(s), "
            f"cuda:0 to cuda:{device_count - 1}."
        )
    return chosen


def resolve_device(
    device: str | None = "auto", local_rank: int = 0, processes: int = 1
) -> torch.device:
    """`choose_device` among the CUDA devices this process sees (by default for one process
    on this machine): `auto`, `cpu`, `cuda` or `cuda:N`; asking for CUDA where there is none
    is a UserError."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return choose_device(device, count, local_rank, processes)


def available_cores() -> int:
    """The CPU cores this process may use (its affinity on Linux, else every core)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
