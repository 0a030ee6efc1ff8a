"""Tiny videos written by the tests (PyAV, mpeg4): frame i is a flat grey of level 8*i + 16.

`frame_level(frame)` recovers i from a decoded frame, so tests can check which frames a
reader returned.
"""

from __future__ import annotations

from fractions import Fraction
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


# A raw Kinetics download as the benchmarks imitate it.
RAW_SIZE = (360, 640)  # height, width
RAW_FPS = 30
RAW_SECONDS = 10
RAW_KEYFRAME_EVERY = 150


def write_kinetics_like(
    path: Path, seed: int = 0, size: tuple[int, int] = RAW_SIZE, seconds: int = RAW_SECONDS
) -> Path:
    """A 10-second 640x360 30 fps H.264 clip with a keyframe every 150 frames, as raw
    Kinetics downloads often are: a textured scene panning, a block moving across it and
    sensor grain, encoded like a web video (x264 preset medium, crf 20: about 0.6 Mbit/s,
    in the range of YouTube's 360p streams; a flat test pattern would decode for nothing).
    `size` (height, width) and `seconds` make smaller clips of the same kind."""
    rng = np.random.default_rng(seed)
    height, width = size
    frames = RAW_FPS * seconds
    coarse = rng.uniform(0, 255, (height // 8 + 1, (width + frames) // 8 + 1, 3))
    scene = np.kron(coarse, np.ones((8, 8, 1)))[:height, : width + frames]
    for axis in (0, 1):  # soften the 8-px blocks into gradients
        scene = (scene + np.roll(scene, 4, axis) + np.roll(scene, -4, axis)) / 3
    fine = rng.normal(0, 12, (height // 2 + 1, (width + frames) // 2 + 1, 1))
    scene = (scene + np.kron(fine, np.ones((2, 2, 1)))[:height, : width + frames]).astype(
        np.float32
    )
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(RAW_FPS))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "crf": "20",
            "preset": "medium",
            "x264-params": f"keyint={RAW_KEYFRAME_EVERY}:min-keyint={RAW_KEYFRAME_EVERY}"
            ":scenecut=0",
        }
        for t in range(frames):
            image = scene[:, t : t + width].copy()
            y, x = 40 + int(100 * np.sin(t / 20)), int(40 + 1.5 * t)
            image[y : y + 80, x : x + 80] = (230, 60, 40)
            image += 3 * rng.standard_normal(image.shape, dtype=np.float32)
            frame = av.VideoFrame.from_ndarray(image.clip(0, 255).astype(np.uint8), "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(
    folder: Path, frames: int = 16, width: int = 64, height: int = 48, fps: float | None = 8.0
) -> Path:
    """A frame folder (`trainer/data/frames.py`) of flat grey JPEGs, frame i at level
    8*i + 16 as `write_video` writes them (`frame_level` reads them back), with `fps` in
    its fps file (None: none, as BIKE and mmaction2 write folders)."""
    import torch

    from testkit.frame_folders import write_jpegs
    from trainer.data.frames import FPS_FILE, fps_text

    levels = torch.tensor([min(8 * i + 16, 255) for i in range(frames)], dtype=torch.uint8)
    folder = write_jpegs(folder, levels.view(-1, 1, 1, 1).expand(-1, 3, height, width), 95)
    if fps is not None:
        (folder / FPS_FILE).write_text(fps_text(fps))
    return folder
