"""Counting the calls that make a GPU wait for the host: what a training step may not make.

`SyncCounter` is a torch function mode: while it is active, every call on a tensor that
reads its value back to the host (`.item()`, `.tolist()`, `.cpu()`, `.numpy()`, a `bool`,
`int`, `float` or format of a tensor, `.to()` the CPU) is recorded with its call site. On a
CPU run these calls cost nothing, but they are the same calls a CUDA run would block on, so
counting them on the CPU counts a GPU run's synchronisations. Calls made while a DataLoader
fetches a batch are left out: on a real run they happen in worker processes, on host data.
"""

from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode

READS_BACK = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
    torch.Tensor.__format__,
}
LOADER_FILES = ("torch/utils/data/",)


def _to_host(args, kwargs) -> bool:
    """Whether a `Tensor.to` call moves a tensor to the CPU: named "cpu" outright, or a CPU
    device given for a tensor elsewhere (`.to(device)` on a CPU run moves nothing and is
    the host-to-device copy of a GPU run)."""
    source = args[0]
    for target in (*args[1:], kwargs.get("device")):
        if target == "cpu":
            return True
        if isinstance(target, torch.device) and target.type == "cpu":
            return source.device.type != "cpu"
    return False


class SyncCounter(TorchFunctionMode):
    """Records `(function name, "file:line" of the first caller outside torch)` per call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in READS_BACK or (func is torch.Tensor.to and _to_host(args, kwargs)):
            stack = traceback.extract_stack()[:-1]
            if not any(any(part in frame.filename for part in LOADER_FILES) for frame in stack):
                site = next((f for f in reversed(stack) if "/torch/" not in f.filename), stack[-1])
                self.calls.append((func.__name__, f"{site.filename}:{site.lineno}"))
        return func(*args, **kwargs)
