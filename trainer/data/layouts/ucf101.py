"""UCF-101 as released: `<Class>/v_<Class>_gXX_cYY.avi` and `ucfTrainTestlist/`.

`classInd.txt` (`1 ApplyEyeMakeup`) gives ids (index - 1); `trainlist0{1,2,3}.txt` lines are
`<Class>/<file>.avi <index>`, `testlist0{1,2,3}.txt` lines `<Class>/<file>.avi` (the label is
the folder). The release spells one class both `HandstandPushups` and `HandStandPushups`
(folders, files, list lines), so paths resolve case-insensitively where the exact name is absent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from storyboard_common.errors import UserError

from ..items import SplitList, VideoItem
from ._common import (
    DirIndex,
    check_fold,
    normalize_split,
    read_lines,
    rel_parts,
    require_file,
    require_root,
    shipped_names,
    video_root,
)

LABEL = "UCF-101"
LIST_DIR = "ucfTrainTestlist"
SPLITS = ("train", "test")
_EXPECT = f"the official {LIST_DIR} folder and the class folders"
_IND_LINE = re.compile(r"^\s*(\d+)\s+(\S.*?)\s*$")


def absent(root: Path, split: str, fold: int | None) -> str | None:
    """None when the split's list file is on disk, else its path relative to `root`."""
    name = f"{LIST_DIR}/{split}list0{check_fold(fold, LABEL)}.txt"
    return None if (Path(root) / name).is_file() else name


def load(
    root: Path | str,
    split: str = "train",
    fold: int | None = 1,
    videos: Path | str | None = None,
    class_names: Sequence[str] | None = None,
    shipped: str | None = None,
) -> SplitList:
    """One split of one fold.

    Ids and names come from classInd.txt; when it lists as many classes as `class_names`
    (default: the shipped list `shipped`, the 101) the names must agree (ignoring case) and
    the shipped spelling is kept.
    """
    root = require_root(root, _EXPECT)
    split = normalize_split(split, SPLITS, LABEL)
    fold = check_fold(fold, LABEL)
    list_dir = root / LIST_DIR
    class_ind = require_file(
        list_dir / "classInd.txt", "UCF-101 class index", f"--root must hold {_EXPECT}"
    )
    names = _read_class_ind(class_ind)
    expected = tuple(class_names) if class_names is not None else shipped_names(shipped)
    if len(names) == len(expected):
        diffs = [
            f"{i + 1} {got} (expected {want})"
            for i, (got, want) in enumerate(zip(names, expected))
            if got.casefold() != want.casefold()
        ]
        if diffs:
            raise UserError(
                f"{class_ind} disagrees with the shipped UCF-101 class list at: {'; '.join(diffs)}."
            )
        names = expected
    by_folder = {name.casefold(): i for i, name in enumerate(names)}

    list_file = require_file(
        list_dir / f"{split}list0{fold}.txt", "UCF-101 split file", f"--root must hold {_EXPECT}"
    )
    vdir = video_root(videos, root, LABEL, "must hold the class folders of .avi files")
    index = DirIndex()
    items: list[VideoItem] = []
    missing: list[str] = []
    for lineno, line in enumerate(read_lines(list_file), 1):
        line = line.strip()
        if not line:
            continue
        fields = line.rsplit(None, 1)
        labelled = len(fields) == 2 and fields[1].isdigit()
        rel, label = (fields[0], fields[1]) if labelled else (line, None)
        parts = rel_parts(rel)
        if label is not None:
            class_id = int(label) - 1
            if not 0 <= class_id < len(names):
                raise UserError(
                    f"{list_file} line {lineno}: label {label} is not an index of {class_ind}."
                )
        else:
            class_id = by_folder.get(parts[0].casefold(), -1) if len(parts) > 1 else -1
            if class_id < 0:
                raise UserError(
                    f"{list_file} line {lineno}: {rel!r} is not in a class folder named in "
                    f"{class_ind}."
                )
        path = index.find(vdir, rel, ignore_case=True)
        if path is None:
            missing.append(rel)
        else:
            items.append(VideoItem(path, Path(parts[-1]).stem, (class_id,)))
    return SplitList("ucf101", split, fold, names, tuple(items), False, tuple(missing))


def _read_class_ind(path: Path) -> tuple[str, ...]:
    by_index: dict[int, str] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        match = _IND_LINE.match(line)
        if not match:
            raise UserError(f"{path} line {lineno} is not `<index> <ClassName>`: {line!r}.")
        index = int(match.group(1))
        if index in by_index:
            raise UserError(f"{path} line {lineno} repeats index {index}.")
        by_index[index] = match.group(2)
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise UserError(f"{path} must number its classes 1..{len(by_index)}, each once.")
    return tuple(by_index[i] for i in range(1, len(by_index) + 1))
