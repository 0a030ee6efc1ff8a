"""Charades as released: `Charades_v1_{train,test}.csv`, `Charades_v1_classes.txt`, videos.

The csv's `actions` column holds `c092 11.90 21.20;c147 0.00 12.60` (possibly empty); videos
are `<id>.mp4` under `Charades_v1_480/` (or `--videos`). Multi-label: an item's labels are
every class of its actions. With `instances=True` each action instance is an item of its own,
`<id>@<k>`, restricted to its interval.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from storyboard_common.errors import UserError

from ..items import Segment, SplitList, VideoItem
from ._common import (
    VIDEO_EXTS,
    DirIndex,
    normalize_split,
    read_lines,
    require_file,
    require_root,
    video_root,
)

LABEL = "Charades"
SPLITS = ("train", "test")
CLASSES_FILE = "Charades_v1_classes.txt"
CSV_FILES = {"train": "Charades_v1_train.csv", "test": "Charades_v1_test.csv"}
VIDEO_DIR = "Charades_v1_480"
_EXPECT = f"the official {CSV_FILES['train']}, {CSV_FILES['test']} and {CLASSES_FILE}"
_CLASS_LINE = re.compile(r"^\s*c(\d+)\s+(\S.*?)\s*$")
_CODE = re.compile(r"^c(\d+)$")


def load(
    root: Path | str,
    split: str = "train",
    videos: Path | str | None = None,
    instances: bool = False,
) -> SplitList:
    """One split, one item per video, or per action instance with `instances`."""
    root = require_root(root, _EXPECT)
    split = normalize_split(split, SPLITS, LABEL)
    classes_file = require_file(
        root / CLASSES_FILE, "Charades class list", f"--root must hold {_EXPECT}"
    )
    names = read_classes(classes_file)
    csv_path = require_file(
        root / CSV_FILES[split], "Charades annotation file", f"--root must hold {_EXPECT}"
    )
    vdir = video_root(
        videos,
        root / VIDEO_DIR,
        LABEL,
        f"must hold the <id>.mp4 videos (by default in {VIDEO_DIR} under --root; "
        f"else pass --videos DIR)",
    )
    present = DirIndex().names(vdir)

    items: list[VideoItem] = []
    missing: list[str] = []
    for video_id, segments in _read_videos(csv_path, len(names)):
        path = _find(vdir, present, video_id)
        if path is None:
            missing.append(video_id)
            continue
        if not instances:
            labels = tuple(sorted({s.class_id for s in segments}))
            items.append(VideoItem(path, video_id, labels, tuple(segments)))
            continue
        for k, seg in enumerate(segments):
            if seg.end > seg.start:
                items.append(
                    VideoItem(
                        path, f"{video_id}@{k}", (seg.class_id,), (seg,), (seg.start, seg.end)
                    )
                )
    return SplitList("charades", split, None, names, tuple(items), True, tuple(missing))


def absent(root: Path, split: str, fold: int | None = None) -> str | None:
    """None when the split's csv is on disk, else its name."""
    return None if (Path(root) / CSV_FILES[split]).is_file() else CSV_FILES[split]


def read_classes(path: Path) -> tuple[str, ...]:
    """The names of `Charades_v1_classes.txt` (`c000 Holding some clothes`) in id order."""
    by_id: dict[int, str] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        match = _CLASS_LINE.match(line)
        if not match:
            raise UserError(f"{path} line {lineno} is not `c<NNN> <class name>`: {line!r}.")
        class_id = int(match.group(1))
        if class_id in by_id:
            raise UserError(f"{path} line {lineno} repeats class c{class_id:03d}.")
        by_id[class_id] = match.group(2)
    if not by_id or sorted(by_id) != list(range(len(by_id))):
        raise UserError(f"{path} must list the classes c000..c{len(by_id) - 1:03d}, each once.")
    return tuple(by_id[i] for i in range(len(by_id)))


def _find(vdir: Path, present: dict[str, bool], video_id: str) -> Path | None:
    """The video file `<id>.<ext>`, else the frame folder `<id>/`."""
    for ext in VIDEO_EXTS:
        name = video_id + ext
        if present.get(name) is False:
            return vdir / name
    return vdir / video_id if present.get(video_id) is True else None


def _read_videos(path: Path, num_classes: int) -> list[tuple[str, list[Segment]]]:
    """(video id, its action segments in file order) for each row of a Charades csv."""
    videos = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        fields = {(f or "").strip() for f in reader.fieldnames or ()}
        if not {"id", "actions"} <= fields:
            raise UserError(f"{path} must be a Charades csv with the columns `id` and `actions`.")
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            video_id = (row.get("id") or "").strip()
            if not video_id:
                continue
            actions = (row.get("actions") or "").strip()
            segments = []
            if actions.lower() not in ("", "nan"):
                for piece in actions.split(";"):
                    if piece.strip():
                        segments.append(_segment(piece, num_classes, path, reader.line_num))
            videos.append((video_id, segments))
    return videos


def _segment(piece: str, num_classes: int, path: Path, line: int) -> Segment:
    parts = piece.split()
    match = _CODE.match(parts[0]) if len(parts) == 3 else None
    try:
        start, end = (float(parts[1]), float(parts[2])) if match else (0.0, 0.0)
    except ValueError:
        match = None
    if match is None:
        raise UserError(f"{path} line {line}: action {piece.strip()!r} is not `c<NNN> start end`.")
    class_id = int(match.group(1))
    if class_id >= num_classes:
        raise UserError(
            f"{path} line {line}: action class {parts[0]} is not in {CLASSES_FILE} "
            f"({num_classes} classes)."
        )
    if not (start == start and end == end):  # NaN
        raise UserError(f"{path} line {line}: action {piece.strip()!r} has a NaN time.")
    return Segment(class_id, start, end)
