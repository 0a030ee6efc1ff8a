"""Clips cut on the device from JPEG frames (`--decode-device cuda`).

Loader workers read a frame folder's JPEG bytes and draw each view's geometry (`ClipView`):
the training views with the same calls on torch's generator, in the same order, as
`transforms.train_transform` makes (random resized crop, flip, grayscale), so a seed gives
the same crop box, flip and grey decision; the evaluation views as `eval_transform` cuts
them (short side resized, centre crop or three crops). The main process decodes a batch's
JPEGs in one call (`frames.decode_frame_batch`: nvJPEG on a GPU) and cuts the views there
with the torchvision kernels the CPU transforms run. The same functions with device cpu
are what the tests compare with the CPU path (frames decoded per clip in a worker).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torchvision.transforms.v2.functional as TF

from storyboard_common.errors import first_line

from .frames import decode_frame_batch
from .transforms import CROP_RATIO, CROP_SCALE, FLIP_P, GREY_P, three_crop_boxes
from .video import short_side_size


class ClipView(NamedTuple):
    """How one view is cut from its clip's decoded frames: resized to (resize_height,
    resize_width) (their own size: not resized), the box (top, left, height, width) cropped
    and resized to the output size, then flipped left-right and made grey as flagged."""

    resize_height: int
    resize_width: int
    top: int
    left: int
    height: int
    width: int
    flip: bool = False
    grey: bool = False


# --- geometry (pure) ---


def crop_size(height: int, width: int, area: float, aspect: float) -> tuple[int, int] | None:
    """(h, w) of a crop of `area` (a fraction of the frame's) at `aspect` (w / h), rounded as
    torchvision's RandomResizedCrop rounds; None when it does not fit the frame."""
    target = height * width * area
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    return (h, w) if 0 < w <= width and 0 < h <= height else None


def fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, h, w) after ten draws that did not fit: the
    centred crop of the frame with its aspect clamped to `ratio`."""
    aspect = width / height
    if aspect < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif aspect > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def centre_crop(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of torchvision's centre crop of size x size from a height x width frame."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def eval_views(height: int, width: int, size: int, short_side: int, crops: int) -> list[ClipView]:
    """A clip's evaluation views (`eval_transform`'s): the frame's short side resized to
    `short_side`, then the centre crop (crops 1) or three crops along the longer side."""
    rh, rw = short_side_size(height, width, short_side)
    corners = [centre_crop(rh, rw, size)] if crops == 1 else three_crop_boxes(rh, rw, size)
    return [ClipView(rh, rw, top, left, size, size) for top, left in corners]


# --- random draws: torchvision's, in its order, from `generator` (None: torch's global one,
# which the v2 transforms draw from; a CPU generator seeded alike gives the same numbers) ---


def draw_crop_box(
    height: int, width: int, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """RandomResizedCrop(scale CROP_SCALE, ratio CROP_RATIO)'s box (top, left, h, w) for a
    height x width frame: up to ten (area, aspect) draws, then the box's position."""
    log_ratio = torch.log(torch.tensor(CROP_RATIO))  # float32, as torchvision draws it
    for _ in range(10):
        area = torch.empty(1).uniform_(*CROP_SCALE, generator=generator).item()
        log_aspect = torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)
        size = crop_size(height, width, area, torch.exp(log_aspect).item())
        if size is not None:
            h, w = size
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    return fallback_crop(height, width, CROP_RATIO)


def draw_train_view(height: int, width: int, generator: torch.Generator | None = None) -> ClipView:
    """A training view of a height x width clip, drawn as `train_transform` draws one."""
    box = draw_crop_box(height, width, generator)
    # v2's random transforms skip when rand >= p
    flip = bool(torch.rand(1, generator=generator) < FLIP_P)
    grey = bool(torch.rand(1, generator=generator) < GREY_P)
    return ClipView(height, width, *box, flip=flip, grey=grey)


# --- what workers hand over, and the cut on the device ---


@dataclass
class EncodedClips:
    """Clips as JPEG bytes: `data` the distinct frames' bytes back to back (uint8 [N]),
    `lengths` their byte counts (int64 [F]), `slots` the frame of each view's time step
    (int64 [V, T], indices into the F frames), `views` each view's geometry, `size` the
    output side. Collated batches join them (`join`); `decode_clips` makes the clips."""

    data: torch.Tensor
    lengths: torch.Tensor
    slots: torch.Tensor
    views: list[ClipView]
    size: int

    def __len__(self) -> int:
        return len(self.views)

    @classmethod
    def of_frames(
        cls, frames: Sequence[torch.Tensor], slots: torch.Tensor, views: list[ClipView], size: int
    ) -> EncodedClips:
        """From the frames' encoded bytes (uint8 1-D tensors)."""
        lengths = torch.tensor([len(f) for f in frames], dtype=torch.int64)
        return cls(torch.cat(list(frames)), lengths, slots, views, size)

    @classmethod
    def join(cls, parts: Sequence[EncodedClips]) -> EncodedClips:
        """Several samples' clips as one batch, views in order."""
        offsets = torch.tensor([0, *(len(p.lengths) for p in parts)]).cumsum(0)
        return cls(
            torch.cat([p.data for p in parts]),
            torch.cat([p.lengths for p in parts]),
            torch.cat([p.slots + offset for p, offset in zip(parts, offsets)]),
            [view for p in parts for view in p.views],
            parts[0].size,
        )

    def pin_memory(self) -> EncodedClips:
        """Pinned bytes (the DataLoader's pin_memory calls this): a fast copy to the GPU."""
        return dataclasses.replace(self, data=self.data.pin_memory())


def cut_view(frames: torch.Tensor, view: ClipView, size: int) -> torch.Tensor:
    """uint8 [T, 3, H, W] frames, already resized to the view's resize size -> the view
    [T, 3, size, size], with the kernels of `train_transform` and `eval_transform`."""
    clip = TF.resized_crop(
        frames, view.top, view.left, view.height, view.width, [size, size], antialias=True
    )
    if view.flip:
        clip = TF.horizontal_flip(clip)
    if view.grey:
        clip = TF.rgb_to_grayscale(clip, num_output_channels=3)
    return clip


def decode_clips(clips: EncodedClips, device: torch.device) -> torch.Tensor:
    """The clips of `clips` on `device`: uint8 [V, T, 3, S, S], as the model takes them.
    Every JPEG is decoded in one batched call; a clip's frames are resized once for all the
    views that share them (the crops of an evaluation clip). ValueError when a JPEG's data
    cannot be decoded."""
    try:
        frames = decode_frame_batch(torch.split(clips.data, clips.lengths.tolist()), device)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as error:  # libjpeg's or nvJPEG's refusal of damaged data
        raise ValueError(f"cannot be decoded ({first_line(error)})") from error
    out = torch.empty(
        (len(clips), clips.slots.shape[1], 3, clips.size, clips.size),
        dtype=torch.uint8,
        device=device,
    )
    resized: dict[tuple, torch.Tensor] = {}
    for row, (slots, view) in enumerate(zip(clips.slots.tolist(), clips.views)):
        key = (tuple(slots), view.resize_height, view.resize_width)
        if key not in resized:
            clip = torch.stack([frames[i] for i in slots])
            resized[key] = TF.resize(clip, list(key[1:]), antialias=True)  # same size: as is
        out[row] = cut_view(resized[key], view, clips.size)
    return out
