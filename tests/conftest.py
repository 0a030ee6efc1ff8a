import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storyboard_common.resources import data_path
from trainer.cache import build as cache_build
from trainer.cache.build import cache_features
from trainer.config import RunConfig
from trainer.model.video_clip import encode_frames

# No hub, no network: libraries must not try (and wait for) downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP_CONFIG = data_path("clip", "TinyCLIP-test.json")
CLASSES = ["red rise", "green rise", "blue rise"]


def cli(*args, env=None):
    """`python -m subtext_gen ARGS` in a subprocess, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "subtext_gen", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


TINTS = [(1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.2, 0.2, 1.0)]


@pytest.fixture()
def hub_env(monkeypatch, tmp_path):
    """huggingface_hub as a process started with HF_ENDPOINT, HF_HUB_OFFLINE and an empty
    HF_HUB_CACHE would see them (it reads them once, at import): -> `use(endpoint,
    offline=False)`, which sets them for this test and returns the cache folder."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"

    def use(endpoint: str, offline: bool = False):
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        return cache

    return use


@pytest.fixture(scope="session")
def tiny_clip():
    """A randomly initialised tiny open_clip model, built through the project's loader."""
    import torch

    from storyboard_common.clip import load_clip

    torch.manual_seed(0)
    return load_clip(str(TINY_CLIP_CONFIG), "none", "cpu")


@pytest.fixture()
def class_csv(tmp_path):
    def write(names):
        path = tmp_path / "classes.csv"
        path.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
        return path

    return write


@pytest.fixture(scope="session")
def world(tmp_path_factory, tiny_clip):
    """Videos in the generic list layout (3 classes, 3 train and 1 test video each), the
    tiny CLIP's checkpoint and its scored sub-texts (read-only: tests write elsewhere)."""
    from testkit.list_dataset import write_list_dataset

    return write_list_dataset(
        tmp_path_factory.mktemp("world"),
        tiny_clip,
        TINY_CLIP_CONFIG,
        CLASSES,
        TINTS,
        3,
        frames=12,
        width=64,
        height=48,
    )


def run_app(app, *args):
    """A typer app (`subtext_gen.__main__.app`, `trainer.__main__.app`) run in this process on
    ARGS -> (exit code, its output (stdout and stderr), the UserError or None): a UserError is
    what the CLI prints as its one-line `error: ...` with exit status 2."""
    from typer.testing import CliRunner

    from storyboard_common.errors import UserError

    done = CliRunner().invoke(app, [str(a) for a in args])
    error = done.exception if isinstance(done.exception, UserError) else None
    if done.exception is not None and error is None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return done.exit_code, done.output, error


# ---------------------------------------------------------------- runs of the tiny list world

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


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


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
