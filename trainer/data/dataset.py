"""Clips for the model: a torch Dataset over video items, its sampler, collate and loader.

Training: one clip per video (TSN random frames, random crop). Evaluation: every video
gives `clips x crops` views decoded with one `get_batch`; collate flattens them so a batch
is always `[B, T, 3, H, W]` with a view index per row, and the trainer averages the views
of a video. A feature cache (`trainer/cache/`) gives the same batches with frame
features `[B, T, D]` under "features" in place of "frames". A video that cannot be read
is skipped and reported in the batch, never fatal.

Randomness is keyed by (seed, epoch, item), not by worker, so a clip is the same whatever
worker decodes it: runs repeat and `--resume` continues exactly.

With `encoded=True` (`--decode-device cuda`) items are frame folders and a sample holds
its frames' JPEG bytes and each view's drawn geometry under "jpegs" (`EncodedClips`)
in place of "frames": `model_inputs` decodes and cuts them on the device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from storyboard_common.device import available_cores

from ..distributed import local_processes
from .device_transforms import EncodedClips, draw_train_view, eval_views
from .frames import frame_file, jpeg_size
from .items import VideoItem
from .sampling import clip_indices, interval_frames, segment_indices
from .transforms import eval_transform, train_transform
from .video import VideoError, open_frame_folder, open_video, read_folder_bytes, read_frames

# Decoded frames one `VideoClipDataset.views` call holds at once (uint8 RGB): 8 clips of 8
# frames of 1280x720 are 170 MiB, of 340x256 13 MiB.
DECODE_BUDGET = 256 * 2**20


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from videos: paper settings are T = 8, 16 or 32 frames."""

    frames: int = 8
    train: bool = True
    clips: int = 1  # temporal views per video (evaluation)
    crops: int = 1  # spatial views per clip (evaluation): 1 or 3
    size: int = 224
    short_side: int = 224  # evaluation: 224 (or 256); training crops the native frame

    @property
    def views(self) -> int:
        return 1 if self.train else self.clips * self.crops


@dataclass(frozen=True)
class Skipped:
    video_id: str
    reason: str


def clip_target(item: VideoItem, num_classes: int, multi_label: bool) -> torch.Tensor:
    """An item's label: a class id, or a multi-hot vector [num_classes] (multi-label)."""
    if not multi_label:
        return torch.tensor(item.label, dtype=torch.long)
    hot = torch.zeros(num_classes)
    hot[list(item.labels)] = 1.0
    return hot


def short_videos(
    items: Sequence[VideoItem], frames: int, limit: int = 64, workers: int = 8
) -> tuple[list[tuple[VideoItem, int]], int]:
    """Probe up to `limit` distinct items (evenly spread over `items`): -> (the items whose
    clip range, their interval or the whole video, holds fewer than `frames` frames, with
    that count; how many items could be opened). Unreadable videos are left to the loader,
    which skips and counts them."""
    from concurrent.futures import ThreadPoolExecutor

    distinct = list({(item.path, item.interval): item for item in items}.values())
    chosen = distinct[:: max(1, math.ceil(len(distinct) / limit))][:limit]

    def length(item: VideoItem) -> int | None:
        try:
            _, info = open_video(item.path)
            start, end = interval_frames(item.interval, info.fps, info.num_frames)
        except (VideoError, ValueError):
            return None
        return max(0, end - start)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        lengths = list(pool.map(length, chosen))
    short = [(item, n) for item, n in zip(chosen, lengths) if n is not None and n < frames]
    return short, sum(n is not None for n in lengths)


class VideoClipDataset(Dataset):
    """Index with `(epoch, i)` (from `EpochSampler`) or a plain `i` (epoch 0)."""

    def __init__(
        self,
        items: Sequence[VideoItem],
        num_classes: int,
        multi_label: bool,
        spec: ClipSpec,
        seed: int = 0,
        encoded: bool = False,
    ):
        self.items = list(items)
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.spec = spec
        self.seed = seed
        self.encoded = encoded  # frame folders' JPEG bytes, decoded on the device
        # the batch entry the model reads (see `collate_clips`)
        self.input_key = "jpegs" if encoded else "frames"
        self.transform = (
            train_transform(spec.size)
            if spec.train
            else eval_transform(spec.size, spec.short_side, spec.crops)
        )

    def __len__(self) -> int:
        return len(self.items)

    def _indices(self, item: VideoItem, num_frames: int, fps: float, rng) -> np.ndarray:
        """Frame indices [views_t, T] inside the item's interval (the whole video if none)."""
        start, end = interval_frames(item.interval, fps, num_frames)
        if self.spec.train:
            return segment_indices(num_frames, self.spec.frames, True, rng, start, end)[None]
        return clip_indices(num_frames, self.spec.frames, self.spec.clips, start, end)

    def __getitem__(self, key) -> dict | Skipped:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        return self.views(index, [epoch])

    def views(
        self, index: int, epochs: Sequence[int], max_bytes: int = DECODE_BUDGET
    ) -> dict | Skipped:
        """Item `index`'s sample at each of `epochs`, concatenated: for training, the clip
        `self[(epoch, index)]` gives at each epoch (the feature cache's training views);
        for evaluation (epochs [0]) every view of the video.

        The video is opened once and its frames decoded in sorted `get_batch` reads, one
        for all epochs while their distinct frames fit in `max_bytes` of decoded frames,
        else in groups that do (a long clip list falls back to a read per clip); the
        samples equal those of one read each, pixel for pixel.
        """
        if self.encoded:
            return self.encoded_views(index, epochs)
        item = self.items[index]
        rngs = [np.random.default_rng([self.seed, epoch, index]) for epoch in epochs]
        try:
            reader, info = open_video(item.path, None if self.spec.train else self.spec.short_side)
            indices = [self._indices(item, info.num_frames, info.fps, rng) for rng in rngs]
            held = max(1, max_bytes // (info.height * info.width * 3))
            clips = []
            for group in frame_groups(indices, held):
                flat = np.unique(np.concatenate([indices[e].ravel() for e in group]))
                frames = read_frames(reader, flat.tolist())  # one decode for the group
                clips.extend(
                    (e, frames[torch.from_numpy(np.searchsorted(flat, indices[e]))]) for e in group
                )
        except (VideoError, ValueError) as exc:
            return Skipped(item.video_id, str(exc))
        out, kept = [], []
        for e, clip_views in sorted(clips, key=lambda pair: pair[0]):  # [clips, T, H, W, 3]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(clip_seed(rngs[e]))
                views = torch.stack([self.transform(clip) for clip in clip_views])
            if not self.spec.train and self.spec.crops > 1:  # [clips, crops, T, ...] -> views
                views = views.flatten(0, 1)
            out.append(views)
            kept.append(self._view_rows(indices[e]))
        return self._sample(item, "frames", torch.cat(out), np.concatenate(kept))

    def encoded_views(self, index: int, epochs: Sequence[int]) -> dict | Skipped:
        """`views` of a frame folder with its frames left encoded: the distinct frames'
        JPEG bytes, read once, and each view's geometry, drawn from the same seeds in the
        same order as `views` draws its transforms' (`device_transforms`)."""
        item = self.items[index]
        rngs = [np.random.default_rng([self.seed, epoch, index]) for epoch in epochs]
        try:
            # refuses a video file or a gap; the count, rate and first frame's size
            _, info = open_frame_folder(item.path)
            indices = [self._indices(item, info.num_frames, info.fps, rng) for rng in rngs]
            flat = np.unique(np.concatenate([i.ravel() for i in indices]))
            data = read_folder_bytes(item.path, flat.tolist())
            height, width = _one_size(item.path, flat, data)
        except (VideoError, ValueError) as exc:
            return Skipped(item.video_id, str(exc))
        slots, views, kept = [], [], []
        for e in range(len(epochs)):
            rows = self._view_rows(indices[e])
            slots.append(np.searchsorted(flat, rows))
            kept.append(rows)
            if self.spec.train:  # a generator of its own: no global state to fork and restore
                generator = torch.Generator().manual_seed(clip_seed(rngs[e]))
                views.extend(draw_train_view(height, width, generator) for _ in indices[e])
            else:
                s = self.spec
                views.extend(eval_views(height, width, s.size, s.short_side, s.crops) * s.clips)
        clips = EncodedClips.of_frames(
            data, torch.from_numpy(np.concatenate(slots)), views, self.spec.size
        )
        return self._sample(item, "jpegs", clips, np.concatenate(kept))

    def _view_rows(self, indices: np.ndarray) -> np.ndarray:
        """A clip list's frame indices [clips, T] -> one row per view: each clip's row once
        per spatial crop at evaluation."""
        if self.spec.train or self.spec.crops == 1:
            return indices
        return np.repeat(indices, self.spec.crops, axis=0)

    def _sample(self, item: VideoItem, key: str, clips, frame_indices: np.ndarray) -> dict:
        return {
            # "frames": uint8 [V, T, 3, S, S], normalise_clips on the device; "jpegs": V views
            key: clips,
            "frame_indices": frame_indices,  # int [V, T] (numpy: pickled, no shared memory)
            "label": clip_target(item, self.num_classes, self.multi_label),
            "video_id": item.video_id,
        }


def clip_seed(rng: np.random.Generator) -> int:
    """The seed of torch's generator for a clip's transform parameters: `rng`'s next draw
    after the clip's frame indices."""
    return int(rng.integers(2**62))


def _one_size(folder, indices: np.ndarray, data: Sequence[torch.Tensor]) -> tuple[int, int]:
    """The (height, width) that the JPEG headers of a clip's frames (`data`, of the frames
    at `indices`) share; VideoError naming the first frame file that is no JPEG or whose size
    differs (the frames are stacked on the device)."""
    sizes = []
    for i, frame in zip(indices.tolist(), data):
        sizes.append(jpeg_size(memoryview(frame.numpy())))
        if sizes[-1] is None:
            raise VideoError(frame_file(folder, i), "is not a JPEG image")
        if sizes[-1] != sizes[0]:
            (h, w), (h0, w0) = sizes[-1], sizes[0]
            raise VideoError(frame_file(folder, i), f"is {h}x{w}, unlike the folder's {h0}x{w0}")
    return sizes[0]


def frame_groups(indices: Sequence[np.ndarray], held: int) -> list[list[int]]:
    """Positions of `indices` (each a clip list's frame indices) in groups, in order, whose
    distinct frames number at most `held` (a clip list alone may exceed it): the reads one
    open of a video makes while holding at most `held` decoded frames."""
    groups: list[list[int]] = []
    frames: set[int] = set()
    for position, wanted in enumerate(indices):
        merged = frames.union(wanted.ravel().tolist())
        if groups and len(merged) <= held:
            groups[-1].append(position)
            frames = merged
        else:
            groups.append([position])
            frames = set(wanted.ravel().tolist())
    return groups


def collate_clips(samples: Sequence[dict | Skipped], input_key: str = "frames") -> dict:
    """Flatten views into the batch; skipped videos travel along for the trainer to count.

    `input_key` names the per-view tensor of the samples: "frames" (clips) or "features"
    (a feature cache's frame embeddings)."""
    good = [s for s in samples if not isinstance(s, Skipped)]
    skipped = [s for s in samples if isinstance(s, Skipped)]
    if not good:
        return {
            input_key: torch.empty(0),
            "labels": torch.empty(0),
            "video_ids": [],
            "views": torch.empty(0, dtype=torch.long),
            "skipped": skipped,
        }
    parts = [s[input_key] for s in good]
    inputs = EncodedClips.join(parts) if input_key == "jpegs" else torch.cat(parts)
    counts = [len(s[input_key]) for s in good]
    labels = torch.stack([s["label"] for s in good]).repeat_interleave(torch.tensor(counts), 0)
    return {
        input_key: inputs,
        "labels": labels,
        "video_ids": [s["video_id"] for s, n in zip(good, counts) for _ in range(n)],
        "views": torch.cat([torch.arange(n) for n in counts]),
        "skipped": skipped,
    }


class EpochSampler(Sampler):
    """Yields `(epoch, index)`: shuffled per epoch with `seed`, sharded over DDP ranks.

    Each rank gets `ceil(N / world)` indices (the permutation is padded by wrapping, as
    torch's DistributedSampler does), so every rank runs the same number of steps.
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world = rank, world
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch to draw; `start` skips this rank's first items (resuming mid-epoch)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(0, math.ceil(self.size / self.world) - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        padded = np.resize(order, math.ceil(self.size / self.world) * self.world)  # wraps
        mine = padded[self.rank :: self.world][self.start :]
        return iter((self.epoch, int(i)) for i in mine)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    sampler: EpochSampler | Iterable,
    workers: int = 4,
    prefetch: int = 4,
    pin_memory: bool | None = None,
    collate: Callable | None = None,
) -> DataLoader:
    """Workers (each `prefetch` batches ahead), pinned memory (on CUDA) and persistent
    workers by default; batches are `collate_clips` of the dataset's `input_key` unless
    `collate` says otherwise."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate or partial(collate_clips, input_key=dataset.input_key),
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch if workers > 0 else None,
        drop_last=False,
    )


def default_workers(cores: int, local_processes: int, local_rank: int = 0) -> int:
    """Loader workers of process `local_rank` of the `local_processes` on a machine with
    `cores` cores for them: the cores shared out, the remainder to the first processes so
    that none idles, and at least one."""
    share, left = divmod(cores, max(1, local_processes))
    return max(1, share + int(local_rank < left))


def loader_workers(workers: int | None) -> int:
    """`--workers` as given, else `default_workers` of the cores this process may use among
    torchrun's LOCAL_WORLD_SIZE processes (one process without torchrun)."""
    if workers is not None:
        return workers
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return default_workers(available_cores(), local_processes(), local_rank)


def loader_shm_bytes(
    workers: int, prefetch: int, clips: int, frames: int, size: int, processes: int = 1
) -> int:
    """Shared memory the loaders of `processes` processes may hold at once: each worker's
    `prefetch` batches of `clips` uint8 clips [frames, 3, size, size] (batches travel from
    workers through /dev/shm)."""
    return processes * workers * prefetch * clips * frames * 3 * size * size


def shm_shortfall(needed: int, available: int) -> str | None:
    """The one-line warning when /dev/shm (`available` bytes) is smaller than the `needed`
    bytes of `loader_shm_bytes`; None when it fits."""
    if needed <= available:
        return None
    mib = 2**20
    return (
        f"/dev/shm holds {available / mib:.0f} MiB but the DataLoader workers may hold "
        f"{needed / mib:.0f} MiB in it, and a worker then dies with a bus error: give the "
        f"container more (docker run --shm-size {math.ceil(needed * 1.25 / 2**30)}g), or lower "
        "--workers or --prefetch."
    )
