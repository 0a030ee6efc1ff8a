"""Data-layer benchmark: the training loader against the raw decord decode limit."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from testkit.videos import write_video
from trainer.data.dataset import ClipSpec, EpochSampler, VideoClipDataset, make_loader
from trainer.data.items import VideoItem
from trainer.data.sampling import segment_indices
from trainer.data.video import open_video, read_frames


def bench_loader(videos: int = 24, frames: int = 8, workers: int = 2, epochs: int = 3) -> dict:
    """Clips of `frames` frames per second: raw `get_batch` decode (one process, native size)
    vs the training loader (`workers` workers, resize, random crop, flip, normalise)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [
            write_video(Path(tmp) / f"v{i}.mp4", frames=96, width=320, height=240, fps=25)
            for i in range(videos)
        ]
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(epochs):
            for path in paths:
                reader, info = open_video(path)
                read_frames(reader, segment_indices(info.num_frames, frames, True, rng).tolist())
        decode_rate = videos * epochs / (time.perf_counter() - start)

        items = [VideoItem(p, p.stem, (0,)) for p in paths]
        dataset = VideoClipDataset(items, 1, False, ClipSpec(frames=frames))
        sampler = EpochSampler(len(items), shuffle=True)
        loader = make_loader(dataset, batch_size=4, sampler=sampler, workers=workers)
        for _ in loader:  # epoch 0 starts the workers and fills the page cache, untimed
            pass
        start = time.perf_counter()
        clips = 0
        for epoch in range(epochs):
            sampler.set_epoch(epoch + 1)
            for batch in loader:
                clips += len(batch["video_ids"])
        loader_rate = clips / (time.perf_counter() - start)
    return {
        "decode_clips_per_second": decode_rate,
        "loader_clips_per_second": loader_rate,
        "loader_vs_decode": loader_rate / decode_rate,
        "loader_setup": f"{videos} mp4 videos 320x240, {frames}-frame clips, {workers} workers, "
        "batch 4, 224 px training transform",
    }
