import os
from pathlib import Path

import pytest

# No hub, no network: libraries must not try (and wait for) downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP_CONFIG = REPO / "data" / "clip" / "TinyCLIP-test.json"


@pytest.fixture(scope="session")
def tiny_clip():
    """A randomly initialised tiny open_clip model, built through the project's loader."""
    import torch

    from subtext_gen.clip_text import load_clip

    torch.manual_seed(0)
    return load_clip(str(TINY_CLIP_CONFIG), "none", "cpu")


@pytest.fixture()
def class_csv(tmp_path):
    def write(names):
        path = tmp_path / "classes.csv"
        path.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
        return path

    return write
