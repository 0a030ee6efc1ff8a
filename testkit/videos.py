"""Tiny videos written by the tests (PyAV, mpeg4): frame i is a flat grey of level 8*i + 16.

`frame_level(frame)` recovers i from a decoded frame, so tests can check which frames a
reader returned.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(
    path: Path,
    frames: int = 16,
    width: int = 64,
    height: int = 48,
    fps: int = 8,
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
):
    """Write a video; `tint` scales the grey level per RGB channel (tinted frames are
    for telling classes apart, not for `frame_level`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "1"}  # near-lossless, so grey levels survive
        for i in range(frames):
            level = min(8 * i + 16, 255)
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[:] = (np.asarray(tint) * level).clip(0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_level(frame) -> int:
    """The index i of a frame written by `write_video` (from its mean grey level)."""
    return int(round((float(np.asarray(frame, dtype=np.float32).mean()) - 16) / 8))


def write_corrupt(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    return path


def write_h264(
    path: Path,
    seconds: float = 10.0,
    fps: int = 30,
    width: int = 640,
    height: int = 360,
    keyframe_every: int = 150,
    seed: int = 0,
) -> Path:
    """An H.264 (libx264, yuv420p) clip shaped like a Kinetics download: a keyframe every
    `keyframe_every` frames and moving content (a drifting gradient, a moving square and
    grain), so inter frames cost what real ones do to decode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(height), np.arange(width)).astype(np.float32)
    grain = rng.normal(0, 6, size=(7, height, width, 1)).astype(np.float32)  # cycled
    side = max(8, height // 4)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "preset": "veryfast",
            "crf": "23",
            "g": str(keyframe_every),
            "keyint_min": str(keyframe_every),
            "sc_threshold": "0",
        }
        for i in range(int(seconds * fps)):
            level = (ramp * 0.25 + 3.0 * i) % 256
            image = np.repeat(level[:, :, None], 3, axis=2)
            top, left = (7 * i) % (height - side), (11 * i) % (width - side)
            image[top : top + side, left : left + side] = (40, 200, 90)
            image += grain[i % len(grain)]
            frame = av.VideoFrame.from_ndarray(image.clip(0, 255).astype(np.uint8), "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
