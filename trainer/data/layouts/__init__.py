"""The datasets in their official layouts, read into `SplitList`s (existence checks only).

`load_split(dataset, root, split, fold, videos, lists=...)` is the one entry point (`lists`:
the `list` dataset's files, `generic.ListFiles`); each module also
has a `load` with dataset-specific options (e.g. a class list for miniature copies).
A dataset is one module and its `REGISTRY` line, which declares all the rest of it: its
splits and folds (hence `--split`'s choices, `SPLIT_CHOICES`), the split it is evaluated
on, its shipped class list and what a copy keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from storyboard_common.errors import UserError

from ..items import SplitList
from . import charades, generic, hmdb51, kinetics, ssv2, ucf101
from .generic import ListFiles


@dataclass(frozen=True)
class Layout:
    """What the code needs to know of one dataset: how its splits load, whether they come
    in folds, which split it is evaluated on, which files a split needs, and what a copy of
    it (`prepare-videos`) must keep: its annotation files (by fixed name, or every file of
    a folder), and its video folders (each split's own, the class folders, or the folders
    under a root where videos are looked for, the first of which takes `--videos` videos;
    `flat_videos`: one flat folder whatever the source's subfolders). `classes` names the
    shipped class list that numbers its classes where its annotations do not (the file
    storyboard_common/data/<classes>/classes.csv, which `generate --dataset` offers too;
    a name with no file there: none ships yet, and the layout's own fallback holds)."""

    # (root, split, fold, videos, charades_instances, lists, classes)
    load: Callable[..., SplitList]
    absent: Callable[..., str | None]  # (root, split, fold, videos, lists) -> what is missing
    splits: tuple[str, ...]
    folds: tuple[int, ...] = ()  # () for a dataset of one split
    test_split: str = "test"
    annotations: tuple[str, ...] = ()  # under the root, by fixed name (if present)
    annotation_dirs: tuple[str, ...] = ()  # under the root, every file of each
    split_folders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # split -> dirs
    class_folders_needed: bool = False  # its loader reads every class's folder, even empty
    video_dirs: tuple[str, ...] = ()
    flat_videos: bool = False
    classes: str | None = None


def _kinetics(name: str) -> Layout:
    return Layout(
        load=lambda root, split, fold, videos, _, __, shipped: kinetics.load(
            root, split, videos, dataset=name, shipped=shipped
        ),
        absent=lambda root, split, fold, videos, _: (
            kinetics.absent(root, split, fold) or kinetics.absent_videos(root, split, videos)
        ),
        splits=kinetics.SPLITS,
        test_split="val",
        annotations=tuple(name for names in kinetics.CSV_FILES.values() for name in names),
        split_folders=kinetics.SPLIT_DIRS,
        classes=name,
    )


def _folded(module, annotation_dir: str, class_folders_needed: bool, classes: str) -> Layout:
    return Layout(
        load=lambda root, split, fold, videos, _, __, shipped: module.load(
            root, split, fold, videos, shipped=shipped
        ),
        absent=lambda root, split, fold, videos, _: module.absent(root, split, fold),
        splits=module.SPLITS,
        folds=(1, 2, 3),
        annotation_dirs=(annotation_dir,),
        class_folders_needed=class_folders_needed,
        classes=classes,
    )


REGISTRY: dict[str, Layout] = {
    "hmdb51": _folded(hmdb51, hmdb51.SPLITS_DIR, class_folders_needed=True, classes="hmdb51"),
    "ucf101": _folded(ucf101, ucf101.LIST_DIR, class_folders_needed=False, classes="ucf101"),
    "k400": _kinetics("k400"),
    "k600": _kinetics("k600"),
    "ssv2": Layout(
        load=lambda root, split, fold, videos, _, __, shipped: ssv2.load(
            root, split, videos, shipped=shipped
        ),
        absent=lambda root, split, fold, videos, _: ssv2.absent(root, split, fold),
        splits=ssv2.SPLITS,
        test_split="val",
        annotations=ssv2.ANNOTATION_FILES,
        video_dirs=ssv2.VIDEO_DIRS,
        flat_videos=True,
        classes="ssv2",
    ),
    "charades": Layout(
        load=lambda root, split, fold, videos, instances, _, __: charades.load(
            root, split, videos, instances=instances
        ),
        absent=lambda root, split, fold, videos, _: charades.absent(root, split, fold),
        splits=charades.SPLITS,
        annotations=(charades.CLASSES_FILE, *charades.CSV_FILES.values()),
        video_dirs=(charades.VIDEO_DIR,),
    ),
    "list": Layout(
        load=lambda root, split, fold, videos, _, lists, __: generic.load(
            root, split, videos, lists
        ),
        absent=lambda root, split, fold, videos, lists: generic.absent(root, split, fold, lists),
        splits=generic.SPLITS,
        annotations=(generic.CLASS_FILE, *(f"{s}.txt" for s in generic.SPLITS)),
    ),
}
DATASETS = tuple(REGISTRY)
# --split: a fold of the datasets that have folds, or all of them
SPLIT_CHOICES = (*map(str, sorted({f for e in REGISTRY.values() for f in e.folds})), "all")


def layout(dataset: str) -> Layout:
    """The registry's entry for `--dataset` (any case), or a UserError naming the choices."""
    return REGISTRY[dataset_name(dataset)]


def has_folds(dataset: str) -> bool:
    """Whether the dataset's splits come in folds (`--split 1|2|3|all`)."""
    return bool(layout(dataset).folds)


def dataset_name(dataset: str) -> str:
    """`--dataset` as one of DATASETS (any case), or a UserError naming the choices."""
    name = str(dataset).strip().lower()
    if name not in DATASETS:
        raise UserError(f"unknown --dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    return name


def available_splits(
    dataset: str,
    root: Path | None = None,
    videos: Path | None = None,
    lists: ListFiles | None = None,
) -> list[tuple[str, int | None]]:
    """The (split, fold) pairs a dataset defines, e.g. [("train", 1), ("test", 1), ...].

    With `root`, only the pairs whose files are there (`absent_files`: a partial download,
    e.g. Kinetics without test.csv or with the validation videos only); with none at all,
    every pair, so loading says what is missing.
    """
    name = dataset_name(dataset)
    entry = REGISTRY[name]
    pairs = [(s, f) for f in entry.folds or (None,) for s in entry.splits]
    if root is None:
        return pairs
    found = [(s, f) for s, f in pairs if absent_files(name, root, s, f, videos, lists) is None]
    return found or pairs


def absent_files(
    dataset: str,
    root: Path,
    split: str,
    fold: int | None,
    videos: Path | None = None,
    lists: ListFiles | None = None,
) -> str | None:
    """None when a split's own files are under `root`, else what is missing, relative to
    `root` (e.g. "test.csv") or to the video folder (Kinetics' per-split folders, e.g.
    "video folder train/"). Files every split needs (class lists) are not looked at here:
    without them loading any split names them."""
    return layout(dataset).absent(Path(root).expanduser(), split, fold, videos, lists)


def test_split(dataset: str) -> str:
    """The split a dataset is evaluated on: Kinetics' and SSv2's validation set, else its test
    set."""
    return layout(dataset).test_split


def folds(dataset: str, split: str | None) -> list[int | None]:
    """`--split 1|2|3|all` -> the folds to use: [None] for one-split datasets."""
    if split not in (None, *SPLIT_CHOICES):
        raise UserError(f"--split must be {', '.join(SPLIT_CHOICES[:-1])} or all, not {split!r}.")
    all_folds = layout(dataset).folds
    if not all_folds:
        return [None]
    return list(all_folds) if split in (None, "all") else [int(split)]


def load_split(
    dataset: str,
    root: Path,
    split: str = "train",
    fold: int | None = 1,
    videos: Path | None = None,
    charades_instances: bool = False,
    lists: ListFiles | None = None,
) -> SplitList:
    """One split of a dataset; `fold` counts for hmdb51/ucf101 only (None means fold 1),
    `lists` for the `list` dataset only."""
    entry = layout(dataset)
    return entry.load(root, split, fold, videos, charades_instances, lists, entry.classes)


__all__ = [
    "DATASETS",
    "REGISTRY",
    "SPLIT_CHOICES",
    "Layout",
    "ListFiles",
    "has_folds",
    "layout",
    "absent_files",
    "available_splits",
    "dataset_name",
    "folds",
    "load_split",
    "test_split",
]
