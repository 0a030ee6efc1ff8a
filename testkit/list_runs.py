"""Runs of the tiny list world (`tests/conftest.py`'s `world` fixture, written by
`testkit.list_dataset`): its classes and tints, the `run` command line, its `RunConfig`, a
frozen-tower run and the feature cache it encodes, and an encoder that counts (or crashes)."""

from __future__ import annotations

import sys

from testkit.cli import TINY_CLIP_CONFIG
from trainer.cache import build as cache_build
from trainer.cache.build import cache_features
from trainer.model.video_clip import encode_frames
from trainer.settings import RunConfig

CLASSES = ["red rise", "green rise", "blue rise"]
TINTS = [(1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.2, 0.2, 1.0)]
TRAIN_VIDEOS, TEST_VIDEOS = 9, 3  # videos of the list world's train and test splits


def run_args(world, out, epochs=4, aggregation="coarse+fine"):
    return [
        sys.executable,
        "-m",
        "trainer",
        "run",
        "--dataset",
        "list",
        "--root",
        str(world["root"]),
        "--subtexts",
        str(world["subtexts"]),
        "--clip-model",
        str(TINY_CLIP_CONFIG),
        "--clip-pretrained",
        str(world["ckpt"]),
        "--frames",
        "4",
        "--epochs",
        str(epochs),
        "--batch-size",
        "3",
        "--lr",
        "2e-3",
        "--warmup-epochs",
        "1",
        "--aggregation",
        aggregation,
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--seed",
        "1",
    ]


def run_config(world, out, **overrides) -> RunConfig:
    """A 1-epoch run of the tiny list world into `out`."""
    settings = dict(
        dataset="list",
        root=world["root"],
        subtexts=world["subtexts"],
        clip_model=str(TINY_CLIP_CONFIG),
        clip_pretrained=str(world["ckpt"]),
        frames=4,
        epochs=1,
        batch_size=3,
        lr=2e-3,
        warmup_epochs=1,
        workers=0,
        device="cpu",
        seed=1,
        out=out,
    )
    return RunConfig(**{**settings, **overrides})


def frozen_config(world, **overrides) -> RunConfig:
    """A frozen-tower run of the tiny list world (2 epochs, no folder): what caches encode."""
    return run_config(world, **{"out": None, "epochs": 2, "freeze_backbone": True, **overrides})


def make_cache(world, out, views=2, dtype="float32", shard_rows=4, **overrides) -> dict:
    return cache_features(
        frozen_config(world, **overrides),
        out,
        views=views,
        dtype=dtype,
        shard_rows=shard_rows,
        show_progress=False,
    )


def counting_encoder(monkeypatch, crash_after: int | None = None) -> list[int]:
    """Count the clips each encoder call gets; raise ("killed") on call `crash_after + 1`."""
    clips_encoded = []

    def counted(visual, clips):
        if len(clips_encoded) == crash_after:
            raise RuntimeError("killed")
        clips_encoded.append(len(clips))
        return encode_frames(visual, clips)

    monkeypatch.setattr(cache_build, "encode_frames", counted)
    return clips_encoded
