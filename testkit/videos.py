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
    audio: bool = False,
):
    """Write a video; `tint` scales the grey level per RGB channel (tinted frames are
    for telling classes apart, not for `frame_level`); `audio` adds a silent AAC track."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "1"}  # near-lossless, so grey levels survive
        if audio:
            _write_silence(container, seconds=frames / fps)
        for i in range(frames):
            level = min(8 * i + 16, 255)
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[:] = (np.asarray(tint) * level).clip(0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _write_silence(container, seconds: float, rate: int = 8000) -> None:
    sound = container.add_stream("aac", rate=rate)
    sound.layout = "mono"
    samples = 1024  # one AAC frame
    for start in range(0, int(seconds * rate), samples):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, samples), dtype=np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = rate, start
        for packet in sound.encode(frame):
            container.mux(packet)
    for packet in sound.encode():
        container.mux(packet)


def frame_level(frame) -> int:
    """The index i of a frame written by `write_video` (from its mean grey level)."""
    return int(round((float(np.asarray(frame, dtype=np.float32).mean()) - 16) / 8))


def write_corrupt(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    return path
