"""HMDB-51 as released: `<class>/<name>.avi` and `testTrainMulti_7030_splits/`.

Split files `<class>_test_split{1,2,3}.txt` hold lines `<name>.avi <tag>`: tag 1 = train,
2 = test, 0 = unused in that fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from storyboard_common.errors import UserError

from ..items import SplitList, VideoItem
from ._common import (
    DirIndex,
    check_fold,
    normalize_split,
    read_lines,
    require_root,
    shipped_names,
    video_root,
)

LABEL = "HMDB-51"
SPLITS_DIR = "testTrainMulti_7030_splits"
SPLITS = ("train", "test")
_TAGS = {"train": "1", "test": "2"}
_EXPECT = f"the official {SPLITS_DIR} folder and the class folders"


def absent(root: Path, split: str, fold: int | None) -> str | None:
    """None when the fold's split files are on disk (any of them: a partial set is loading's
    error to name), else what is missing, relative to `root`."""
    suffix = f"_test_split{check_fold(fold, LABEL)}.txt"
    if any(name.endswith(suffix) for name in DirIndex().names(Path(root) / SPLITS_DIR)):
        return None
    return f"{SPLITS_DIR}/<class>{suffix}"


def load(
    root: Path | str,
    split: str = "train",
    fold: int | None = 1,
    videos: Path | str | None = None,
    class_names: Sequence[str] | None = None,
    shipped: str | None = None,
) -> SplitList:
    """One split of one fold; `class_names` (default: the shipped list `shipped`, the 51
    in id order) fixes ids."""
    root = require_root(root, _EXPECT)
    split = normalize_split(split, SPLITS, LABEL)
    fold = check_fold(fold, LABEL)
    names = tuple(class_names) if class_names is not None else shipped_names(shipped)
    splits_dir = root / SPLITS_DIR
    if not splits_dir.is_dir():
        raise UserError(
            f"HMDB-51 split folder not found: {splits_dir}; --root must hold {_EXPECT}."
        )
    vdir = video_root(videos, root, LABEL, f"must hold {_EXPECT}")

    suffix = f"_test_split{fold}.txt"
    index = DirIndex()
    known = set(names)
    extra = sorted(
        name[: -len(suffix)]
        for name in index.names(splits_dir)
        if name.endswith(suffix) and name[: -len(suffix)] not in known
    )
    if extra:
        raise UserError(
            f"{splits_dir} holds split files for classes that are not HMDB-51 classes: "
            f"{', '.join(extra)}."
        )

    tag = _TAGS[split]
    items: list[VideoItem] = []
    missing: list[str] = []
    for class_id, name in enumerate(names):
        split_file = splits_dir / f"{name}{suffix}"
        if not split_file.is_file():
            raise UserError(
                f"HMDB-51 split file not found: {split_file}; --root must hold {_EXPECT}."
            )
        class_dir = vdir / name
        if not class_dir.is_dir():
            raise UserError(
                f"HMDB-51 class folder not found: {class_dir}; the video folder must hold one "
                f"folder of .avi files per class."
            )
        for lineno, line in enumerate(read_lines(split_file), 1):
            fields = line.rsplit(None, 1)
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise UserError(
                    f"{split_file} line {lineno} is not `<name>.avi <0|1|2>`: {line.strip()!r}."
                )
            if fields[1] != tag:
                continue
            file_name = fields[0].strip()
            found = index.find(class_dir, file_name)  # the .avi, or its frame folder
            if found is not None and found.parent == class_dir:
                items.append(VideoItem(found, Path(file_name).stem, (class_id,)))
            else:
                missing.append(f"{name}/{file_name}")
    return SplitList("hmdb51", split, fold, names, tuple(items), False, tuple(missing))
