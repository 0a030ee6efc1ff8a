"""Frame folders: a video stored as one JPEG file per frame.

Frame `i` (from 0) of a folder is the file `img_{i+1:05d}.jpg`: the numbering BIKE, TSN and
mmaction2 use for their extracted frames, and what `prepare-videos --to frames` writes.
Readers take the bytes here and decode them where they are wanted (on the CPU in a loader
worker, or in batches on the GPU with `--decode-device cuda`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.io import read_file

FRAME_TEMPLATE = "img_{:05d}.jpg"


def frame_file(folder: Path, index: int) -> Path:
    """The file of frame `index` (counted from 0) of a frame folder."""
    return Path(folder) / FRAME_TEMPLATE.format(index + 1)


def read_frame_bytes(folder: Path, indices: Sequence[int]) -> list[torch.Tensor]:
    """The encoded bytes of the frames at `indices` (any order, repeats allowed), each a
    uint8 1-D tensor, read once per distinct frame."""
    distinct = {i: read_file(str(frame_file(folder, i))) for i in dict.fromkeys(indices)}
    return [distinct[i] for i in indices]
