"""Which frames a clip takes: TSN segment sampling (pure functions, no I/O).

The range [start, end) of L = end - start frames is cut into T segments on integer
boundaries b_k = start + floor(k * L / T), segment k = [b_k, b_{k+1}). With L >= T every
segment holds at least one frame and the segments are disjoint, so the T indices are
strictly increasing: no frame is taken twice. (A float formula such as
floor(start + (k + u) * L / T) can take the same frame for two neighbouring segments.)

* training: one uniformly random frame in each segment;
* evaluation: the centre of each segment, (b_k + b_{k+1}) // 2 (the upper middle frame
  of an even-length segment: 16 frames, T = 4 gives 2, 6, 10, 14);
* multi-view evaluation, view j of `clips`: b_k + floor((j + 0.5) / clips * len_k), so
  clips = 1 is exactly the centres. Views differ when segments hold >= `clips` frames.
"""

from __future__ import annotations

import math

import numpy as np


def _range(num_frames: int, frames: int, start: int, end: int | None) -> tuple[int, int]:
    """[start, end) clamped to the video; ValueError when it holds fewer than `frames`."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, not {frames}")
    start = max(int(start), 0)
    end = num_frames if end is None else min(int(end), num_frames)
    if end - start < frames:
        raise ValueError(f"has {max(end - start, 0)} frames in range, fewer than {frames}")
    return start, end


def _bounds(start: int, end: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment starts and lengths ([T] each) on integer boundaries."""
    edges = start + (np.arange(frames + 1, dtype=np.int64) * (end - start)) // frames
    return edges[:-1], np.diff(edges)


def segment_indices(
    num_frames: int,
    frames: int,
    train: bool,
    rng: np.random.Generator | None = None,
    start: int = 0,
    end: int | None = None,
) -> np.ndarray:
    """`frames` indices (int64) in [start, end): random per segment (train) or centres.

    `end` defaults to `num_frames`; the range is clamped to the video. ValueError when it
    holds fewer than `frames` frames (callers skip such an item) or when training has no rng.
    """
    start, end = _range(num_frames, frames, start, end)
    lows, lengths = _bounds(start, end, frames)
    if not train:
        return lows + lengths // 2
    if rng is None:
        raise ValueError("training sampling needs an rng")
    return rng.integers(lows, lows + lengths)


def clip_indices(
    num_frames: int, frames: int, clips: int = 1, start: int = 0, end: int | None = None
) -> np.ndarray:
    """[clips, frames] indices for multi-view evaluation; clips = 1 gives the centres.

    View j takes the point (j + 0.5) / clips of the way through every segment (in exact
    integer arithmetic), so views are evenly spread and each stays inside its segment.
    """
    if clips < 1:
        raise ValueError(f"clips must be at least 1, not {clips}")
    start, end = _range(num_frames, frames, start, end)
    lows, lengths = _bounds(start, end, frames)
    views = 2 * np.arange(clips, dtype=np.int64)[:, None] + 1
    return lows + (views * lengths) // (2 * clips)


_EPS = 1e-6  # seconds * fps that lands a hair off an integer is that integer


def interval_frames(
    interval_seconds: tuple[float, float] | None, fps: float, num_frames: int
) -> tuple[int, int]:
    """Seconds [t0, t1] -> the frames [start, end) that overlap it, clamped to the video.

    Frame i spans [i / fps, (i + 1) / fps), so start = floor(t0 * fps) and
    end = ceil(t1 * fps), with at least one frame for an instantaneous interval. An
    interval past the end of the video gives an empty range (the sampler then raises).
    None means the whole video.
    """
    if interval_seconds is None:
        return 0, num_frames
    t0, t1 = interval_seconds
    if not fps > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    if t1 < t0:
        raise ValueError(f"interval ends before it starts: {t0} > {t1}")
    first = math.floor(t0 * fps + _EPS)
    last = max(math.ceil(t1 * fps - _EPS), first + 1)
    start = min(max(first, 0), num_frames)
    return start, min(max(last, start), num_frames)
