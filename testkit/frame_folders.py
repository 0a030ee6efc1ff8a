"""Tiny frame folders written by the tests: `img_00001.jpg`... (trainer/data/frames.py's
naming) of smooth random colour images, so JPEG keeps them close and resizing has detail
to average."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.io import encode_jpeg, write_file

from trainer.data.frames import frame_file


def smooth_frames(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """uint8 [frames, 3, height, width]: a random colour field on a coarse 8-px grid,
    bilinearly smoothed, drifting a little from frame to frame."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, height // 8 + 2, width // 8 + 2)))
    field = torch.nn.functional.interpolate(
        coarse.float(), size=(height + frames, width + frames), mode="bilinear"
    )[0]
    return (
        torch.stack([field[:, t : t + height, t : t + width] for t in range(frames)])
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
    )


def write_jpegs(folder: Path, frames: torch.Tensor, quality: int = 90) -> Path:
    """uint8 frames [N, 3, H, W] as the frame folder `folder` (JPEGs at `quality`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        write_file(str(frame_file(folder, i)), encode_jpeg(frame, quality=quality))
    return folder


def write_frame_folder(
    folder: Path, frames: int = 12, height: int = 48, width: int = 64, seed: int = 0
) -> Path:
    """`smooth_frames` as a frame folder."""
    return write_jpegs(folder, smooth_frames(frames, height, width, seed))
