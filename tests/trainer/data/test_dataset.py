from pathlib import Path

import numpy as np
import pytest
import torch

from testkit.videos import write_corrupt, write_video
from trainer.data.dataset import ClipSpec, EpochSampler, VideoClipDataset, make_loader
from trainer.data.items import VideoItem

SMALL = dict(size=32, short_side=36)


def levels(frames: torch.Tensor) -> list[int]:
    """Recover the written frame index of each (flat grey) uint8 frame [T, 3, S, S]."""
    assert frames.dtype == torch.uint8
    return [int(round((float(g) - 16) / 8)) for g in frames.float().mean(dim=(1, 2, 3))]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    good = [write_video(root / f"v{i}.mp4", frames=24, width=64, height=48) for i in range(4)]
    return {
        "good": good,
        "short": write_video(root / "short.avi", frames=3),
        "corrupt": write_corrupt(root / "corrupt.mp4"),
        "missing": root / "missing.mp4",
    }


def items(paths, labels=None):
    return [
        VideoItem(Path(p), Path(p).stem, (labels or {}).get(i, (i % 2,)))
        for i, p in enumerate(paths)
    ]


def test_train_clips_are_keyed_by_seed_epoch_and_item(videos):
    ds = VideoClipDataset(items(videos["good"]), 2, False, ClipSpec(frames=4, **SMALL), seed=1)
    a, b = ds[(0, 1)], ds[(0, 1)]
    assert a["frames"].shape == (1, 4, 3, 32, 32) and a["label"].item() == 1
    assert torch.equal(a["frames"], b["frames"])
    got = levels(a["frames"][0])
    assert all(6 * k <= f < 6 * (k + 1) for k, f in enumerate(got))  # one frame per segment
    epochs = {tuple(levels(ds[(e, 1)]["frames"][0])) for e in range(6)}
    assert len(epochs) > 1  # a new epoch samples other frames


def test_eval_views_are_flattened_into_the_batch(videos):
    spec = ClipSpec(frames=4, train=False, clips=2, crops=3, size=32, short_side=32)
    ds = VideoClipDataset(items(videos["good"][:2]), 2, False, spec)
    batch = (
        make_loader(ds, 2, EpochSampler(len(ds), shuffle=False), workers=0).__iter__().__next__()
    )
    assert batch["frames"].shape == (12, 4, 3, 32, 32)
    assert batch["views"].tolist() == [0, 1, 2, 3, 4, 5] * 2
    assert batch["video_ids"] == ["v0"] * 6 + ["v1"] * 6
    assert batch["labels"].tolist() == [0] * 6 + [1] * 6
    # Clip k samples offset (k + 0.5) / clips inside each segment of 6 frames.
    assert levels(batch["frames"][0]) == [1, 7, 13, 19]
    assert levels(batch["frames"][3]) == [4, 10, 16, 22]


def test_bad_videos_are_skipped_and_reported(videos):
    paths = [videos["good"][0], videos["short"], videos["corrupt"], videos["missing"]]
    ds = VideoClipDataset(items(paths), 2, False, ClipSpec(frames=4, **SMALL))
    batch = next(iter(make_loader(ds, 4, EpochSampler(4, shuffle=False), workers=0)))
    assert batch["video_ids"] == ["v0"] and batch["frames"].shape[0] == 1
    assert sorted(s.video_id for s in batch["skipped"]) == ["corrupt", "missing", "short"]
    assert all(s.reason for s in batch["skipped"])


def test_multi_hot_targets_and_instance_intervals(videos):
    item = VideoItem(videos["good"][0], "c@0", (0, 2), interval=(1.0, 2.0))  # 8 fps: [8, 16)
    spec = ClipSpec(frames=4, **SMALL)
    ds = VideoClipDataset([item], 3, True, spec)
    for epoch in range(5):
        sample = ds[(epoch, 0)]
        assert all(8 <= f < 16 for f in levels(sample["frames"][0]))
    assert sample["label"].tolist() == [1.0, 0.0, 1.0]


def test_loader_with_workers_gives_the_same_clips(videos):
    ds = VideoClipDataset(items(videos["good"]), 2, False, ClipSpec(frames=4, **SMALL), seed=3)
    sampler = EpochSampler(len(ds), shuffle=True, seed=3)
    sampler.set_epoch(2)
    serial = list(make_loader(ds, 2, sampler, workers=0))
    parallel = list(make_loader(ds, 2, sampler, workers=2))
    assert [b["video_ids"] for b in serial] == [b["video_ids"] for b in parallel]
    for s, p in zip(serial, parallel):
        assert torch.equal(s["frames"], p["frames"])


def test_epoch_sampler_shards_ranks():
    ranks = [list(EpochSampler(10, True, seed=0, rank=r, world=3)) for r in range(3)]
    assert all(len(r) == 4 for r in ranks)
    assert {i for r in ranks for _, i in r} == set(range(10))
    again = list(EpochSampler(10, True, seed=0, rank=1, world=3))
    assert again == ranks[1]
    s = EpochSampler(10, True, seed=0)
    s.set_epoch(1)
    assert [i for _, i in s] != [i for _, i in EpochSampler(10, True, seed=0)]
    assert np.array_equal(sorted(i for _, i in s), np.arange(10))


def test_many_training_views_come_from_one_open_and_equal_one_read_each(videos, monkeypatch):
    """The feature cache's training views: one open of the video, sorted batch reads of the
    frames of all epochs (grouped under a memory budget), pixel for pixel each epoch's clip."""
    from trainer.data import dataset as dataset_module

    ds = VideoClipDataset(items(videos["good"]), 2, False, ClipSpec(frames=4, **SMALL), seed=1)
    epochs = list(range(8))
    each = [ds[(e, 1)] for e in epochs]
    opened, reads = [], []
    real_open, real_read = dataset_module.open_video, dataset_module.read_frames
    monkeypatch.setattr(
        dataset_module, "open_video", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k)
    )
    monkeypatch.setattr(
        dataset_module, "read_frames", lambda r, i: reads.append(list(i)) or real_read(r, i)
    )
    frame_bytes = 64 * 48 * 3
    for budget, groups in ((dataset_module.DECODE_BUDGET, 1), (6 * frame_bytes, 8)):
        opened.clear(), reads.clear()
        many = ds.views(1, epochs, max_bytes=budget)
        assert torch.equal(many["frames"], torch.cat([s["frames"] for s in each]))
        assert np.array_equal(
            many["frame_indices"], np.concatenate([s["frame_indices"] for s in each])
        )
        assert len(opened) == 1 and len(reads) == groups  # 8 clips of 4 frames: 6 fit one
        assert all(r == sorted(set(r)) for r in reads)  # sorted, each frame decoded once
    assert many["label"].item() == 1 and many["video_id"] == "v1"


def test_frame_groups_hold_at_most_the_budget_in_order():
    from trainer.data.dataset import frame_groups

    clips = [np.array([0, 4, 8]), np.array([1, 4, 9]), np.array([0, 4, 8]), np.array([2, 3, 5, 6])]
    assert frame_groups(clips, 6) == [[0, 1, 2], [3]]  # {0,1,4,8,9} then 4 more would be 9
    assert frame_groups(clips, 100) == [[0, 1, 2, 3]]
    assert frame_groups(clips, 2) == [[0], [1], [2], [3]]  # a clip alone may exceed it
