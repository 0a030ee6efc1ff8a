"""Frozen-feature cache: a frozen training epoch from the cache against one from videos, the
cache built by 2 torchrun ranks against 1, and the decoding of many training views per
video from one open against one open per view."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from storyboard_common.clip import load_clip
from storyworld import WORLD_CLIP
from testkit.list_dataset import write_list_dataset
from testkit.torchrun import torchrun_cache_features
from trainer.cache.build import cache_features
from trainer.cache.store import SHARDS_DIR, file_crc32
from trainer.data.dataset import ClipSpec, VideoClipDataset
from trainer.data.items import VideoItem
from trainer.report import read_metrics
from trainer.settings import RunConfig
from trainer.training import train

from .prepare import raw_and_prepared

CLASSES = ["red rise", "green rise", "blue rise", "grey rise"]
TINTS = [(1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.2, 0.2, 1.0), (1.0, 1.0, 1.0)]


def _epoch_seconds(run_dir: Path) -> float:
    """Mean training time of the epochs after the first (which starts the workers)."""
    seconds = [x["seconds"] for x in read_metrics(run_dir) if "train_loss" in x][1:]
    return sum(seconds) / len(seconds)


def _videos(base: Path, per_class: int) -> dict:
    """The benchmark's list dataset: 4 classes x `per_class` 320x240 mp4 videos of 48
    frames, with sub-texts and a checkpoint of the world CLIP."""
    torch.manual_seed(0)
    return write_list_dataset(
        base,
        load_clip(str(WORLD_CLIP), "none", "cpu"),
        WORLD_CLIP,
        CLASSES,
        TINTS,
        per_class,
        frames=48,
        width=320,
        height=240,
        fps=25,
    )


def bench_cache(per_class: int = 24, epochs: int = 4, workers: int = 2) -> dict:
    """Frozen `coarse+fine` runs with the demo's world CLIP, 8 frames, batch 8: epoch time
    from videos (`workers` loader workers) over epoch time from a float16 cache."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        world = _videos(base, per_class)
        cfg = dict(
            dataset="list",
            root=world["root"],
            subtexts=world["subtexts"],
            clip_model=str(WORLD_CLIP),
            clip_pretrained=str(world["ckpt"]),
            frames=8,
            epochs=epochs,
            batch_size=8,
            workers=workers,
            device="cpu",
            freeze_backbone=True,
        )
        train(RunConfig(**cfg, out=base / "videos"), show_progress=False)
        start = time.perf_counter()
        cache_features(RunConfig(**cfg), base / "cache", views=epochs, show_progress=False)
        cache_seconds = time.perf_counter() - start
        train(RunConfig(**cfg, out=base / "cached", features=base / "cache"), show_progress=False)
        uncached, cached = _epoch_seconds(base / "videos"), _epoch_seconds(base / "cached")
        crc_seconds = _crc_seconds(sorted((base / "cache" / SHARDS_DIR).iterdir()))
    videos = len(CLASSES) * per_class
    return {
        "uncached_frozen_epoch_seconds": uncached,
        "cached_frozen_epoch_seconds": cached,
        "cache_speedup": uncached / cached,
        "cache_build_seconds": cache_seconds,
        # a reader checks every shard's CRC-32 once a process: once a run, in its first epoch
        "cache_crc_seconds": crc_seconds,
        "cache_crc_share_of_cached_epoch": crc_seconds / cached,
        "cache_setup": f"{videos} training videos 320x240 mp4, StoryboardWorld CLIP (64 px, 3 "
        f"layers), 8 frames, batch 8, {workers} workers uncached, {epochs} views, float16, "
        f"epochs 2-{epochs} timed",
    }


def _crc_seconds(paths: list[Path], repeats: int = 5) -> float:
    """The least time of `repeats` CRC-32 checks of every file of `paths` (in the page
    cache, as a cached run reads them)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            file_crc32(path)
        times.append(time.perf_counter() - start)
    return min(times)


def bench_shard_crc(rows: int = 1024, frames: int = 8, dim: int = 512) -> dict:
    """MB/s of the CRC-32 check a cache reader makes of each shard it opens, on a full
    float16 shard of ViT-B/16 frame features (1024 views x 8 frames x 512: 8 MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "train-00000.npy"
        features = np.random.default_rng(0).standard_normal((rows, frames, dim))
        np.save(shard, features.astype(np.float16))
        seconds = _crc_seconds([shard], repeats=20)
        size = shard.stat().st_size
    return {
        "shard_crc_mb_per_second": size / seconds / 1e6,
        "shard_crc_setup": f"zlib.crc32 over a {size / 1e6:.1f} MB float16 shard "
        f"({rows} views x {frames} frames x {dim}) in the page cache, 4 MiB reads, best of 20",
    }


def _torchrun_cache(world: dict, out: Path, ranks: int, workers: int, views: int) -> float:
    """Seconds `torchrun --nproc_per_node RANKS -m trainer cache-features` spends encoding
    and merging (its `--json` summary: after start-up and model loading)."""
    flags = {
        "dataset": "list",
        "root": world["root"],
        "clip_model": WORLD_CLIP,
        "clip_pretrained": world["ckpt"],
        "frames": 8,
        "views": views,
        "batch_size": 8,
        "workers": workers,
        "out": out,
    }
    return torchrun_cache_features(ranks, flags)["seconds"]


def bench_cache_ranks(per_class: int = 24, views: int = 4, workers: int = 2) -> dict:
    """The same cache built by 2 torchrun ranks (gloo, `workers // 2` loader workers each)
    and by 1 rank (`workers` loader workers): the same number of decoding processes."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        world = _videos(base, per_class)
        one = _torchrun_cache(world, base / "one", 1, workers, views)
        two = _torchrun_cache(world, base / "two", 2, max(1, workers // 2), views)
    cores = len(os.sched_getaffinity(0))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return {
        "cache_build_seconds_1_rank": one,
        "cache_build_seconds_2_ranks": two,
        "cache_build_ranks_speedup": one / two,
        "cache_build_ranks_setup": f"{len(CLASSES) * per_class} training videos x {views} "
        f"views + test views, 320x240 mp4, StoryboardWorld CLIP, 8 frames, batch 8, on "
        f"{cores} cores ({device}): 2 gloo ranks x {max(1, workers // 2)} loader workers vs "
        f"1 rank x {workers}; encoding and merging timed, start-up not",
    }


def _decoded(clip: torch.Tensor) -> torch.Tensor:
    """The decoded frames as they are: the bench times decoding, not the training crop."""
    return clip


def _views_seconds(dataset: VideoClipDataset, views: int, together: bool) -> float:
    """Seconds to read every item's first `views` training clips: one `views` call per
    video (one open, sorted batch reads), or one open and read per clip."""
    start = time.perf_counter()
    for index in range(len(dataset)):
        if together:
            dataset.views(index, range(views))
        else:
            for view in range(views):
                dataset[(view, index)]
    return time.perf_counter() - start


def bench_cache_views(videos: int = 4, views: int = 8, frames: int = 8) -> dict:
    """A cache build's decoding of `views` training views per video: one open per video
    (`VideoClipDataset.views`, as `cache-features` reads) vs one open per view, decode time
    only, on Kinetics-like raw clips (640x360, a keyframe every 150 frames) and on their
    copies by `prepare-videos` (short side 256, a keyframe every 16), where a view's own
    read is already cheap."""
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared, _ = raw_and_prepared(Path(tmp), videos)
        for name, paths in (("raw", raw), ("prepared", prepared)):
            items = [VideoItem(path, f"{name}{i}", (0,)) for i, path in enumerate(paths)]
            dataset = VideoClipDataset(items, 1, False, ClipSpec(frames=frames))
            dataset.transform = _decoded
            per_view = _views_seconds(dataset, views, together=False)
            per_video = _views_seconds(dataset, views, together=True)
            figures[name] = per_view / per_video
    return {
        "cache_views_decode_speedup": figures["raw"],
        "cache_views_decode_speedup_prepared": figures["prepared"],
        "cache_views_setup": f"{videos} videos x {views} training views of {frames} frames: "
        "Kinetics-like raw clips (10 s, 640x360, 30 fps, a keyframe every 150 frames) and "
        "their prepared copies (456x256, every 16); one open and sorted batch reads per "
        "video vs one open and read per view, decoding only",
    }
