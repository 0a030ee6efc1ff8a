"""Mixed precision: bf16 or fp16 autocast on CUDA (CPU runs fp32), and the gradient scaler
that fp16 needs."""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device, amp: str):
    """bf16 or fp16 autocast on CUDA; CPU runs fp32."""
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """The loss scaler of fp16 on CUDA; a pass-through otherwise."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp == "fp16")
