"""Frame folders: a video stored as one JPEG file per frame.

Frame `i` (from 0) of a folder is the file `img_{i+1:05d}.jpg`: the numbering BIKE, TSN and
mmaction2 use for their extracted frames, and what `prepare-videos --to frames` writes.
Readers take the bytes here and decode them where they are wanted (on the CPU in a loader
worker, or in batches on the GPU with `--decode-device cuda`).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file

FRAME_TEMPLATE = "img_{:05d}.jpg"


def frame_file(folder: Path, index: int) -> Path:
    """The file of frame `index` (counted from 0) of a frame folder."""
    return Path(folder) / FRAME_TEMPLATE.format(index + 1)


def read_frame_bytes(folder: Path, indices: Sequence[int]) -> list[torch.Tensor]:
    """The encoded bytes of the frames at `indices` (any order, repeats allowed), each a
    uint8 1-D tensor, read once per distinct frame."""
    distinct = {i: read_file(str(frame_file(folder, i))) for i in dict.fromkeys(indices)}
    return [distinct[i] for i in indices]


# A frame file's name as `frame_file` writes it (five or more digits: a folder may hold more
# than 99999 frames).
_FRAME_NAME = re.compile(r"img_\d{5,}\.jpg")


def is_frame_folder(path: Path) -> bool:
    """Whether `path` is a frame folder (a directory) rather than a video file. (To be
    reconciled with the one video reader's frame-folder reading.)"""
    return Path(path).is_dir()


def frame_count(folder: Path) -> int:
    """How many frame files (`img_00001.jpg`, ...) a frame folder holds; OSError when it
    cannot be listed. (A stand-in for what the one video reader learns of a frame folder:
    to be reconciled with its frame-folder reading.)"""
    with os.scandir(folder) as entries:
        return sum(1 for entry in entries if _FRAME_NAME.fullmatch(entry.name))


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of an encoded JPEG from its header alone (nothing decoded), or None
    when `data` is not a JPEG."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return (height, width) if image.format == "JPEG" else None
    except (OSError, Image.UnidentifiedImageError):  # no readable image header
        return None


def decode_frame_batch(data: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Encoded JPEGs (CPU uint8 1-D tensors) -> RGB frames uint8 [3, H, W] on `device`, in one
    batched call: nvJPEG on a CUDA device, libjpeg-turbo on the CPU."""
    return decode_jpeg(list(data), mode=ImageReadMode.RGB, device=torch.device(device))
