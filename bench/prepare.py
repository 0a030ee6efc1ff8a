"""`prepare-videos` benchmark: clip reads from Kinetics-like raw clips against their
prepared copies (`trainer/data/prepare.py`)."""

from __future__ import annotations

import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from trainer.data.prepare import output_size, prepare_videos
from trainer.data.sampling import segment_indices
from trainer.data.video import open_video, read_frames

RAW_SIZE = (360, 640)  # height, width
RAW_FPS = 30
RAW_SECONDS = 10
RAW_KEYFRAME_EVERY = 150


def write_raw_clip(path: Path, seed: int) -> Path:
    """A 10-second 640x360 30 fps H.264 clip with a keyframe every 150 frames, as raw
    Kinetics downloads often are: a textured scene panning, a block moving across it and
    sensor grain, encoded like a web video (x264 preset medium, crf 20: about 0.6 Mbit/s,
    in the range of YouTube's 360p streams; a flat test pattern would decode for nothing)."""
    rng = np.random.default_rng(seed)
    height, width = RAW_SIZE
    frames = RAW_FPS * RAW_SECONDS
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


def clip_reads_per_second(raw: list[Path], prepared: list[Path], reads: int) -> tuple[float, float]:
    """8-frame training clips (TSN, one random frame per segment) read per second from the
    raw videos and from their copies: `reads` of each, round-robin over the videos, each
    one open and one `get_batch`, one thread. The same frames of the same video are read
    from both, one right after the other, so a change in the machine's load hits both."""
    rng = np.random.default_rng(0)
    seconds = [0.0, 0.0]
    for i in range(reads):
        indices = None
        for k, path in enumerate((raw[i % len(raw)], prepared[i % len(prepared)])):
            start = time.perf_counter()
            reader, info = open_video(path)
            if indices is None:  # the copies keep every frame, so the same indices exist
                indices = segment_indices(info.num_frames, 8, True, rng).tolist()
            read_frames(reader, indices)
            seconds[k] += time.perf_counter() - start
    return reads / seconds[0], reads / seconds[1]


def bench_prepared_decode(videos: int = 4, reads: int = 24, workers: int = 2) -> dict:
    """8-frame clip reads per second from prepared copies (default `prepare-videos`
    settings: short side 256, a keyframe every 16 frames) over those from the raw clips."""
    prepared_size = output_size(*RAW_SIZE, 256)
    with tempfile.TemporaryDirectory() as tmp:
        raw, fast = Path(tmp) / "raw", Path(tmp) / "fast"
        (raw / "clips").mkdir(parents=True)
        names = [f"clips/v{i}.mp4" for i in range(videos)]
        for i, name in enumerate(names):
            write_raw_clip(raw / name, seed=i)
        (raw / "classes.csv").write_text("id,name\n0,clip\n")
        (raw / "train.txt").write_text("".join(f"{name} clip\n" for name in names))
        summary = prepare_videos("list", raw, fast, workers=workers, show_progress=False)
        assert summary.prepared == videos, summary.to_json()
        raw_rate, fast_rate = clip_reads_per_second(
            [raw / n for n in names], [fast / n for n in names], reads
        )
    return {
        "raw_clip_reads_per_second": raw_rate,
        "prepared_clip_reads_per_second": fast_rate,
        "prepared_decode_speedup": fast_rate / raw_rate,
        "prepared_bytes_ratio": summary.bytes_after / summary.bytes_before,
        "prepared_decode_setup": f"{videos} raw H.264 clips {_size(RAW_SIZE)}, "
        f"{RAW_SECONDS} s at {RAW_FPS} fps, a keyframe every {RAW_KEYFRAME_EVERY} frames "
        f"({_mbits(summary.bytes_before, videos)} Mbit/s) vs prepared "
        f"({_size(prepared_size)}, a keyframe every 16, "
        f"{_mbits(summary.bytes_after, videos)} Mbit/s; {summary.seconds:.0f} s to prepare "
        f"with {workers} workers); {reads} 8-frame training clips each, open + get_batch, "
        "one thread, raw and prepared reads alternating",
    }


def _mbits(total_bytes: int, videos: int) -> str:
    return f"{total_bytes * 8 / videos / RAW_SECONDS / 1e6:.2f}"


def _size(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"
