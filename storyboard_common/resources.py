"""Files that ship inside the package: class lists, the storyboard world's candidate sets,
CLIP model configs. They are package data (`storyboard_common/data/`), so a clone and an
installed wheel find them the same way."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

DATA_DIR = Path(str(files("storyboard_common") / "data"))
# How the docs write a shipped file: its path in a clone, or an older one (the files lived
# in `subtext_gen/data/`, before that in `data/`), so existing commands keep working.
SHIPPED_PREFIXES = ("storyboard_common/data/", "subtext_gen/data/", "data/")


def data_path(*parts: str) -> Path:
    """A shipped file or folder, e.g. `data_path("clip", "TinyCLIP-test.json")`."""
    return DATA_DIR.joinpath(*parts)


def resolve_shipped(path: str | os.PathLike) -> Path:
    """A shipped file as the docs write it (`storyboard_common/data/...` or an older path): the file
    in the working directory when there is one, else the installed copy, so the same flag
    works from any directory. Any other path is returned as given."""
    given = Path(path)
    if not given.exists():
        text = given.as_posix()
        for prefix in SHIPPED_PREFIXES:
            if text.startswith(prefix) and (DATA_DIR / text[len(prefix) :]).exists():
                return DATA_DIR / text[len(prefix) :]
    return given
