"""The datasets in their official layouts, read into `SplitList`s (existence checks only).

`load_split(dataset, root, split, fold, videos)` is the one entry point; each module also
has a `load` with dataset-specific options (e.g. a class list for miniature copies).
"""

from __future__ import annotations

from pathlib import Path

from storyboard_common.errors import UserError

from ..items import SplitList
from . import charades, generic, hmdb51, kinetics, ssv2, ucf101

DATASETS = ("hmdb51", "ucf101", "k400", "k600", "ssv2", "charades", "list")

_SPLITS: dict[str, list[tuple[str, int | None]]] = {
    "hmdb51": [(s, f) for f in (1, 2, 3) for s in hmdb51.SPLITS],
    "ucf101": [(s, f) for f in (1, 2, 3) for s in ucf101.SPLITS],
    "k400": [(s, None) for s in kinetics.SPLITS],
    "k600": [(s, None) for s in kinetics.SPLITS],
    "ssv2": [(s, None) for s in ssv2.SPLITS],
    "charades": [(s, None) for s in charades.SPLITS],
    "list": [(s, None) for s in generic.SPLITS],
}


def dataset_name(dataset: str) -> str:
    """`--dataset` as one of DATASETS (any case), or a UserError naming the choices."""
    name = str(dataset).strip().lower()
    if name not in DATASETS:
        raise UserError(f"unknown --dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    return name


def available_splits(
    dataset: str, root: Path | None = None, videos: Path | None = None
) -> list[tuple[str, int | None]]:
    """The (split, fold) pairs a dataset defines, e.g. [("train", 1), ("test", 1), ...].

    With `root`, only the pairs whose files are there (`absent_files`: a partial download,
    e.g. Kinetics without test.csv or with the validation videos only); with none at all,
    every pair, so loading says what is missing.
    """
    name = dataset_name(dataset)
    pairs = list(_SPLITS[name])
    if root is None:
        return pairs
    found = [(s, f) for s, f in pairs if absent_files(name, root, s, f, videos) is None]
    return found or pairs


def absent_files(
    dataset: str, root: Path, split: str, fold: int | None, videos: Path | None = None
) -> str | None:
    """None when a split's own files are under `root`, else what is missing, relative to
    `root` (e.g. "test.csv") or to the video folder (Kinetics' per-split folders, e.g.
    "video folder train/"). Files every split needs (class lists) are not looked at here:
    without them loading any split names them."""
    name = dataset_name(dataset)
    root = Path(root).expanduser()
    if name in ("k400", "k600"):
        return kinetics.absent(root, split, fold) or kinetics.absent_videos(root, split, videos)
    module = {
        "hmdb51": hmdb51,
        "ucf101": ucf101,
        "ssv2": ssv2,
        "charades": charades,
        "list": generic,
    }[name]
    return module.absent(root, split, fold)


def test_split(dataset: str) -> str:
    """The split a dataset is evaluated on: Kinetics' and SSv2's validation set, else its test
    set."""
    return "val" if dataset_name(dataset) in ("k400", "k600", "ssv2") else "test"


def folds(dataset: str, split: str | None) -> list[int | None]:
    """`--split 1|2|3|all` -> the folds to use: [None] for one-split datasets."""
    if split not in (None, "all", "1", "2", "3"):
        raise UserError(f"--split must be 1, 2, 3 or all, not {split!r}.")
    if dataset_name(dataset) not in ("hmdb51", "ucf101"):
        return [None]
    return [1, 2, 3] if split in (None, "all") else [int(split)]


def load_split(
    dataset: str,
    root: Path,
    split: str = "train",
    fold: int | None = 1,
    videos: Path | None = None,
    charades_instances: bool = False,
) -> SplitList:
    """One split of a dataset; `fold` counts for hmdb51/ucf101 only (None means fold 1)."""
    name = dataset_name(dataset)
    if name == "hmdb51":
        return hmdb51.load(root, split, fold, videos)
    if name == "ucf101":
        return ucf101.load(root, split, fold, videos)
    if name in ("k400", "k600"):
        return kinetics.load(root, split, videos, dataset=name)
    if name == "ssv2":
        return ssv2.load(root, split, videos)
    if name == "charades":
        return charades.load(root, split, videos, instances=charades_instances)
    return generic.load(root, split, videos)


__all__ = [
    "DATASETS",
    "absent_files",
    "available_splits",
    "dataset_name",
    "folds",
    "load_split",
    "test_split",
]
