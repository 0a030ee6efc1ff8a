"""A generic dataset: `classes.csv` (`id,name`) and list files `train.txt`/`val.txt`/`test.txt`,
or the files `--train-list`, `--test-list` and `--class-list` name (`ListFiles`: relative to
the root unless absolute), so that mmaction2's, BIKE's and ViFi-CLIP's lists and label maps
are read as published. The class list is any `load_classes` reads: `id,name` csv, one name a
line (mmaction2's `label_map*.txt`: line i is class i), JSON.

List lines are `relative/path label[,label...]`: the last whitespace-separated field holds the
labels (class names or ids), everything before it the path, relative to the video folder
(default: the root). Blank lines and `#` comments are skipped. A line with several labels
makes the split multi-label. A path may name a video's frame folder
(`trainer/data/frames.py`), with or without the video's extension.

Frame-folder lists as TSN, mmaction2 and BIKE write them are read too: a line
`folder total_frames label` (three fields, the middle one a number) whose first two fields
do not name a video is a frame folder with its frame count, which must equal the frames in
the folder (a list from another extraction would sample frames that are not there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from storyboard_common.classes import load_classes
from storyboard_common.errors import UserError
from storyboard_common.files import os_reason

from ..frames import list_frames
from ..items import SplitList, VideoItem
from ._common import DirIndex, normalize_split, read_lines, require_file, require_root, video_root

LABEL = "the list dataset"
SPLITS = ("train", "val", "test")
_EXPECT = "classes.csv (`id,name`) and the list files train.txt, val.txt, test.txt"
CLASS_FILE = "classes.csv"


@dataclass(frozen=True)
class ListFiles:
    """The list files a `list` dataset reads (`--train-list`, `--test-list`, `--class-list`),
    each relative to the root unless absolute; None: the default name (`train.txt`,
    `test.txt`, `classes.csv`). The val split is always `val.txt`."""

    train: Path | str | None = None
    test: Path | str | None = None
    classes: Path | str | None = None

    def split_file(self, root: Path, split: str) -> Path:
        given = {"train": self.train, "test": self.test}.get(split)
        return Path(root) / (given or f"{split}.txt")

    def class_file(self, root: Path) -> Path:
        return Path(root) / (self.classes or CLASS_FILE)

    def instead(self, split: str) -> str:
        """How a user names the split's file elsewhere, for an error: by its flag (val.txt
        has none)."""
        flag = {"train": "--train-list", "test": "--test-list"}.get(split)
        return f", or {flag} names it" if flag else ""


def absent(
    root: Path, split: str, fold: int | None = None, lists: ListFiles | None = None
) -> str | None:
    """None when the split's list file is on disk, else its name."""
    path = (lists or ListFiles()).split_file(Path(root), split)
    if path.is_file():
        return None
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def load(
    root: Path | str,
    split: str = "train",
    videos: Path | str | None = None,
    lists: ListFiles | None = None,
) -> SplitList:
    lists = lists or ListFiles()
    root = require_root(root, _EXPECT)
    split = normalize_split(split, SPLITS, LABEL)
    class_file = require_file(
        lists.class_file(root),
        "class list",
        f"--root must hold {_EXPECT}, or --class-list names it",
    )
    names = load_classes(classes_file=class_file, flag="the class list").names
    by_name = {name: i for i, name in enumerate(names)}
    list_file = require_file(
        lists.split_file(root, split),
        "list file",
        f"--root must hold {_EXPECT}{lists.instead(split)} "
        "(lines `relative/path label[,label...]`)",
    )
    vdir = video_root(videos, root, "List", "must hold the videos named in the list files")

    index = DirIndex()
    items: list[VideoItem] = []
    missing: list[str] = []
    multi_label = False
    for lineno, line in enumerate(read_lines(list_file), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.rsplit(None, 1)
        words = line.split()
        frame_count = None
        if len(words) == 3 and words[1].isdigit() and index.find(vdir, fields[0]) is None:
            # `abseiling/xyz 408 0`: a frame folder and its count, not a video "abseiling/xyz 408"
            fields, frame_count = [words[0], words[2]], int(words[1])
        if len(fields) != 2:
            raise UserError(
                f"{list_file} line {lineno} has no label; lines are "
                f"`relative/path label[,label...]`."
            )
        rel, label_field = fields
        labels = []
        for label in label_field.split(","):
            label = label.strip()
            if not label:
                continue
            class_id = by_name.get(label)
            if class_id is None and label.isdigit() and int(label) < len(names):
                class_id = int(label)
            if class_id is None:
                raise UserError(
                    f"{list_file} line {lineno}: label {label!r} is neither a name nor an id "
                    f"in {class_file}."
                )
            labels.append(class_id)
        if not labels:
            raise UserError(f"{list_file} line {lineno} has no label.")
        unique = tuple(sorted(set(labels)))
        multi_label = multi_label or len(unique) > 1
        path = index.find(vdir, rel)
        if path is None:
            missing.append(rel)
        else:
            if frame_count is not None:
                _check_frame_count(path, frame_count, f"{list_file} line {lineno}")
            video_id = str(PurePosixPath(rel.replace("\\", "/")).with_suffix(""))
            items.append(VideoItem(path, video_id, unique))
    return SplitList("list", split, None, names, tuple(items), multi_label, tuple(missing))


def _check_frame_count(folder: Path, listed: int, line: str) -> None:
    """A frame-folder line's count against the frames in its folder (one scandir)."""
    try:
        have = len(list_frames(folder)) if folder.is_dir() else None
    except OSError as exc:
        raise UserError(
            f"{line}: frame folder {folder} cannot be read ({os_reason(exc)})."
        ) from exc
    if have is None:
        raise UserError(f"{line} gives a frame count, but {folder} is a file, not a frame folder.")
    if have != listed:
        raise UserError(
            f"{line} gives {listed} frames, but frame folder {folder} holds {have}; regenerate "
            "the list for these frames."
        )
