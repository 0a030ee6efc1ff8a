"""The assembled video model: CLIP visual tower -> temporal transformer -> storyboard head.

`build_model` is the one way the trainer makes it, from the model's record (`ModelArgs`,
`trainer/model/args.py`): it keeps only the CLIP's visual tower (the
trainer never runs the text tower) and puts the model on the CLIP's device. The model takes
the class texts as `ClassText`, which `trainer.subtexts` builds from a sub-text artifact.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from storyboard_common.clip import LoadedClip
from storyboard_common.errors import UserError

from ..data.transforms import clip_pixel_stats, normalise_clips
from .aggregation import UNTRAINED_LOG_LOGIT_SCALE, ClassText, StoryboardHead
from .args import ModelArgs
from .temporal import TemporalTransformer

NO_DECAY_NAMES = ("position", "embedding", "logit_scale")


class VideoCLIP(nn.Module):
    """Clips [B, T, 3, H, W] (uint8, or float already CLIP-normalised) -> class logits.

    `visual` is the open_clip visual tower, `temporal` mixes the T frame embeddings of each
    video, `head` is the coarse/fine aggregation (Eq. 5-12). With `freeze_backbone` the
    visual tower gets no gradient, runs under `no_grad` and stays in eval mode (BatchNorm
    statistics, dropout) even when the model is put in train mode; its per-frame output
    (`encode_frames`) is then a fixed function of the clip, which is what the feature cache
    stores (`trainer/cache/`) and `forward` accepts in place of clips.
    """

    def __init__(
        self,
        visual: nn.Module,
        head: StoryboardHead,
        temporal: nn.Module | None = None,
        *,
        freeze_backbone: bool = False,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        self.visual = visual
        self.temporal = temporal if temporal is not None else TemporalTransformer(1, 0)
        self.head = head
        self.freeze_backbone = freeze_backbone
        # On the model's device, so that a step copies nothing from the host; not in
        # state_dict (constants, not weights).
        mean, std = clip_pixel_stats()
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.visual.requires_grad_(not freeze_backbone)
        if hasattr(self.visual, "set_grad_checkpointing"):
            # Pointless without gradients; set either way so a shared tower is never left on.
            self.visual.set_grad_checkpointing(grad_checkpointing and not freeze_backbone)
        self.train(self.training)

    def train(self, mode: bool = True) -> VideoCLIP:
        super().train(mode)
        if self.freeze_backbone:
            self.visual.eval()
        return self

    def encode_frames(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] -> the visual tower's frame embeddings [B, T, D] (before the
        temporal module, which trains)."""
        with torch.no_grad() if self.freeze_backbone else contextlib.nullcontext():
            return encode_frames(self.visual, clips, (self.pixel_mean, self.pixel_std))

    def forward_features(
        self, features: torch.Tensor, text: ClassText
    ) -> dict[str, torch.Tensor | None]:
        """Frame embeddings [B, T, D] -> temporal module -> head: {logits [B, C], coarse
        [B, C, T] | None, fine [B, C, T] | None, frames [B, T, D] (after the temporal module)}.

        Features of a lower precision (the cache stores float16) are computed in float32,
        or in the autocast dtype under autocast, like the tower's own output.
        """
        frames = self.temporal(features.float())
        out = self.head(frames, text)
        out["frames"] = frames
        return out

    def forward(self, inputs: torch.Tensor, text: ClassText) -> dict[str, torch.Tensor | None]:
        """Clips [B, T, 3, H, W], or their frame embeddings [B, T, D] from a feature cache
        -> `forward_features`. One entry point for both, so that DDP (which hooks `forward`)
        and the one training loop (`trainer/training.py`) serve cached runs too."""
        if inputs.ndim == 3:
            return self.forward_features(inputs, text)
        return self.forward_features(self.encode_frames(inputs), text)


def encode_frames(
    visual: nn.Module,
    clips: torch.Tensor,
    pixel_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """[B, T, 3, H, W] (uint8, or float CLIP-normalised) -> frame embeddings [B, T, D] of an
    open_clip visual tower: the frozen computation a feature cache runs once per clip.
    `pixel_stats`: CLIP's (mean, std) on the clips' device (`normalise_clips`)."""
    if clips.ndim != 5:
        raise ValueError(f"expected clips [B, T, 3, H, W], got {tuple(clips.shape)}")
    b, t = clips.shape[:2]
    images = clips.flatten(0, 1)
    if images.dtype == torch.uint8:
        images = normalise_clips(images, pixel_stats)
    param = next(visual.parameters(), None)
    images = images.to(param.dtype if param is not None else torch.float32)
    return visual(images).reshape(b, t, -1)


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim < 2 or any(key in name for key in NO_DECAY_NAMES)


def param_groups(
    model: nn.Module, lr: float, backbone_lr_scale: float, weight_decay: float
) -> list[dict]:
    """AdamW parameter groups: the visual tower and the head's logit scale (Eq. 12) at
    `lr * backbone_lr_scale`, the rest at `lr`; no weight decay on biases, norms, embeddings
    and the logit scale (1-D parameters and names with 'position', 'embedding' or
    'logit_scale'). Frozen parameters are left out.

    The logit scale starts at the loaded CLIP's own (`build_model`), so it trains at the
    backbone's rate, as BIKE does, also when the visual tower is frozen: it is not part of
    the tower and stays trainable. Both are found by identity (every `VideoCLIP` inside
    `model`), so a model wrapped in DDP or `torch.compile` gives the same groups. Each group
    carries a `name` (`backbone`/`new`, `_decay`/`_no_decay`; the logit scale is in
    `backbone_no_decay`); empty groups are dropped.
    """
    at_backbone_lr = set()
    for m in model.modules():
        if isinstance(m, VideoCLIP):
            at_backbone_lr.update(id(p) for p in m.visual.parameters())
            at_backbone_lr.add(id(m.head.logit_scale))
    groups: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (id(param) in at_backbone_lr, _no_decay(name, param))
        groups.setdefault(key, []).append(param)
    out = []
    for is_backbone in (True, False):
        for no_decay in (False, True):
            params = groups.get((is_backbone, no_decay))
            if not params:
                continue
            part = "backbone" if is_backbone else "new"
            out.append(
                {
                    "name": f"{part}_{'no_decay' if no_decay else 'decay'}",
                    "params": params,
                    "lr": lr * backbone_lr_scale if is_backbone else lr,
                    "weight_decay": 0.0 if no_decay else weight_decay,
                }
            )
    return out


def _temporal_heads(dim: int) -> int:
    """CLIP's convention (and BIKE's): 64-wide heads; the largest count <= dim // 64 that
    divides dim, at least 1."""
    heads = max(1, dim // 64)
    while dim % heads:
        heads -= 1
    return heads


def clip_log_logit_scale(clip_model: nn.Module) -> float:
    """The CLIP's own learned log logit scale (open_clip keeps the log in `logit_scale`), the
    head's starting point (Eq. 12); CLIP's value before pre-training, log(1/0.07), for a
    model without one."""
    log_scale = getattr(clip_model, "logit_scale", None)
    return UNTRAINED_LOG_LOGIT_SCALE if log_scale is None else float(log_scale.detach())


def build_model(clip: LoadedClip, args: ModelArgs) -> VideoCLIP:
    """The video model of the record `args` over `clip`'s visual tower (`video_model`), on
    `clip.device`; it classifies against the `ClassText` given to `forward` (built from a
    sub-text artifact by `trainer.subtexts.artifact_class_text`).

    Only `clip.model.visual` goes into the model: the text tower is never run by the trainer
    (drop the `LoadedClip` afterwards to free it). The visual tower is shared, not copied;
    the head's logit scale starts at the CLIP's own (`clip_log_logit_scale`), a copy.
    """
    if clip.embed_dim % args.attention_heads:
        raise UserError(
            f"--heads {args.attention_heads} must divide the embedding width of CLIP "
            f"{clip.model_id} ({clip.embed_dim})."
        )
    model = video_model(clip.model.visual, clip.embed_dim, clip_log_logit_scale(clip.model), args)
    return model.to(clip.device)


def video_model(visual: nn.Module, dim: int, logit_scale: float, args: ModelArgs) -> VideoCLIP:
    """The video model of the record `args` over a visual tower that embeds in `dim`
    dimensions, its head's log logit scale starting at `logit_scale`."""
    head = StoryboardHead(
        dim,
        mode=args.aggregation,
        heads=args.attention_heads,
        tau_coarse=args.tau_coarse,
        tau_fine=args.tau_fine,
        logit_scale=logit_scale,
    )
    temporal = TemporalTransformer(
        dim, args.temporal_layers, heads=_temporal_heads(dim), frames=args.frames
    )
    return VideoCLIP(
        visual,
        head,
        temporal,
        freeze_backbone=args.freeze_backbone,
        grad_checkpointing=args.grad_checkpointing,
    )
