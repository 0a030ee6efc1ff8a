"""Coarse and fine frame aggregation, fusion and class logits (Eq. 5-12).

Shapes: B videos, L frames, C classes, N sub-texts per class, W word tokens (padded), D the
joint embedding width. Masks are True on real tokens. Every class-conditional quantity is
computed for all C classes at once; there is no Python loop over classes.

The pure functions (`coarse_importance`, `fine_importance`, `weighted_frames`,
`class_logits`) are the equations; the modules (`CrossAttention`, `FFN`, `StoryboardHead`)
hold the learned weights and assemble them into the ablation modes of the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .modes import AGGREGATIONS

# CLIP's log logit scale before pre-training (log(1/0.07)); a trained CLIP's is larger
# (OpenAI's is log(100)), and the head starts from the loaded CLIP's own where it has one.
UNTRAINED_LOG_LOGIT_SCALE = math.log(1 / 0.07)

# Which branches each mode sums (Eq. 12). `global` is the coarse branch fed with the plain
# global word tokens (no sub-text cross-attention), the BIKE-style baseline.
_BRANCHES = {
    "mean": (),
    "global": ("global",),
    "coarse": ("coarse",),
    "fine": ("fine",),
    "coarse+fine": ("coarse", "fine"),
}


def _full_precision(device: torch.device):
    """Autocast off: cosines are computed in fp32 even in a bf16/fp16 run."""
    # A temperature of 0.01 (or a logit scale of 100) multiplies cosines by 100, so bf16
    # rounding of the cosines (~3 digits) would show in the softmax; these products are
    # small next to the backbone, so fp32 costs nothing that matters.
    return torch.autocast(device.type, enabled=False)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalised, in fp32 at least (fp64 stays fp64)."""
    return F.normalize(x.to(torch.promote_types(x.dtype, torch.float32)), dim=-1)


def _unit_tokens(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised tokens, padding set to zero first so its values can never leak (even NaN)."""
    return _unit(tokens.masked_fill(~mask[..., None], 0.0))


def _mean_weights(mask: torch.Tensor) -> torch.Tensor:
    """Per-token fp32 weights 1/|real tokens| on real tokens, 0 on padding (0 if none is real)."""
    real = mask.to(torch.float32)
    return real / real.sum(-1, keepdim=True).clamp(min=1.0)


def coarse_importance(
    frames: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor, tau: float
) -> torch.Tensor:
    """Eq. 8: coarse frame importance from the augmented global word tokens T^_c.

    `a[b,c,l] = mean_{w real} softmax_l( cos(t^_{c,w}, v_{b,l}) / tau )`.

    frames [B,L,D], text_tokens [C,W,D], text_mask [C,W] -> [B,C,L], summing to 1 over l.
    Padding tokens never count. A class without any real token gets uniform weights 1/L
    (the plain mean of frames) rather than 0/0.
    """
    with _full_precision(frames.device):
        unit_frames = _unit(frames)
        unit_tokens = _unit_tokens(text_tokens, text_mask).to(unit_frames.dtype)
        cos = torch.einsum("cwd,bld->bcwl", unit_tokens, unit_frames)
        per_word = torch.softmax(cos / tau, dim=-1)
        importance = torch.einsum("bcwl,cw->bcl", per_word, _mean_weights(text_mask).to(cos))
    no_words = ~text_mask.any(-1)
    return torch.where(no_words[None, :, None], 1.0 / frames.shape[1], importance)


def subtext_frame_similarity(
    frames: torch.Tensor, sub_tokens: torch.Tensor, sub_mask: torch.Tensor
) -> torch.Tensor:
    """The inner term of Eq. 10: `mean_{w real in S_c,n} cos(s_w, v_{b,l})`.

    frames [B,L,D], sub_tokens [C,N,W,D], sub_mask [C,N,W] -> [B,C,N,L].
    """
    with _full_precision(frames.device):
        # The mean of cosines with a unit frame is the dot product with the mean of the unit
        # tokens, so average over words first: [C,N,D] instead of a [B,C,N,W,L] tensor.
        unit_frames = _unit(frames)
        unit_tokens = _unit_tokens(sub_tokens, sub_mask).to(unit_frames.dtype)
        mean_unit = torch.einsum(
            "cnwd,cnw->cnd", unit_tokens, _mean_weights(sub_mask).to(unit_tokens)
        )
        return torch.einsum("cnd,bld->bcnl", mean_unit, unit_frames)


def fine_importance(
    frames: torch.Tensor, sub_tokens: torch.Tensor, sub_mask: torch.Tensor, tau: float
) -> torch.Tensor:
    """Eq. 10: fine frame importance from the sub-texts alone.

    `a[b,c,l] = softmax_l( max_n mean_{w real in S_c,n} cos(s_w, v_{b,l}) / tau )`.

    frames [B,L,D], sub_tokens [C,N,W,D], sub_mask [C,N,W] -> [B,C,L], summing to 1 over l.
    A sub-text without real tokens is left out of the max over n; a class whose N sub-texts
    are all empty gets uniform weights 1/L.
    """
    mean_cos = subtext_frame_similarity(frames, sub_tokens, sub_mask)
    has_words = sub_mask.any(-1)  # [C,N]
    best = mean_cos.masked_fill(~has_words[None, :, :, None], float("-inf")).amax(dim=2)
    no_sub_text = ~has_words.any(-1)  # [C]: a zero score row gives the uniform softmax
    best = torch.where(no_sub_text[None, :, None], torch.zeros_like(best), best)
    return torch.softmax(best / tau, dim=-1)


def weighted_frames(importance: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Eq. 9 / Eq. 11: `o[b,c] = sum_l a[b,c,l] * v[b,l]`; [B,C,L], [B,L,D] -> [B,C,D]."""
    return torch.einsum("bcl,bld->bcd", importance.to(frames.dtype), frames)


def class_logits(
    video_emb: torch.Tensor, class_emb: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Eq. 12: `y[b,c] = logit_scale * cos(t_c, o[b,c])`.

    video_emb [B,C,D] (class-conditional) or [B,D] (one embedding per video, e.g. `mean`),
    class_emb [C,D] (pooled global text), logit_scale the multiplier itself (already
    exponentiated) -> [B,C].
    """
    with _full_precision(video_emb.device):
        unit_video = _unit(video_emb)
        unit_class = _unit(class_emb).to(unit_video.dtype)
        if video_emb.dim() == 2:
            cos = unit_video @ unit_class.t()
        else:
            cos = torch.einsum("bcd,cd->bc", unit_video, unit_class)
        return logit_scale * cos


class CrossAttention(nn.Module):
    """Eq. 5-7: global word tokens T_c attend over the word tokens of all N sub-texts of c.

    `Q = T_c W_q`, `K = S_c W_k`, `V = S_c W_v` with S_c the concatenated sub-text tokens of
    class c, `T^_c = softmax(Q K^T / sqrt(d)) V + T_c`; padded sub-text tokens are masked out
    of the keys. With `heads == 1` there are exactly the paper's three projections and no
    output projection; with `heads > 1` the heads are concatenated and mixed by an output
    projection W_o, as in standard multi-head attention. All classes are one batch.

    The last projection on the value path (W_v single-head, W_o multi-head) starts at zero,
    so at init `T^_c = T_c`: training starts from the plain global text (what BIKE-style
    baselines use) and the sub-texts are mixed in only as far as they help.
    """

    def __init__(self, dim: int, heads: int = 1):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"attention heads ({heads}) must be >= 1 and divide dim ({dim}).")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim) if heads > 1 else None
        last = self.out if self.out is not None else self.v
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        sub_tokens: torch.Tensor,
        sub_mask: torch.Tensor,
    ) -> torch.Tensor:
        """[C,W,D], [C,W], [C,N,W',D], [C,N,W'] -> T^ [C,W,D] (padded positions finite)."""
        c, w, d = text_tokens.shape
        h = self.heads
        queries_in = text_tokens.masked_fill(~text_mask[..., None], 0.0)
        keys_in = sub_tokens.masked_fill(~sub_mask[..., None], 0.0).reshape(c, -1, d)
        key_mask = sub_mask.reshape(c, 1, 1, -1)  # [C,1(heads),1(queries),N*W']

        def split(x: torch.Tensor) -> torch.Tensor:  # [C,T,D] -> [C,H,T,D/H]
            return x.reshape(c, x.shape[1], h, d // h).transpose(1, 2)

        q, k, v = split(self.q(queries_in)), split(self.k(keys_in)), split(self.v(keys_in))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        # A large finite fill (not -inf) keeps a class with no real sub-token finite; the
        # product with the mask then zeroes its weights, so T^_c = T_c for such a class.
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores, dim=-1) * key_mask
        mixed = (attn @ v).transpose(1, 2).reshape(c, w, d)
        if self.out is not None:
            mixed = self.out(mixed)
        return mixed + queries_in


class FFN(nn.Module):
    """The per-branch feed-forward of Eq. 12, read as a pre-norm transformer MLP block.

    `FFN(x) = x + W_2 GELU(W_1 LayerNorm(x))`, D -> 4D -> D. The paper does not spell the
    FFN out; the residual with a zero-initialised W_2 makes it the identity at init, so each
    branch starts as the plain weighted mean of frames.
    """

    def __init__(self, dim: int, expansion: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, expansion * dim)
        self.fc2 = nn.Linear(expansion * dim, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


@dataclass(frozen=True)
class ClassText:
    """The frozen text side of every class, as tensors (masks True on real tokens).

    global_emb [C,D] (pooled t_c), global_tokens [C,W,D], global_mask [C,W],
    sub_emb [C,N,D], sub_tokens [C,N,W',D], sub_mask [C,N,W'].
    """

    global_emb: torch.Tensor
    global_tokens: torch.Tensor
    global_mask: torch.Tensor
    sub_emb: torch.Tensor
    sub_tokens: torch.Tensor
    sub_mask: torch.Tensor

    @classmethod
    def from_artifact(cls, artifact) -> ClassText:
        """From any object with numpy attributes of the same names (e.g. `SubtextArtifact`)."""
        values = {}
        for f in fields(cls):
            array = torch.as_tensor(getattr(artifact, f.name))
            values[f.name] = array.bool() if f.name.endswith("mask") else array.float()
        return cls(**values)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """A copy on `device`; `dtype` applies to the embeddings only, masks stay bool."""
        values = {}
        for f in fields(self):
            tensor = getattr(self, f.name)
            is_mask = f.name.endswith("mask")
            values[f.name] = tensor.to(device=device, dtype=None if is_mask else dtype)
        return ClassText(**values)

    def subset(self, class_ids: torch.Tensor) -> ClassText:
        """The given classes only, in that order (zero-shot on half of the label set)."""
        return ClassText(
            **{
                f.name: getattr(self, f.name)[class_ids.to(self.global_emb.device)]
                for f in fields(self)
            }
        )

    @property
    def num_classes(self) -> int:
        return self.global_emb.shape[0]


class StoryboardHead(nn.Module):
    """Frames and class texts -> class logits, in one of the paper's aggregation modes.

    * `mean`: `o[b] = mean_l v[b,l]`, logits against t_c (no learned weights but the scale).
    * `global`: Eq. 8-9 with the plain global word tokens (no cross-attention), then FFN;
      the BIKE-style baseline. Its importance is reported under `coarse`.
    * `coarse`: Eq. 5-9 (cross-attention, coarse importance, weighted sum), then FFN_coarse.
    * `fine`: Eq. 10-11, then FFN_fine.
    * `coarse+fine` (default): Eq. 12, `o = FFN_coarse(o_coarse) + FFN_fine(o_fine)`.

    The logit scale of Eq. 12 is learned as in CLIP: the parameter holds its log, used as
    `exp(.)` clamped at 100. The `logit_scale` argument is the initial LOG scale, as
    open_clip stores it; `build_model` passes the loaded CLIP's own learned one and
    `param_groups` trains it at the backbone's learning rate, as BIKE does. The default,
    log(1/0.07), is CLIP's value before pre-training: logits 7x flatter than OpenAI CLIP's
    exp(.) = 100.
    """

    def __init__(
        self,
        dim: int,
        mode: str = "coarse+fine",
        heads: int = 1,
        tau_coarse: float = 0.01,
        tau_fine: float = 0.01,
        logit_scale: float = UNTRAINED_LOG_LOGIT_SCALE,
    ):
        super().__init__()
        if mode not in AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {mode!r}; choose one of {', '.join(AGGREGATIONS)}."
            )
        self.mode = mode
        self.tau_coarse = tau_coarse
        self.tau_fine = tau_fine
        branches = _BRANCHES[mode]
        self.cross_attention = CrossAttention(dim, heads) if "coarse" in branches else None
        has_coarse = "coarse" in branches or "global" in branches
        self.ffn_coarse = FFN(dim) if has_coarse else None
        self.ffn_fine = FFN(dim) if "fine" in branches else None
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))

    def forward(self, frames: torch.Tensor, text: ClassText) -> dict[str, torch.Tensor | None]:
        """frames [B,L,D] -> {logits [B,C], coarse [B,C,L] or None, fine [B,C,L] or None}."""
        branches = _BRANCHES[self.mode]
        coarse = fine = None
        video: torch.Tensor = frames.mean(dim=1)  # `mean` mode: [B,D]
        parts = []
        if "global" in branches or "coarse" in branches:
            tokens = text.global_tokens
            if self.cross_attention is not None:
                tokens = self.cross_attention(
                    tokens, text.global_mask, text.sub_tokens, text.sub_mask
                )
            coarse = coarse_importance(frames, tokens, text.global_mask, self.tau_coarse)
            parts.append(self.ffn_coarse(weighted_frames(coarse, frames)))
        if "fine" in branches:
            fine = fine_importance(frames, text.sub_tokens, text.sub_mask, self.tau_fine)
            parts.append(self.ffn_fine(weighted_frames(fine, frames)))
        if parts:
            video = torch.stack(parts).sum(dim=0)
        scale = self.logit_scale.exp().clamp(max=100.0)
        return {
            "logits": class_logits(video, text.global_emb, scale),
            "coarse": coarse,
            "fine": fine,
        }
