"""Kinetics-400 and -600 (`dataset="k600"`) as released: train/validate/test csv, clip folders.

Csv header `label,youtube_id,time_start,time_end,split`; a clip is the file
`<youtube_id>_<start:06d>_<end:06d>.mp4` (or .mkv/.webm/.avi) under `<split>/<label>/` or
`<split>/`, where the split folders are `train`, `val` or `validate`, `test`. Missing clips
are common (deleted YouTube videos): they are reported in `SplitList.missing`.

Without a shipped class list (none ships for either today) the classes are train.csv's
labels, sorted, or where a download for evaluation has no train.csv, those of validate.csv
(then test.csv), which hold every class too.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

from storyboard_common.errors import UserError

from ..items import SplitList, VideoItem
from ._common import (
    VIDEO_EXTS,
    normalize_split,
    require_file,
    require_root,
    shipped_names,
    video_root,
)

LABEL = "Kinetics-400"
LABELS = {"k400": LABEL, "k600": "Kinetics-600"}  # the --dataset names this module reads
SPLITS = ("train", "val", "test")
CSV_FILES = {"train": ("train.csv",), "val": ("validate.csv", "val.csv"), "test": ("test.csv",)}
SPLIT_DIRS = {"train": ("train",), "val": ("val", "validate"), "test": ("test",)}
_EXPECT = "the official train.csv, validate.csv and test.csv"
_FOLDERS = "the split folders train, val (or validate) and test"


# what `clip_id` ends with: tells a clip's frame folder from a label folder
_CLIP_ID = re.compile(r"_\d{6}_\d{6}$")


def clip_id(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def load(
    root: Path | str,
    split: str = "train",
    videos: Path | str | None = None,
    class_names: Sequence[str] | None = None,
    dataset: str = "k400",
    shipped: str | None = None,
) -> SplitList:
    """One split; classes (in id order) are `class_names`, the shipped list `shipped`, or the sorted
    labels of the first labelled csv of train.csv, validate.csv and test.csv.

    `dataset` is k400 or k600: same csv format and clip folders, its own class list."""
    title = LABELS[dataset]
    root = require_root(root, _EXPECT)
    split = normalize_split(split, SPLITS, title)
    csv_path = _csv_file(root, split, title)
    rows = _read_rows(csv_path)
    if class_names is not None:
        names = tuple(class_names)
    elif shipped_names(shipped) is not None:
        names = shipped_names(shipped)
    else:
        found = (_find_csv(root, s) for s in SPLITS)
        source = next(p for p in found if p is not None and (p == csv_path or _labelled(p)))
        source_rows = rows if source == csv_path else _read_rows(source)
        names = tuple(sorted({row[0] for row in source_rows}))
    by_label = {name: i for i, name in enumerate(names)}
    by_norm = {_norm(name): i for i, name in enumerate(names)}

    vdir = video_root(videos, root, title, f"must hold {_FOLDERS}")
    folders = [vdir / d for d in SPLIT_DIRS[split] if (vdir / d).is_dir()]
    if not folders:
        wanted = " or ".join(str(vdir / d) for d in SPLIT_DIRS[split])
        raise UserError(
            f"{title} video folder not found: {wanted}; the video folder must hold {_FOLDERS}."
        )
    clips = _index_clips(folders)

    items: list[VideoItem] = []
    missing: list[str] = []
    for label, youtube_id, start, end, line in rows:
        class_id = by_label.get(label, by_norm.get(_norm(label), -1))
        if class_id < 0:
            raise UserError(
                f"{csv_path} line {line}: label {label!r} is not a {title} class of this "
                f"class list ({len(names)} classes)."
            )
        vid = clip_id(youtube_id, start, end)
        found = clips.get(vid)
        if not found:
            missing.append(vid)
            continue
        want = _norm(names[class_id])
        path = min(found, key=lambda f: (0 if f[0] == want else 1 if f[0] == "" else 2, f[1]))[2]
        items.append(VideoItem(path, vid, (class_id,)))
    return SplitList(dataset, split, None, names, tuple(items), False, tuple(missing))


def _norm(label: str) -> str:
    return " ".join(label.replace("_", " ").split()).casefold()


def _find_csv(root: Path, split: str) -> Path | None:
    """The split's csv (validate.csv before its stand-in val.csv), or None."""
    return next((root / n for n in CSV_FILES[split] if (root / n).is_file()), None)


def _csv_file(root: Path, split: str, label: str = LABEL) -> Path:
    found = _find_csv(root, split)
    if found is not None:
        return found
    return require_file(
        root / CSV_FILES[split][0], f"{label} annotation file", f"--root must hold {_EXPECT}"
    )


def _labelled(path: Path) -> bool:
    """Whether a Kinetics csv has a label column (a test.csv may have none)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return "label" in (h.strip().lower() for h in next(csv.reader(fh), []))


def absent(root: Path, split: str, fold: int | None = None) -> str | None:
    """None when the split's csv is on disk with labels, else what is missing: its name (and
    the one standing in for it), or "labels in test.csv" for a csv of clip ids only."""
    found = _find_csv(Path(root), split)
    if found is None:
        return " or ".join(CSV_FILES[split])
    return None if _labelled(found) else f"labels in {found.name}"


def absent_videos(root: Path, split: str, videos: Path | None = None) -> str | None:
    """None when the split's video folder is in `videos` (default: `root`), else its names,
    e.g. "video folder train/" for a download of the validation videos only."""
    vdir = Path(root if videos is None else videos).expanduser()
    if any((vdir / d).is_dir() for d in SPLIT_DIRS[split]):
        return None
    return "video folder " + " or ".join(f"{d}/" for d in SPLIT_DIRS[split])


def _read_rows(path: Path) -> list[tuple[str, str, int, int, int]]:
    """(label, youtube_id, start, end, line number) of each row of a Kinetics csv."""
    rows = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        need = ("youtube_id", "time_start", "time_end")
        if not set(need) <= set(header):
            raise UserError(
                f"{path} must have the header `label,youtube_id,time_start,time_end,split`."
            )
        if "label" not in header:
            raise UserError(
                f"{path} has no label column, so its clips cannot be used for training or "
                f"evaluation; use an annotation file with labels."
            )
        col = {name: header.index(name) for name in (*need, "label")}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            try:
                label = row[col["label"]].strip()
                youtube_id = row[col["youtube_id"]].strip()
                start = int(float(row[col["time_start"]]))
                end = int(float(row[col["time_end"]]))
            except (IndexError, ValueError) as exc:
                raise UserError(
                    f"{path} line {reader.line_num} is not a valid Kinetics row ({exc})."
                ) from exc
            if not label:
                raise UserError(
                    f"{path} line {reader.line_num} has no label, so this split cannot be used "
                    f"for training or evaluation."
                )
            rows.append((label, youtube_id, start, end, reader.line_num))
    return rows


def _index_clips(folders: list[Path]) -> dict[str, list[tuple[str, int, Path]]]:
    """clip id -> [(normalized label folder or "", extension rank, path)], by one scandir walk.

    A folder inside a label folder, or one named like a clip id in the split folder, is a
    clip's frame folder (ranked after its video files); other folders there are labels."""
    ext_rank = {ext: i for i, ext in enumerate(VIDEO_EXTS)}
    frames_rank = len(VIDEO_EXTS)
    clips: dict[str, list[tuple[str, int, Path]]] = {}

    def add(folder: Path, label: str) -> None:
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    stem, ext = os.path.splitext(entry.name)
                    rank = ext_rank.get(ext.lower())
                    if rank is not None and not entry.is_dir():
                        clips.setdefault(stem, []).append((label, rank, folder / entry.name))
                    elif not entry.is_dir():
                        continue
                    elif label or _CLIP_ID.search(entry.name):  # a frame folder
                        clips.setdefault(entry.name, []).append(
                            (label, frames_rank, folder / entry.name)
                        )
                    else:  # a label folder: one level only
                        add(folder / entry.name, _norm(entry.name))
        except OSError:
            pass

    for folder in folders:
        add(folder, "")
    return clips
