"""Clip transforms: one set of random parameters for all frames of a clip.

torchvision's v2 transforms treat the leading dimensions of a [T, C, H, W] tensor as a
batch and draw their random parameters once per call (from torch's global generator), so
every frame of a clip gets the same crop, flip and grayscale decision, and a clip is
reproducible under `torch.manual_seed`. The tests check both.

Clips stay uint8 by default: a quarter of the bytes between loader processes, and
`normalise_clips` turns them into CLIP's input on the device. `normalize=True` gives the
float, CLIP-normalised clip straight from the transform instead.
Resizing runs on uint8 in channels-last layout (the [T, H, W, 3] input permuted, no
copy), which is torch's fast antialiased path.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The training augmentation (`train_transform`; `device_transforms` draws the same).
CROP_SCALE = (0.08, 1.0)  # area of the random crop, as a fraction of the frame's
CROP_RATIO = (3 / 4, 4 / 3)  # its aspect ratio, width / height
FLIP_P = 0.5
GREY_P = 0.2


def clip_pixel_stats(device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's pixel mean and std, each float32 [3, 1, 1] on `device`."""
    mean = torch.tensor(CLIP_MEAN, device=device).view(3, 1, 1)
    return mean, torch.tensor(CLIP_STD, device=device).view(3, 1, 1)


def normalise_clips(
    frames: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 [..., 3, H, W]: x / 255, then CLIP's mean and std.
    `stats`: (mean, std) already on the frames' device (a model's buffers); without them
    they are made here, a host-to-device copy on a GPU."""
    mean, std = stats if stats is not None else clip_pixel_stats(frames.device)
    return (frames.float() / 255 - mean) / std


class _ToClip(torch.nn.Module):
    """uint8 [T, H, W, 3] -> [T, 3, H, W] as a view (channels-last strides)."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames [T, H, W, 3], got {tuple(frames.shape)}")
        return frames.permute(0, 3, 1, 2)


class _Finish(torch.nn.Module):
    """Contiguous output; optionally float and CLIP-normalised."""

    def __init__(self, normalize: bool):
        super().__init__()
        self.normalize = normalize

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        clip = clip.contiguous()
        return normalise_clips(clip) if self.normalize else clip


def three_crop_boxes(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of three size x size crops of a height x width frame along its longer
    side (start, centre, end), centred on the shorter one, as in the usual 3-crop testing."""
    if min(height, width) < size:
        raise ValueError(f"a {height}x{width} clip is smaller than the {size} px crops")
    if width >= height:
        top = (height - size) // 2
        return [(top, left) for left in (0, (width - size) // 2, width - size)]
    left = (width - size) // 2
    return [(top, left) for top in (0, (height - size) // 2, height - size)]


class _ThreeCrop(torch.nn.Module):
    """`three_crop_boxes`' crops: [..., H, W] -> [3, ..., size, size]."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        s = self.size
        boxes = three_crop_boxes(*clip.shape[-2:], s)
        return torch.stack([clip[..., t : t + s, x : x + s] for t, x in boxes])


def _check_sizes(size: int, short_side: int) -> None:
    if size < 1 or short_side < size:
        raise ValueError(f"need 1 <= size <= short_side, got size {size}, short side {short_side}")


def train_transform(
    size: int = 224, short_side: int | None = None, normalize: bool = False
) -> v2.Compose:
    """[T, H, W, 3] uint8 -> [T, 3, size, size]: random resized crop (area 0.08-1, aspect
    3/4-4/3), horizontal flip p = 0.5, grayscale p = 0.2; uint8, or float CLIP-normalised
    with `normalize`.

    The recipe's "short side 256" first is left out by default (`short_side=None`): the crop
    is drawn as a fraction of the frame's area and aspect, so cropping the native frame
    gives the same distribution of crops as cropping a 256-resized one (up to pixel
    rounding), from sharper pixels and without a full-frame resize per clip.
    """
    steps = [_ToClip()]
    if short_side is not None:
        _check_sizes(size, short_side)
        steps.append(v2.Resize(short_side, antialias=True))
    return v2.Compose(
        [
            *steps,
            v2.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
            v2.RandomHorizontalFlip(FLIP_P),
            v2.RandomGrayscale(GREY_P),
            _Finish(normalize),
        ]
    )


def eval_transform(
    size: int = 224, short_side: int = 224, crops: int = 1, normalize: bool = False
) -> v2.Compose:
    """Short side to `short_side` (224 or 256), then a centre crop -> [T, 3, S, S], or
    three crops along the longer side (`crops=3`) -> [3, T, 3, S, S]; uint8, or float
    CLIP-normalised with `normalize`."""
    _check_sizes(size, short_side)
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, not {crops}")
    crop = v2.CenterCrop(size) if crops == 1 else _ThreeCrop(size)
    return v2.Compose([_ToClip(), v2.Resize(short_side, antialias=True), crop, _Finish(normalize)])
