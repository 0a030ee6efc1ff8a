"""The synthetic storyboard world: layout, class design, ground truth, determinism, candidates."""

from __future__ import annotations

import inspect
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from storyworld.world import definition as D
from storyworld.world import render as R
from storyworld.world import write as W
from subtext_gen.llm.files import read_description_sets
from trainer.data.layouts import load_split
from trainer.data.video import open_video, read_frames

SMALL = dict(videos_per_class_train=2, videos_per_class_test=2, unseen_videos_per_class_train=1)


@pytest.fixture(scope="module")
def default_world_dir(tmp_path_factory) -> tuple[Path, D.WorldInfo]:
    out = tmp_path_factory.mktemp("world")
    return out, W.write_world(out, **SMALL)


def _truths(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "videos").rglob("*.json"))]


def test_defaults_give_enough_videos_to_tell_modes_apart():
    defaults = inspect.signature(W.write_world).parameters
    assert defaults["videos_per_class_train"].default >= 40
    assert defaults["videos_per_class_test"].default >= 25
    assert defaults["size"].default >= 64  # decord reads no narrower frames


def test_layout_the_trainer_reads(default_world_dir):
    out, info = default_world_dir
    world = D.default_world()
    assert info.written and info.videos == 8 * (2 + 2) + 4 * (1 + 2)
    for root, classes, per_split in (
        (out / "seen", world.seen, {"train": 2, "test": 2}),
        (out / "unseen", world.unseen, {"train": 1, "test": 2}),
    ):
        n_classes = len(classes)
        names = tuple(c.name for c in classes)
        for split, per_class in per_split.items():
            split_list = load_split("list", root, split)
            assert split_list.class_names == names
            assert len(split_list.items) == per_class * n_classes
            assert not split_list.missing and not split_list.multi_label
            counts = np.bincount([it.labels[0] for it in split_list.items], minlength=n_classes)
            assert counts.tolist() == [per_class] * n_classes
            for item in split_list.items:
                assert item.path.parent.name == classes[item.labels[0]].slug
    atomic = json.loads((out / "atomic_actions.json").read_text())
    assert len(atomic) == len(D.ATOMIC_ACTIONS) and atomic["1"] == "the square jumps"
    phrasings = json.loads((out / "phrasings.json").read_text())
    assert phrasings["1"] == ["the square jumps", "hop", "the square hops"]
    assert all(phrasings[k][0] == caption for k, caption in atomic.items())
    meta = json.loads((out / "world.json").read_text())
    assert meta["seed"] == 0 and meta["settings"]["frames"] == 24
    assert meta["settings"]["version"] == D.FORMAT_VERSION == 3
    assert [c["name"] for c in meta["seen"]] == [c.name for c in world.seen]
    assert meta["order_only_pairs"] == [
        ["hop then duck", "duck then hop"],
        ["grow then blush", "blush then grow"],
    ]


def test_class_names_use_the_words_the_clip_is_shown():
    """Every word of a class name but its connectives is a phrasing of one of its own
    actions."""
    world = D.default_world()
    for cls in world.classes:
        own = {w for a in cls.actions for w in world.actions[a].words}
        assert set(cls.name.split()) - {"then", "and"} <= own, cls.name


def test_classes_share_actions_and_unseen_recombine_them():
    world = D.default_world()
    names = [c.name for c in world.classes]
    assert len(set(names)) == len(names)
    assert all(2 <= len(c.actions) <= 4 for c in world.classes)
    unrelated = set(D.UNRELATED_IDS)
    assert all(not set(c.actions) & unrelated for c in world.classes)
    seen = world.seen
    sharing = [(a, b) for a, b in combinations(seen, 2) if set(a.actions) & set(b.actions)]
    assert len(sharing) >= 5
    firsts = [c.actions[0] for c in seen]
    assert max(firsts.count(f) for f in firsts) >= 3  # several classes start alike
    # Some pairs differ only in order (labelled), some in exactly one action.
    assert len(world.order_only_pairs) == 2
    for a, b in world.order_only_pairs:
        first, second = (next(c for c in seen if c.name == n) for n in (a, b))
        assert sorted(first.actions) == sorted(second.actions)
        assert first.actions != second.actions
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
    world = D.default_world()
    unrelated = set(D.UNRELATED_IDS)
    uneven, positions = 0, set()
    truths = _truths(out / "seen") + _truths(out / "unseen")
    assert len(truths) == 8 * 4 + 4 * 3
    for truth in truths:
        frames = truth["frames"]
        assert len(frames) == 24
        cls = next(c for c in world.classes if c.name == truth["class"])
        assert truth["actions"] == list(cls.actions)
        segments = truth["segments"]
        assert [s["action"] for s in segments if s["action"] not in unrelated] == truth["actions"]
        assert R.per_frame(segments) == frames
        lengths = [s["end"] - s["start"] for s in segments if s["action"] not in unrelated]
        assert min(lengths) >= 2
        uneven += len(set(lengths)) > 1
        share = sum(f in unrelated for f in frames) / len(frames)
        assert 0.08 <= share <= 0.32
        positions.update(i for i, s in enumerate(segments) if s["action"] in unrelated)
    assert uneven >= 0.7 * len(truths)
    assert len(positions) >= 3  # unrelated frames come at the start, middle and end


def test_ground_truth_matches_the_decoded_videos(default_world_dir):
    out, _ = default_world_dir
    for root in (out / "seen", out / "unseen"):
        for item in load_split("list", root, "test").items:
            truth = json.loads(item.path.with_suffix(".json").read_text())
            _, info = open_video(item.path)
            assert len(truth["frames"]) == info.num_frames == 24
            assert (info.height, info.width) == (64, 64)


GROUND = 46  # rows above it are the scene, below it the floor


def _actor(frame: np.ndarray) -> np.ndarray:
    """Pixels above the floor that differ from the sky's colour: [rows, cols] mask."""
    scene = frame.astype(np.float32)[:GROUND]
    sky = np.median(scene[:8].reshape(-1, 3), axis=0)
    return np.abs(scene - sky).sum(-1) > 60


def _count(frame: np.ndarray, colour, tolerance: float = 40) -> int:
    return int((np.abs(frame.astype(np.float32) - np.array(colour)).max(-1) < tolerance).sum())


@pytest.mark.parametrize("seed", range(5))
def test_every_single_frame_shows_its_action(seed):
    """Each atomic action's signature is on every frame of its segment, compared with the
    same square standing still in the same video."""
    rng = np.random.default_rng(seed)
    keys = [a.key for a in D.ATOMIC_ACTIONS]
    segments = [{"action": i, "start": 3 * i, "end": 3 * i + 3} for i in range(len(keys))]
    frames = R.render(segments, 64, rng)
    assert frames.shape == (30, 64, 64, 3) and frames.dtype == np.uint8
    by_key = {key: frames[3 * i : 3 * i + 3] for i, key in enumerate(keys)}
    still = _actor(by_key["still"][0])
    area, bottom = still.sum(), np.nonzero(still)[0].max()
    for frame in by_key["still"]:
        rows, cols = np.nonzero(_actor(frame))
        assert abs(len(rows) - area) <= 0.1 * area and rows.max() >= GROUND - 2
    for frame in by_key["jump"]:
        assert np.nonzero(_actor(frame))[0].max() <= bottom - 6  # off the ground
    for frame in by_key["crouch"]:
        rows, cols = np.nonzero(_actor(frame))
        assert np.ptp(cols) > 2.5 * np.ptp(rows)  # low and wide
    for frame in by_key["spin"]:
        rows, cols = np.nonzero(_actor(frame))
        assert len(rows) / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1)) < 0.8  # tilted
    for frame in by_key["grow"]:
        assert _actor(frame).sum() > 2.5 * area
    for frame in by_key["shrink"]:
        assert _actor(frame).sum() < 0.4 * area
    props = {
        "red": ((225, 30, 30), 25),
        "wave": (R._FLAG, 10),
        "carry": (R._BOX, 30),
        "ball": (R._BALL, 20),
    }
    for key, (colour, least) in props.items():
        for frame in by_key[key]:
            assert _count(frame, colour) >= least, key
        for other in ("still", "jump", "grow"):
            assert _count(by_key[other][1], colour) < least / 2, (key, other)


def test_deterministic_and_idempotent(tmp_path):
    small = dict(
        videos_per_class_train=1,
        videos_per_class_test=1,
        frames=16,
        unseen_videos_per_class_train=1,
    )
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
    changed = W.write_world(tmp_path / "a", seed=3, **{**small, "videos_per_class_train": 2})
    assert changed.written
    assert len(load_split("list", tmp_path / "a" / "seen", "train").items) == 16


def test_candidate_sets(tmp_path):
    world = D.default_world()
    sets = D.candidate_sets(world)
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
    assert D.CANDIDATES_PATH.read_text() == text  # the shipped file is up to date
    assert read_description_sets(written) == sets


TINY = dict(
    videos_per_class_train=1, videos_per_class_test=1, unseen_videos_per_class_train=1, frames=9
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _killed_after(monkeypatch, videos: int) -> list[Path]:
    """Make `write_mp4` die like a killed process after `videos` videos (leaving the
    half-written temporary file a kill leaves); -> the paths it was asked to write."""
    write_mp4, asked = R.write_mp4, []

    def dying(path: Path, frames: np.ndarray, fps: int = R.FPS) -> None:
        asked.append(path)
        if len(asked) > videos:
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / f"{path.name}.x1y2z3.tmp.mp4").write_bytes(b"half")
            raise KeyboardInterrupt
        write_mp4(path, frames, fps)

    monkeypatch.setattr(W, "write_mp4", dying)
    return asked


def test_interrupted_world_is_never_read_and_resumed(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    W.write_world(reference, **TINY)
    out = tmp_path / "world"
    for seed, videos in ((1, 5), (0, 7)):  # the second meets a partial world of seed 1
        _killed_after(monkeypatch, videos)
        with pytest.raises(KeyboardInterrupt):
            W.write_world(out, seed=seed, **TINY)
        assert not out.exists()  # nothing but the hidden partial folder
        assert (tmp_path / ".world.partial" / "seen" / "videos").is_dir()
        monkeypatch.undo()
    asked = _killed_after(monkeypatch, 10**6)
    move_into_place = W._move_into_place

    def killed(partial, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(W, "_move_into_place", killed)  # complete, killed before the rename
    with pytest.raises(KeyboardInterrupt):
        W.write_world(out, seed=0, **TINY)
    assert len(asked) == 24 - 7  # resumed: only what the kill left unwritten
    monkeypatch.setattr(W, "_move_into_place", move_into_place)
    assert not out.exists() and W.write_world(out, seed=0, **TINY).written
    assert len(asked) == 24 - 7  # the complete partial world is moved as it is
    assert _files(out) == _files(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference", "world"]
    assert W.world_folder(out) == out and len(asked) == 24 - 7  # pretrain-clip: used as is


def test_world_refuses_a_folder_not_its_own_and_a_second_writer(tmp_path):
    import fcntl
    import os

    from storyboard_common.errors import UserError

    legacy = tmp_path / "legacy"  # what a writer killed before this fix left
    (legacy / "seen").mkdir(parents=True)
    (legacy / "atomic_actions.json").write_text("{}")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for folder in (legacy, notes):
        with pytest.raises(UserError, match="is neither a storyboard world") as caught:
            W.world_folder(folder)
        assert str(caught.value).startswith(str(folder))
    with pytest.raises(UserError, match=f"{notes} is not a folder"):
        W.world_folder(notes / "world")
    assert notes.read_text() == "mine" and sorted(p.name for p in legacy.iterdir()) == [
        "atomic_actions.json",
        "seen",
    ]
    own = tmp_path / "own"  # a user's own world: used as it is
    (own / "seen").mkdir(parents=True)
    (own / "atomic_actions.json").write_text("{}")
    (own / "seen" / "train.txt").write_text("")
    assert W.world_folder(own) == own and not (tmp_path / ".own.partial").exists()

    out = tmp_path / "world"
    (tmp_path / ".world.partial").mkdir()
    fd = os.open(tmp_path / ".world.partial", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process writing this world
        with pytest.raises(UserError, match="another process is writing the world"):
            W.write_world(out, **TINY)
    finally:
        os.close(fd)
    assert not out.exists() and W.write_world(out, **TINY).written
