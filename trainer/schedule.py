"""The optimiser and learning-rate schedule of every training loop (runs, world-CLIP
pre-training, the GPU check): AdamW over the model's parameter groups (`param_groups`),
linear warm-up then cosine decay per optimiser step."""

from __future__ import annotations

import math

import torch

from .model.video_clip import param_groups


def make_optimizer(
    model: torch.nn.Module,
    lr: float,
    backbone_lr_scale: float = 1.0,
    weight_decay: float = 0.2,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, lr, backbone_lr_scale, weight_decay)`, fused: its
    step counts stay on the parameters' device, and it takes fp16's GradScaler decision
    there (the for-each kernel has the scaler read its overflow flag back every step). The
    same kernel on CPU and CUDA."""
    groups = param_groups(model, lr, backbone_lr_scale, weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)


def lr_lambda(total_steps: int, warmup_steps: int):
    """Linear warm-up, then cosine decay to zero, per optimiser step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """`lr_lambda` as the optimiser's schedule, stepped once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, warmup_steps))
