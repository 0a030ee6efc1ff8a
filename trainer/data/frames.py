"""Frame folders: a video stored as one JPEG file per frame.

Frame `i` (from 0) of a folder is the file `img_{i+1:05d}.jpg`: the numbering BIKE, TSN and
mmaction2 use for their extracted frames, and what `prepare-videos --to frames` writes.
Readers take the bytes here and decode them where they are wanted (on the CPU in a loader
worker, or in batches on the GPU with `--decode-device cuda`).

A folder stands where its video would be: the video's path without its extension
(`clips/a.mp4` -> `clips/a/`), as BIKE's and mmaction2's rawframes do. Its frames run from
`img_00001.jpg` without a gap; other files in it are ignored. Its frame rate, which BIKE's
and mmaction2's folders do not keep, is the number in `FPS_FILE` (`prepare-videos` writes
the source's, as the video reader reports it, so Charades' annotation seconds map to the
same frames as in the video); a folder without one has fps 0 (unknown), which only
Charades' per-action intervals need.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg, read_file

FRAME_TEMPLATE = "img_{:05d}.jpg"
FRAME_NAME = re.compile(r"img_(\d{5,})\.jpg")
FPS_FILE = "fps.txt"


def frame_file(folder: Path, index: int) -> Path:
    """The file of frame `index` (counted from 0) of a frame folder."""
    return Path(folder) / FRAME_TEMPLATE.format(index + 1)


def read_frame_bytes(folder: Path, indices: Sequence[int]) -> list[torch.Tensor]:
    """The encoded bytes of the frames at `indices` (any order, repeats allowed), each a
    uint8 1-D tensor, read once per distinct frame."""
    distinct = {i: read_file(str(frame_file(folder, i))) for i in dict.fromkeys(indices)}
    return [distinct[i] for i in indices]


def folder_name(name: str) -> str:
    """The frame folder's name for a video file's name: without its extension."""
    return os.path.splitext(name)[0]


def frame_numbers(names: Iterable[str]) -> list[int]:
    """The sorted distinct numbers of the frame files among `names` (`img_00007.jpg` -> 7)."""
    return sorted({int(m.group(1)) for m in map(FRAME_NAME.fullmatch, names) if m})


def first_gap(numbers: Sequence[int]) -> int | None:
    """The first number missing from sorted distinct `numbers` counted from 1, or None when
    they are exactly 1..len."""
    if not numbers or numbers[-1] == len(numbers):
        return None
    return next(n for n, have in enumerate(numbers, 1) if have != n)


def list_frames(folder: Path) -> list[int]:
    """The frame numbers present in `folder` (one scandir; OSError if unreadable)."""
    with os.scandir(folder) as entries:
        return frame_numbers(entry.name for entry in entries)


def read_fps(folder: Path) -> float | None:
    """The frame rate kept in the folder's FPS_FILE; None without one; ValueError if it
    holds no positive number."""
    try:
        text = (Path(folder) / FPS_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    fps = float(text)
    if not fps > 0:
        raise ValueError(f"{FPS_FILE} holds {text.strip()!r}, not a positive frame rate")
    return fps


def fps_text(fps: float) -> str:
    """What FPS_FILE holds: the rate as Python writes a float (read back exactly)."""
    return f"{float(fps)!r}\n"


# JPEG start-of-frame markers (SOF0-SOF15, except DHT C4, JPG C8 and DAC CC): they carry the size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame header without decoding, or None when
    `data` is not a JPEG with one. A memoryview of a frame's bytes (`memoryview(t.numpy())`
    of read_frame_bytes' tensor) reads the header without copying the frame."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in _SOF:
            if at + 9 > len(data) or length < 7:
                return None
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return (height, width) if height and width else None
        if marker == 0xDA or length < 2:  # scan data before any size: not a usable JPEG
            return None
        at += 2 + length
    return None


def is_frame_folder(path: Path) -> bool:
    """Whether `path` is a frame folder (a directory) rather than a video file."""
    return Path(path).is_dir()


def decode_frame_batch(data: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Encoded JPEGs (CPU uint8 1-D tensors) -> RGB frames uint8 [3, H, W] on `device`, in one
    batched call: nvJPEG on a CUDA device, libjpeg-turbo on the CPU."""
    return decode_jpeg(list(data), mode=ImageReadMode.RGB, device=torch.device(device))
