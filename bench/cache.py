"""Frozen-feature cache: a frozen training epoch from the cache against one from videos."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from subtext_gen.clip_text import load_clip
from subtext_gen.resources import data_path
from tests.list_dataset import write_list_dataset
from trainer.config import RunConfig
from trainer.engine import cache_features, train

# The smallest CLIP the project trains with (`make demo`): 64 px, 3 layers, width 128.
WORLD_CLIP = data_path("clip", "StoryboardWorld-CLIP.json")
CLASSES = ["red rise", "green rise", "blue rise", "grey rise"]
TINTS = [(1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.2, 0.2, 1.0), (1.0, 1.0, 1.0)]


def _epoch_seconds(run_dir: Path) -> float:
    """Mean training time of the epochs after the first (which starts the workers)."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = [x["seconds"] for x in lines if "train_loss" in x][1:]
    return sum(seconds) / len(seconds)


def bench_cache(per_class: int = 24, epochs: int = 4, workers: int = 2) -> dict:
    """Frozen `coarse+fine` runs with the demo's world CLIP, 8 frames, batch 8: epoch time
    from videos (`workers` loader workers) over epoch time from a float16 cache."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        torch.manual_seed(0)
        world = write_list_dataset(base, load_clip(str(WORLD_CLIP), "none", "cpu"), WORLD_CLIP,
                                   CLASSES, TINTS, per_class, frames=48, width=320,
                                   height=240, fps=25)  # fmt: skip
        cfg = dict(dataset="list", root=world["root"], subtexts=world["subtexts"],
                   clip_model=str(WORLD_CLIP), clip_pretrained=str(world["ckpt"]), frames=8,
                   epochs=epochs, batch_size=8, workers=workers, device="cpu",
                   freeze_backbone=True)  # fmt: skip
        train(RunConfig(**cfg, out=base / "videos"), show_progress=False)
        start = time.perf_counter()
        cache_features(RunConfig(**cfg), base / "cache", views=epochs, show_progress=False)
        cache_seconds = time.perf_counter() - start
        train(RunConfig(**cfg, out=base / "cached", features=base / "cache"), show_progress=False)
        uncached, cached = _epoch_seconds(base / "videos"), _epoch_seconds(base / "cached")
    videos = len(CLASSES) * per_class
    return {
        "uncached_frozen_epoch_seconds": uncached,
        "cached_frozen_epoch_seconds": cached,
        "cache_speedup": uncached / cached,
        "cache_build_seconds": cache_seconds,
        "cache_setup": f"{videos} training videos 320x240 mp4, StoryboardWorld CLIP (64 px, 3 "
        f"layers), 8 frames, batch 8, {workers} workers uncached, {epochs} views, float16, "
        f"epochs 2-{epochs} timed",
    }
