"""`prepare-videos` benchmarks: clip reads from Kinetics-like raw clips against their
prepared copies, and from the copies against frame folders (`--to frames`;
`trainer/data/prepare.py`)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from testkit.videos import RAW_FPS, RAW_KEYFRAME_EVERY, RAW_SECONDS, RAW_SIZE, write_kinetics_like
from trainer.data.prepare import JPEG_QUALITY, output_size, prepare_videos
from trainer.data.sampling import segment_indices
from trainer.data.video import open_video, read_frames


def clip_reads_per_second(forms: Sequence[list[Path]], reads: int) -> list[float]:
    """8-frame training clips (TSN, one random frame per segment) read per second from each
    form of the same videos (raw, prepared copies, frame folders): `reads` of each,
    round-robin over the videos, each one `open_video` and one `read_frames` at the native
    size (as training reads), one thread. The same frames of the same video are read from
    every form, one right after the other, so a change in the machine's load hits all."""
    rng = np.random.default_rng(0)
    seconds = [0.0] * len(forms)
    for i in range(reads):
        indices = None
        for k, paths in enumerate(forms):
            start = time.perf_counter()
            reader, info = open_video(paths[i % len(paths)])
            if indices is None:  # the copies keep every frame, so the same indices exist
                indices = segment_indices(info.num_frames, 8, True, rng).tolist()
            read_frames(reader, indices)
            seconds[k] += time.perf_counter() - start
    return [reads / s for s in seconds]


def raw_and_prepared(base: Path, videos: int, workers: int = 2):
    """`videos` Kinetics-like raw clips as a `list` dataset under BASE/raw and their copies
    by `prepare-videos` (default settings) under BASE/fast -> (raw paths, prepared paths,
    the preparation's summary)."""
    raw, fast = base / "raw", base / "fast"
    (raw / "clips").mkdir(parents=True)
    names = [f"clips/v{i}.mp4" for i in range(videos)]
    for i, name in enumerate(names):
        write_kinetics_like(raw / name, seed=i)
    (raw / "classes.csv").write_text("id,name\n0,clip\n")
    (raw / "train.txt").write_text("".join(f"{name} clip\n" for name in names))
    summary = prepare_videos("list", raw, fast, workers=workers, show_progress=False)
    assert summary.prepared == videos, summary.to_json()
    return [raw / n for n in names], [fast / n for n in names], summary


def bench_prepared_decode(videos: int = 4, reads: int = 24, workers: int = 2) -> dict:
    """8-frame clip reads per second from prepared copies (default `prepare-videos`
    settings: short side 256, a keyframe every 16 frames) over those from the raw clips."""
    prepared_size = output_size(*RAW_SIZE, 256)
    with tempfile.TemporaryDirectory() as tmp:
        raw, fast, summary = raw_and_prepared(Path(tmp), videos, workers)
        raw_rate, fast_rate = clip_reads_per_second([raw, fast], reads)
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


def bench_frames_decode(videos: int = 4, reads: int = 48, workers: int = 2) -> dict:
    """8-frame clip reads per second from frame folders (`prepare-videos --to frames`,
    default settings) over those from the prepared video copies of the same raw clips, and
    the frame folders' bytes over the raw clips'."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, fast, _ = raw_and_prepared(Path(tmp), videos, workers)
        summary = prepare_videos(
            "list", Path(tmp) / "raw", Path(tmp) / "frames", workers=workers,
            show_progress=False, to="frames",
        )  # fmt: skip
        assert summary.prepared == videos, summary.to_json()
        folders = [Path(tmp) / "frames" / "clips" / path.stem for path in raw]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # per core, as in a loader worker (DataLoader sets 1 there)
        try:
            fast_rate, frames_rate = clip_reads_per_second([fast, folders], reads)
        finally:
            torch.set_num_threads(threads)
        _, frame_info = open_video(folders[0])
    return {
        "prepared_clip_reads_per_second_vs_frames": fast_rate,
        "frames_clip_reads_per_second": frames_rate,
        "frames_vs_prepared_speedup": frames_rate / fast_rate,
        "frames_bytes_ratio": summary.bytes_after / summary.bytes_before,
        "frames_gb_per_hour": summary.bytes_after / 1e9 / summary.hours,
        "frames_decode_setup": f"{videos} raw H.264 clips {_size(RAW_SIZE)}, {RAW_SECONDS} s "
        f"at {RAW_FPS} fps, as frame folders ({frame_info.width}x{frame_info.height} JPEGs, "
        f"quality {JPEG_QUALITY}, {summary.bytes_after / videos / RAW_SECONDS / 2**20:.2f} MiB "
        f"per second of video; {summary.seconds:.0f} s to write with {workers} workers) vs "
        f"their prepared copies (`prepared_decode_setup`); {reads} 8-frame training clips "
        "each, open_video + read_frames at the native size, one thread (torch too), alternating",
    }


def _mbits(total_bytes: int, videos: int) -> str:
    return f"{total_bytes * 8 / videos / RAW_SECONDS / 1e6:.2f}"


def _size(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"
