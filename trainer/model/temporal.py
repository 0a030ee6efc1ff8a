"""The temporal transformer over the frame embeddings of each video (BIKE's video header).

`out = x + proj(norm(encoder(x + pos)))`: learned frame position embeddings, `layers`
pre-norm transformer encoder layers over the T frames of each video, a final LayerNorm and
a zero-initialised projection, residual to the input. At init `out == x` exactly, so a
pretrained CLIP's frame embeddings reach the head undisturbed and the temporal module is
mixed in only as far as training finds it useful. `layers=0` is the identity (no weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalTransformer(nn.Module):
    """[B, T, D] frame embeddings -> [B, T, D], temporally mixed (identity at init).

    The position embeddings are learned for `frames` frames; a clip of another length gets
    them linearly interpolated along time.
    """

    def __init__(
        self, dim: int, layers: int, heads: int = 8, frames: int = 8, dropout: float = 0.0
    ):
        super().__init__()
        if layers < 0:
            raise ValueError(f"temporal layers must be >= 0, not {layers}.")
        self.layers = layers
        if layers == 0:
            return  # identity: no weights at all
        if heads < 1 or dim % heads:
            raise ValueError(f"temporal heads ({heads}) must be >= 1 and divide dim ({dim}).")
        if frames < 1:
            raise ValueError(f"frames must be >= 1, not {frames}.")
        self.frame_position = nn.Parameter(torch.randn(frames, dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=dim,
                nhead=heads,
                dim_feedforward=4 * dim,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def positions(self, length: int) -> torch.Tensor:
        """The [length, D] position embeddings, interpolated when length != frames."""
        pos = self.frame_position
        if pos.shape[0] == length:
            return pos
        # [T0, D] -> [1, D, T0] -> [1, D, T] -> [T, D]
        return F.interpolate(pos.t()[None], size=length, mode="linear", align_corners=False)[0].t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layers == 0:
            return x
        h = x + self.positions(x.shape[1]).to(x.dtype)
        for block in self.blocks:
            h = block(h)
        return x + self.proj(self.norm(h))
