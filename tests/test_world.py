"""The synthetic storyboard world: layout, class design, ground truth, determinism, candidates."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from subtext_gen.llm.files import read_description_sets
from trainer import world as W
from trainer.data.layouts import load_split
from trainer.data.video import open_video, read_frames


@pytest.fixture(scope="module")
def default_world_dir(tmp_path_factory) -> tuple[Path, W.WorldInfo]:
    out = tmp_path_factory.mktemp("world")
    return out, W.write_world(out)


def _truths(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "videos").rglob("*.json"))]


def test_layout_the_trainer_reads(default_world_dir):
    out, info = default_world_dir
    world = W.default_world()
    assert info.written and info.videos == (8 + 4) * 12
    for root, classes, n_classes in (
        (out / "seen", world.seen, 8),
        (out / "unseen", world.unseen, 4),
    ):
        assert len(classes) == n_classes
        names = tuple(c.name for c in classes)
        for split, per_class in (("train", 8), ("test", 4)):
            split_list = load_split("list", root, split)
            assert split_list.class_names == names
            assert len(split_list.items) == per_class * n_classes
            assert not split_list.missing and not split_list.multi_label
            counts = np.bincount([it.labels[0] for it in split_list.items], minlength=n_classes)
            assert counts.tolist() == [per_class] * n_classes
            for item in split_list.items[:: per_class * 2]:
                assert item.path.parent.name == classes[item.labels[0]].slug
    atomic = json.loads((out / "atomic_actions.json").read_text())
    assert len(atomic) == len(W.ATOMIC_ACTIONS) and atomic["3"] == "the square jumps"
    phrasings = json.loads((out / "phrasings.json").read_text())
    assert phrasings["3"] == ["the square jumps", "hop", "the square hops"]
    assert all(phrasings[k][0] == caption for k, caption in atomic.items())
    meta = json.loads((out / "world.json").read_text())
    assert meta["seed"] == 0 and meta["settings"]["frames"] == 32
    assert [c["name"] for c in meta["seen"]] == [c.name for c in world.seen]


def test_class_names_use_the_words_the_clip_is_shown():
    """Every word of a class name but its connectives is a phrasing of one of its own
    actions, except "pace" (left then right), which the world's CLIP never sees."""
    world = W.default_world()
    for cls in world.classes:
        own = {w for a in cls.actions for w in world.actions[a].words}
        words = set(cls.name.split()) - {"then", "and"}
        assert words - own <= {"pace"}, cls.name


def test_classes_share_actions_and_unseen_recombine_them():
    world = W.default_world()
    names = [c.name for c in world.classes]
    assert len(set(names)) == len(names)
    assert all(2 <= len(c.actions) <= 4 for c in world.classes)
    unrelated = set(W.UNRELATED_IDS)
    assert all(not set(c.actions) & unrelated for c in world.classes)
    seen = world.seen
    sharing = [(a, b) for a, b in combinations(seen, 2) if set(a.actions) & set(b.actions)]
    assert len(sharing) >= 5
    firsts = [c.actions[0] for c in seen]
    assert max(firsts.count(f) for f in firsts) >= 3  # several classes start alike
    # Some pairs differ only in order, some in exactly one action.
    assert any(
        a.actions != b.actions and sorted(a.actions) == sorted(b.actions)
        for a, b in combinations(seen, 2)
    )
    assert any(
        len(a.actions) == len(b.actions) and sum(x != y for x, y in zip(a.actions, b.actions)) == 1
        for a, b in combinations(seen, 2)
    )
    seen_actions = {a for c in seen for a in c.actions}
    seen_sequences = {c.actions for c in seen}
    for c in world.unseen:
        assert set(c.actions) <= seen_actions
        assert c.actions not in seen_sequences


def test_ground_truth_durations_and_unrelated_frames(default_world_dir):
    out, _ = default_world_dir
    world = W.default_world()
    unrelated = set(W.UNRELATED_IDS)
    uneven, positions = 0, set()
    truths = _truths(out / "seen") + _truths(out / "unseen")
    assert len(truths) == 144
    for truth in truths:
        frames = truth["frames"]
        assert len(frames) == 32
        cls = next(c for c in world.classes if c.name == truth["class"])
        assert truth["actions"] == list(cls.actions)
        segments = truth["segments"]
        assert [s["action"] for s in segments if s["action"] not in unrelated] == truth["actions"]
        assert W.per_frame(segments) == frames
        lengths = [s["end"] - s["start"] for s in segments if s["action"] not in unrelated]
        assert min(lengths) >= 2
        uneven += len(set(lengths)) > 1
        share = sum(f in unrelated for f in frames) / len(frames)
        assert 0.08 <= share <= 0.32
        positions.update(i for i, s in enumerate(segments) if s["action"] in unrelated)
    assert uneven >= 0.8 * len(truths)
    assert len(positions) >= 3  # unrelated frames come at the start, middle and end


def test_ground_truth_matches_the_decoded_videos(default_world_dir):
    out, _ = default_world_dir
    for root in (out / "seen", out / "unseen"):
        for item in load_split("list", root, "test").items:
            truth = json.loads(item.path.with_suffix(".json").read_text())
            _, info = open_video(item.path)
            assert len(truth["frames"]) == info.num_frames == 32
            assert (info.height, info.width) == (64, 64)


def _centroid_x(frame: np.ndarray) -> float:
    frame = frame.astype(np.float32)[:40]  # above the floor
    background = np.median(frame.reshape(-1, 3), axis=0)
    mask = np.abs(frame - background).sum(-1) > 60
    return float(np.nonzero(mask)[1].mean())


def test_frames_show_the_actions():
    rng = np.random.default_rng(0)
    right = [{"action": 2, "start": 0, "end": 8}]
    frames = W.render(right, 64, rng)
    assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8
    assert _centroid_x(frames[-1]) - _centroid_x(frames[0]) > 10
    left = W.render([{"action": 1, "start": 0, "end": 8}], 64, rng)
    assert _centroid_x(left[-1]) - _centroid_x(left[0]) < -10
    red = W.render([{"action": 7, "start": 0, "end": 6}], 64, rng).astype(int)
    assert (red[-1, ..., 0] - red[-1, ..., 2]).max() > 120


def test_deterministic_and_idempotent(tmp_path):
    small = dict(videos_per_class_train=1, videos_per_class_test=1, frames=16)
    a = W.write_world(tmp_path / "a", seed=3, **small)
    b = W.write_world(tmp_path / "b", seed=3, **small)
    c = W.write_world(tmp_path / "c", seed=4, **small)
    assert a.written and b.written and c.written
    world_a = (tmp_path / "a" / "world.json").read_text()
    assert world_a == (tmp_path / "b" / "world.json").read_text()
    assert world_a != (tmp_path / "c" / "world.json").read_text()

    def first_frames(root: Path) -> np.ndarray:
        item = load_split("list", root / "seen", "train").items[0]
        reader, info = open_video(item.path)
        return read_frames(reader, list(range(info.num_frames))).numpy()

    assert np.array_equal(first_frames(tmp_path / "a"), first_frames(tmp_path / "b"))
    assert not np.array_equal(first_frames(tmp_path / "a"), first_frames(tmp_path / "c"))

    stamp = (tmp_path / "a" / "world.json").stat().st_mtime_ns
    again = W.write_world(tmp_path / "a", seed=3, **small)
    assert not again.written and again.videos == 12 * 2
    assert (tmp_path / "a" / "world.json").stat().st_mtime_ns == stamp
    changed = W.write_world(tmp_path / "a", seed=3, videos_per_class_train=2, frames=16)
    assert changed.written
    assert len(load_split("list", tmp_path / "a" / "seen", "train").items) == 16


def test_candidate_sets(tmp_path):
    world = W.default_world()
    sets = W.candidate_sets(world)
    assert list(sets) == [c.name for c in world.classes]
    for cls in world.classes:
        faithful, unrelated, near = sets[cls.name]
        assert len(faithful) == len(set(faithful)) == 4
        captions = [world.actions[a].caption for a in cls.actions]
        assert all(any(t.startswith(cap) for t in faithful) for cap in captions)
        assert len(unrelated) == len(set(unrelated)) == 4
        assert not set(unrelated) & set(captions)
        first = world.actions[cls.actions[0]].caption
        assert len(near) == len(set(near)) == 4 and all(first in t for t in near)

    written = W.write_candidates(tmp_path / "candidates.json")
    text = written.read_text()
    assert text == json.dumps(sets, indent=1, sort_keys=True) + "\n"
    assert W.CANDIDATES_PATH.read_text() == text  # the shipped file is up to date
    assert read_description_sets(written) == sets
