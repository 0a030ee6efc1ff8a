"""What a run reads from a feature cache: which cached view a training item reads at an
epoch (`train_view`), the cached splits as datasets the training and evaluation loops take
(`FeatureDataset`), and a run's pair of them (`cached_datasets`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ..data.dataset import Skipped, clip_target
from ..data.items import VideoItem
from ..run_data import RunData, clip_datasets
from ..run_models import RunModel
from ..settings import RunConfig
from .store import TEST, TRAIN, FeatureCache, cache_identity


def train_view(epoch: int, index: int, unique: int, length: int, views: int) -> int:
    """The cached view that item `index` of a training list of `length` items reads at
    `epoch`, where the list is `unique` distinct items repeated (a few-shot list; a
    supervised list has `unique == length`).

    An item is read once per repetition, so it counts its appearances: `epoch * repeats +
    index // unique`, modulo V. A supervised run reads view `epoch % V`, the very clip an
    uncached run draws at that epoch while `epochs <= V`; a few-shot item sees V different
    clips before any repeats.
    """
    repeats = length // unique
    return (epoch * repeats + index // unique) % views


class FeatureDataset(Dataset):
    """A cached split as `VideoClipDataset` samples, with "features" [views, T, D] (the
    tower's frame embeddings) in place of "frames", so the training and evaluation loops serve both.

    `positions[i]` is the position in the cached split of item i; training items read one
    view (`train_view`, `unique` distinct items), test items all their views. Videos the
    cache could not read come back as `Skipped`, as the video dataset gives them.
    """

    input_key = "features"

    def __init__(
        self,
        cache: FeatureCache,
        split: str,
        items: Sequence[VideoItem],
        positions: Sequence[int],
        num_classes: int,
        multi_label: bool,
        unique: int = 0,
    ):
        self.cache, self.split = cache, split
        self.items, self.positions = list(items), list(positions)
        self.num_classes, self.multi_label = num_classes, multi_label
        self.unique = unique or len(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> dict | Skipped:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        item, position = self.items[index], self.positions[index]
        reason = self.cache.skipped[self.split].get(position)
        if reason is not None:
            return Skipped(item.video_id, reason)
        count = self.cache.views[self.split]
        if self.split == TRAIN:
            views = [train_view(epoch, index, self.unique, len(self.items), count)]
        else:
            views = range(count)
        return {
            "features": torch.from_numpy(self.cache.read(self.split, position, views)),
            "label": clip_target(item, self.num_classes, self.multi_label),
            "video_id": item.video_id,
        }


def cached_datasets(
    cfg: RunConfig, data: RunData, fold: int | None, run_model: RunModel
) -> tuple[FeatureDataset, FeatureDataset]:
    """A run's training and test sets read from the feature cache `cfg.features`, which
    must have been made for this fold, CLIP and clip settings."""
    train_set, test_set = clip_datasets(
        cfg, data.train, list(data.train.items), data.test, run_model.image_size
    )
    identity = cache_identity(cfg.dataset, fold, run_model.clip_id, train_set, test_set)
    cache = FeatureCache(cfg.features, identity, {TRAIN: len(train_set), TEST: len(test_set)})
    position = {item: p for p, item in enumerate(data.train.items)}
    num_classes = len(data.train.class_names)
    unique = len(data.fewshot) if data.fewshot is not None else len(data.train_items)
    train = FeatureDataset(
        cache,
        TRAIN,
        data.train_items,
        [position[item] for item in data.train_items],
        num_classes,
        data.train.multi_label,
        unique,
    )
    test = FeatureDataset(
        cache,
        TEST,
        data.test.items,
        range(len(data.test.items)),
        num_classes,
        data.test.multi_label,
    )
    return train, test
