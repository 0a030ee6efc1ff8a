"""The choice of device, the same for both stages."""

from __future__ import annotations

import torch

from .errors import UserError


def resolve_device(device: str | None = "auto") -> torch.device:
    """`auto` (CUDA when there is one, else CPU), `cpu`, `cuda` or `cuda:N`; asking for CUDA
    where there is none is a UserError."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for CUDA, but no CUDA device is available.")
    return torch.device(device)
