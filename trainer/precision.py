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


def tf32_applies(device: torch.device, amp: str, allowed: bool) -> bool:
    """Whether a run's fp32 matmuls and convolutions run as TF32: under --amp none (autocast
    computes in bf16/fp16 anyway), on a CUDA device of compute capability 8.0 or later
    (Ampere on, which have TF32 units), unless --no-tf32."""
    return (
        allowed
        and amp == "none"
        and device.type == "cuda"
        and torch.cuda.get_device_capability(device) >= (8, 0)
    )


def set_tf32(on: bool) -> None:
    """TF32 (10-bit mantissa products, fp32 sums) or IEEE fp32 for CUDA matmuls and cuDNN
    convolutions: about 8x the fp32 matmul rate of an A100 or H100."""
    precision = "tf32" if on else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
