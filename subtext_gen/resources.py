"""Files that ship inside the package: class lists, the storyboard world's candidate sets,
CLIP model configs. They are package data (`subtext_gen/data/`), so a clone and an
installed wheel find them the same way."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DATA_DIR = Path(str(files("subtext_gen") / "data"))
SHIPPED_PREFIX = "data/"


def data_path(*parts: str) -> Path:
    """A shipped file or folder, e.g. `data_path("clip", "TinyCLIP-test.json")`."""
    return DATA_DIR.joinpath(*parts)


def resolve_shipped(path: str) -> str:
    """`data/...` as the docs write shipped files: the file in the working directory when
    there is one, else the shipped copy (so the same flag works from any directory)."""
    if path.startswith(SHIPPED_PREFIX) and not Path(path).exists():
        shipped = DATA_DIR / path[len(SHIPPED_PREFIX) :]
        if shipped.exists():
            return str(shipped)
    return path
