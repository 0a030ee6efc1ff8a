"""`check-data`: scan a dataset's splits for missing, unreadable and short videos."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from .items import SplitList
from .video import VideoError, video_info


@dataclass(frozen=True)
class CheckReport:
    classes: int
    class_names: tuple[str, ...]
    splits: dict[str, int]  # split name -> items on disk
    missing: list[str]  # annotation entries without a file
    unreadable: list[str]  # files decord cannot open, or empty
    short: list[str]  # files with fewer frames than a clip needs
    class_counts: dict[str, Counter]  # split name -> Counter(class id -> items)

    def to_json(self) -> dict:
        return {
            "classes": self.classes,
            "splits": self.splits,
            "missing": self.missing,
            "unreadable": self.unreadable,
            "short": self.short,
        }


def split_name(split: SplitList) -> str:
    return split.split if split.fold is None else f"{split.split}{split.fold}"


def _probe(path: Path, frames: int) -> str | None:
    """None if the video is usable, else "unreadable" or "short"."""
    try:
        info = video_info(path)
    except VideoError:
        return "unreadable"
    return "short" if info.num_frames < frames else None


def check_splits(
    splits: Sequence[SplitList], frames: int = 8, workers: int = 4, show_progress: bool = True
) -> CheckReport:
    """Probe every distinct video of the splits once (threads: decord releases the GIL)."""
    paths = sorted({it.path for s in splits for it in s.items})
    verdicts: dict[Path, str | None] = {}
    with (
        Progress(disable=not show_progress, transient=True) as progress,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        task = progress.add_task("scanning videos", total=len(paths))
        for path, verdict in zip(paths, pool.map(lambda p: _probe(p, frames), paths)):
            verdicts[path] = verdict
            progress.advance(task)
    missing = sorted({m for s in splits for m in s.missing})
    return CheckReport(
        classes=len(splits[0].class_names) if splits else 0,
        class_names=splits[0].class_names if splits else (),
        splits={split_name(s): len(s.items) for s in splits},
        missing=missing,
        unreadable=[str(p) for p in paths if verdicts[p] == "unreadable"],
        short=[str(p) for p in paths if verdicts[p] == "short"],
        class_counts={
            split_name(s): Counter(c for it in s.items for c in it.labels) for s in splits
        },
    )
