"""What a dataset layout produces: video items and the split they form."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Segment:
    """An action instance inside a video (Charades): class id and interval in seconds."""

    class_id: int
    start: float
    end: float


@dataclass(frozen=True)
class VideoItem:
    """One video (or one action instance of it) of a split.

    `labels` holds every class id of the item: one for single-label datasets, any number
    (possibly none) for multi-label ones. `interval` (seconds) restricts frame sampling to
    part of the video (a Charades action instance); None means the whole video.
    """

    path: Path
    video_id: str
    labels: tuple[int, ...]
    segments: tuple[Segment, ...] = ()
    interval: tuple[float, float] | None = None

    @property
    def label(self) -> int:
        """The class id of a single-label item."""
        if len(self.labels) != 1:
            raise ValueError(f"{self.video_id} has {len(self.labels)} labels, not one")
        return self.labels[0]


@dataclass(frozen=True)
class SplitList:
    """The items of one split of one dataset, with its class names in id order.

    `missing` lists annotation entries whose video file is not on disk (they are not in
    `items`); Kinetics in particular always has some.
    """

    dataset: str
    split: str  # "train", "val" or "test"
    fold: int | None  # 1, 2, 3 for HMDB-51 / UCF-101; None where a dataset has one split
    class_names: tuple[str, ...]
    items: tuple[VideoItem, ...]
    multi_label: bool = False
    missing: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.items)
