"""`check-data`: scan a dataset's splits for missing, unreadable and short videos.

A video is probed the way evaluation reads it: opened with the reader training uses and
the evaluation clip's frames (`--frames` segment centres) decoded with one `get_batch`, by
the same functions `VideoClipDataset` calls. So a video called readable here is one the
data loader reads, and an unreadable one comes with decord's reason. A frame folder
(`trainer/data/frames.py`) is probed the same way: missing, a gap in its frames, an
undecodable JPEG among the clip's frames, or too few frames.

The check is a gate: `CheckReport.problems` names what fails it (any unreadable or short
video, more missing ones than the caller accepts), and the CLI exits 2 on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import Progress

from .items import SplitList
from .layouts import ListFiles, absent_files, available_splits, folds, load_split
from .sampling import clip_indices
from .video import VideoError, open_video, read_frames


@dataclass(frozen=True)
class CheckReport:
    classes: int
    class_names: tuple[str, ...]
    splits: dict[str, int]  # split name -> items on disk
    missing: list[str]  # annotation entries without a file
    unreadable: list[str]  # files decord cannot open, or empty
    short: list[str]  # files with fewer frames than a clip needs
    class_counts: dict[str, Counter]  # split name -> Counter(class id -> items)
    unreadable_reasons: dict[str, str] = field(default_factory=dict)  # path -> reason
    missing_splits: dict[str, str] = field(default_factory=dict)  # split name -> absent file

    def problems(self, allow_missing: int = 0) -> str | None:
        """None when the data passes: no unreadable or short video and at most
        `allow_missing` missing ones (deleted YouTube clips are part of any Kinetics copy;
        an unreadable or short file is a file to fix). Else the counts, for one sentence."""
        if not self.unreadable and not self.short and len(self.missing) <= allow_missing:
            return None
        return (
            f"{len(self.missing)} missing (--allow-missing {allow_missing}), "
            f"{len(self.unreadable)} unreadable and {len(self.short)} short videos"
        )

    def to_json(self, allow_missing: int = 0) -> dict:
        return {
            "classes": self.classes,
            "splits": self.splits,
            "missing": self.missing,
            "unreadable": self.unreadable,
            "short": self.short,
            "missing_splits": list(self.missing_splits),
            "unreadable_reasons": self.unreadable_reasons,
            "ok": self.problems(allow_missing) is None,
        }


def split_name(split: SplitList) -> str:
    return _pair_name(split.split, split.fold)


def _pair_name(split: str, fold: int | None) -> str:
    return split if fold is None else f"{split}{fold}"


def load_dataset_splits(
    dataset: str,
    root: Path,
    videos: Path | None = None,
    split: str | None = None,
    lists: ListFiles | None = None,
) -> tuple[list[SplitList], dict[str, str]]:
    """The splits of `dataset` (the folds `split` chooses) whose files are there (annotation
    files under `root`, Kinetics' split folders under `videos` or `root`), loaded, and
    {split name: what is absent} of the others. With none of the chosen ones there, loading
    the first raises the layout's error naming what is missing."""
    chosen = folds(dataset, split)
    wanted = [(s, f) for s, f in available_splits(dataset) if f is None or f in chosen]
    present = set(available_splits(dataset, root, videos, lists))
    pairs = [pair for pair in wanted if pair in present] or wanted
    absent = {
        _pair_name(s, f): absent_files(dataset, root, s, f, videos, lists) or "its annotation file"
        for s, f in wanted
        if (s, f) not in pairs
    }
    return [load_split(dataset, root, s, f, videos, lists=lists) for s, f in pairs], absent


def probe_video(path: Path, frames: int) -> tuple[str | None, str]:
    """(None, "") if the data loader can read a `frames`-frame evaluation clip of the video,
    else ("short", reason) or ("unreadable", reason)."""
    try:
        reader, info = open_video(path)
    except VideoError as exc:
        return "unreadable", exc.reason
    try:
        indices = clip_indices(info.num_frames, frames)  # a whole video's evaluation clip
    except ValueError as exc:
        return "short", f"{exc}"
    try:
        read_frames(reader, np.unique(indices).tolist())  # as VideoClipDataset decodes it
    except VideoError as exc:
        return "unreadable", exc.reason
    return None, ""


def check_splits(
    splits: Sequence[SplitList],
    frames: int = 8,
    workers: int = 4,
    show_progress: bool = True,
    missing_splits: dict[str, str] | None = None,
) -> CheckReport:
    """Probe every distinct video of the splits once (threads: decord releases the GIL).

    `missing_splits` ({split name: absent annotation file}) is passed on to the report."""
    paths = sorted({it.path for s in splits for it in s.items})
    verdicts: dict[Path, tuple[str | None, str]] = {}
    with (
        Progress(disable=not show_progress, transient=True) as progress,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        task = progress.add_task("scanning videos", total=len(paths))
        for path, verdict in zip(paths, pool.map(lambda p: probe_video(p, frames), paths)):
            verdicts[path] = verdict
            progress.advance(task)
    missing = sorted({m for s in splits for m in s.missing})
    unreadable = [p for p in paths if verdicts[p][0] == "unreadable"]
    return CheckReport(
        classes=len(splits[0].class_names) if splits else 0,
        class_names=splits[0].class_names if splits else (),
        splits={split_name(s): len(s.items) for s in splits},
        missing=missing,
        unreadable=[str(p) for p in unreadable],
        short=[str(p) for p in paths if verdicts[p][0] == "short"],
        class_counts={
            split_name(s): Counter(c for it in s.items for c in it.labels) for s in splits
        },
        unreadable_reasons={str(p): verdicts[p][1] for p in unreadable},
        missing_splits=dict(missing_splits or {}),
    )
