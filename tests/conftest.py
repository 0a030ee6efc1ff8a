"""Fixtures every test folder shares; plain helpers live in `testkit` (no test imports
another test module, nor this file)."""

import os

import pytest

from testkit.cli import TINY_CLIP_CONFIG
from testkit.list_runs import CLASSES, TINTS

# No hub, no network: libraries must not try (and wait for) downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
