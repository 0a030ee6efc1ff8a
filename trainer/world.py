"""A small synthetic "storyboard world": classes made of atomic actions, written as real videos.

`make demo` needs a dataset that exists on any machine, so this module draws one (numpy only)
and writes it with PyAV (mpeg4) in the generic `list` layout the trainer reads:

    <out>/atomic_actions.json         {atomic id: caption}
    <out>/phrasings.json              {atomic id: [caption, other phrasings...]}
    <out>/world.json                  classes and their action sequences, seed, settings
    <out>/seen/classes.csv            `id,name` (8 classes: supervised and few-shot)
    <out>/seen/train.txt, test.txt    `videos/<class_slug>/<id>.mp4 <class id>`
    <out>/seen/videos/<class_slug>/<id>.mp4 and <id>.json (per-frame ground truth)
    <out>/unseen/...                  the same for 4 zero-shot classes

The design follows the paper's two observations (fixed before any result was seen):
(i) classes share atomic actions and appearance: the actor is always the same square,
several classes start with the same action, some differ only in order ("hop then dash" /
"dash then hop") or in one action ("spin and shrink" / "spin and grow"); (ii) inside a
video the atomic actions have uneven, random durations and 10-30% of the frames are
unrelated to the class (the square stands still, or a ball rolls past) at random places.
Unseen classes recombine the seen classes' atomic actions in sequences no seen class has.

`candidate_sets(world)` gives per class a faithful sub-text set and two worse ones;
`write_candidates(path)` ships them as JSON for `subtext_gen generate --llm file`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from subtext_gen.artifacts import atomic_write_text

FORMAT_VERSION = 2
FPS = 8
CANDIDATES_PATH = Path(__file__).resolve().parent.parent / "data" / "world" / "candidates.json"
SUBTEXTS_PER_SET = 4


@dataclass(frozen=True)
class AtomicAction:
    """One atomic action: its caption, finer phrasings of its start and end, and the words
    class names use for it (`words`: what the world's CLIP also sees as captions, the way a
    web-trained CLIP has seen "ride" and "bike" before it meets "ride bike")."""

    id: int
    key: str
    caption: str
    begin: str
    end: str
    words: tuple[str, ...] = ()
    unrelated: bool = False  # a distractor: never part of a class, only idle/unrelated frames

    @property
    def phrasings(self) -> tuple[str, ...]:
        return (self.caption, *self.words)


ATOMIC_ACTIONS: tuple[AtomicAction, ...] = (
    AtomicAction(
        0,
        "still",
        "the square stands still",
        "the square stops moving",
        "the square waits in place",
        words=("wait", "the square waits"),
        unrelated=True,
    ),
    AtomicAction(
        1,
        "left",
        "the square moves left",
        "the square starts sliding to the left",
        "the square stops on the left",
        words=("retreat", "the square retreats"),
    ),
    AtomicAction(
        2,
        "right",
        "the square moves right",
        "the square starts sliding to the right",
        "the square stops on the right",
        words=("dash", "the square dashes"),
    ),
    AtomicAction(
        3,
        "jump",
        "the square jumps",
        "the square leaps up into the air",
        "the square lands back on the ground",
        words=("hop", "the square hops"),
    ),
    AtomicAction(
        4,
        "spin",
        "the square spins",
        "the square starts to rotate",
        "the square ends its turn upside down",
        words=("spin",),
    ),
    AtomicAction(
        5,
        "grow",
        "the square grows",
        "the square starts to swell",
        "the square ends up big",
        words=("grow",),
    ),
    AtomicAction(
        6,
        "shrink",
        "the square shrinks",
        "the square starts to get smaller",
        "the square ends up small",
        words=("shrink",),
    ),
    AtomicAction(
        7,
        "red",
        "the square turns red",
        "the square starts to blush",
        "the square is bright red",
        words=("blush", "the square blushes"),
    ),
    AtomicAction(
        8,
        "ball",
        "a ball rolls past the square",
        "a ball enters the scene",
        "the ball leaves the scene",
        words=("a ball", "a rolling ball"),
        unrelated=True,
    ),
)
_BY_KEY = {a.key: a for a in ATOMIC_ACTIONS}
UNRELATED_IDS = tuple(a.id for a in ATOMIC_ACTIONS if a.unrelated)


@dataclass(frozen=True)
class WorldClass:
    name: str
    actions: tuple[int, ...]  # atomic action ids, in order
    seen: bool

    @property
    def slug(self) -> str:
        return slug(self.name)


@dataclass(frozen=True)
class World:
    """The definition of a world (no videos): atomic actions and classes."""

    actions: tuple[AtomicAction, ...]
    seen: tuple[WorldClass, ...]
    unseen: tuple[WorldClass, ...]

    @property
    def classes(self) -> tuple[WorldClass, ...]:
        return self.seen + self.unseen


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _cls(name: str, keys: str, seen: bool) -> WorldClass:
    return WorldClass(name, tuple(_BY_KEY[k].id for k in keys.split()), seen)


_SEEN = (
    ("hop then dash", "jump right"),
    ("hop then retreat", "jump left"),  # one action from "hop then dash"
    ("dash then hop", "right jump"),  # the order of "hop then dash" swapped
    ("spin and shrink", "spin shrink"),
    ("spin and grow", "spin grow"),  # one action from "spin and shrink"
    ("grow then blush", "grow red"),
    ("hop spin hop", "jump spin jump"),
    ("pace spin and grow", "left right spin grow"),
)
_UNSEEN = (
    ("blush then shrink", "red shrink"),
    ("retreat then spin", "left spin"),
    ("shrink then hop", "shrink jump"),
    ("dash spin blush and shrink", "right spin red shrink"),
)


def default_world() -> World:
    """The fixed world definition (the seed only changes the videos drawn from it)."""
    return World(
        ATOMIC_ACTIONS,
        tuple(_cls(n, k, True) for n, k in _SEEN),
        tuple(_cls(n, k, False) for n, k in _UNSEEN),
    )


@dataclass
class WorldInfo:
    """What `write_world` wrote (or found already written)."""

    out_dir: Path
    seen_root: Path
    unseen_root: Path
    world: World
    settings: dict
    written: bool  # False when an identical world was already on disk
    videos: int = 0
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# Timelines: which atomic action each frame shows.


def plan_timeline(actions: tuple[int, ...], frames: int, rng: np.random.Generator) -> list[dict]:
    """Segments `{"action", "start", "end"}` (end exclusive) covering `frames` frames.

    10-30% of the frames are unrelated (still / ball), split into 1-2 runs placed at random
    gaps of the sequence (before, between or after the class's actions); the remaining frames
    go to the class's actions with random, uneven durations (at least 2 frames each).
    """
    k = len(actions)
    n_unrelated = int(round(rng.uniform(0.10, 0.30) * frames))
    min_len = 2
    n_unrelated = max(1, min(n_unrelated, frames - min_len * k))
    n_action = frames - n_unrelated
    weights = rng.dirichlet(np.full(k, 1.5))
    spare = n_action - min_len * k
    lengths = min_len + np.floor(weights * spare).astype(int)
    for i in np.argsort(-weights)[: n_action - int(lengths.sum())]:
        lengths[i] += 1
    runs = 1 if n_unrelated < 4 else int(rng.integers(1, 3))
    run_lengths = [n_unrelated] if runs == 1 else [n_unrelated // 2, n_unrelated - n_unrelated // 2]
    gaps = sorted(rng.choice(k + 1, size=runs, replace=False).tolist())
    kinds = [int(rng.choice(UNRELATED_IDS)) for _ in range(runs)]

    segments: list[dict] = []
    t = 0

    def add(action: int, length: int) -> None:
        nonlocal t
        segments.append({"action": int(action), "start": t, "end": t + int(length)})
        t += int(length)

    for i in range(k + 1):
        for gap, kind, length in zip(gaps, kinds, run_lengths):
            if gap == i:
                add(kind, length)
        if i < k:
            add(actions[i], lengths[i])
    assert t == frames
    return segments


def per_frame(segments: list[dict]) -> list[int]:
    out: list[int] = []
    for s in segments:
        out += [s["action"]] * (s["end"] - s["start"])
    return out


# ----------------------------------------------------------------------------------------
# Drawing (numpy only).

_RED = np.array([225.0, 30.0, 30.0])
_BASE_COLOURS = np.array([[40.0, 70.0, 200.0], [30.0, 150.0, 60.0], [120.0, 50.0, 170.0]])


def render(segments: list[dict], size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames uint8 [T, size, size, 3] of the square acting out `segments`."""
    s = size / 64.0
    frames = segments[-1]["end"]
    ground = 44.0 * s
    half0 = rng.uniform(7.0, 9.0) * s
    move = rng.uniform(16.0, 22.0) * s
    hop = rng.uniform(13.0, 18.0) * s
    colour0 = _BASE_COLOURS[rng.integers(len(_BASE_COLOURS))] + rng.uniform(-20, 20, 3)
    tint = rng.uniform(170.0, 235.0, 3)
    floor = tint * rng.uniform(0.6, 0.8)

    # The square's state at the start of each segment; the start x keeps the whole path
    # (moves and sizes) inside the frame.
    xs, x, lo, hi = [], 0.0, 0.0, 0.0
    halfs, half = [], half0
    for seg in segments:
        xs.append(x)
        halfs.append(half)
        x += {1: -move, 2: move}.get(seg["action"], 0.0)
        half = float(np.clip(half * {5: 1.6, 6: 0.6}.get(seg["action"], 1.0), 3 * s, 15 * s))
        lo, hi = min(lo, x), max(hi, x)
    margin = max(halfs + [half]) * 1.45 + 1.0
    left, right = margin - lo, size - margin - hi
    x_start = rng.uniform(left, right) if right > left else size / 2 - (lo + hi) / 2

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    background = np.empty((size, size, 3), np.float32)
    background[:] = tint
    background[int(ground) + 1 :] = floor
    video = np.empty((frames, size, size, 3), np.uint8)
    angle, colour, ball_dir = 0.0, colour0.copy(), 1.0
    for i, seg in enumerate(segments):
        a, n = seg["action"], seg["end"] - seg["start"]
        x0, h0 = x_start + xs[i], halfs[i]
        h1 = halfs[i + 1] if i + 1 < len(halfs) else half
        c0 = colour.copy()
        ball_dir = float(rng.choice((-1.0, 1.0)))
        for j in range(n):
            p = (j + 1) / n
            cx, cy, h, c, ang = x0, ground, h0, c0, angle
            if a in (1, 2):
                cx = x0 + (move if a == 2 else -move) * p
            elif a == 3:
                cy = ground - hop * math.sin(math.pi * p)
            elif a == 4:
                ang = angle + math.pi * p
            elif a in (5, 6):
                h = h0 + (h1 - h0) * p
            elif a == 7:
                c = c0 + (_RED - c0) * p
            frame = background.copy()
            u = (xx - cx) * math.cos(ang) + (yy - (cy - h)) * math.sin(ang)
            v = -(xx - cx) * math.sin(ang) + (yy - (cy - h)) * math.cos(ang)
            body = (np.abs(u) <= h) & (np.abs(v) <= h)
            frame[body] = c
            frame[body & (np.abs(v) <= h * 0.3) & (u > 0)] = c * 0.35  # a bar shows the turn
            if a == 8:
                bx = (size / 2) + ball_dir * (p - 0.5) * (size + 12 * s)
                ball = (xx - bx) ** 2 + (yy - (ground - 4 * s)) ** 2 <= (4 * s) ** 2
                frame[ball] = (230.0, 200.0, 40.0)
            frame += rng.normal(0.0, 4.0, frame.shape).astype(np.float32)
            video[seg["start"] + j] = frame.clip(0, 255).astype(np.uint8)
        if a == 4:
            angle += math.pi
        elif a == 7:
            colour = _RED.copy()
    return video


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Write uint8 [T, H, W, 3] frames as an mpeg4 video (atomically: temp file, rename)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    height, width = frames.shape[1:3]
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "2"}
        stream.thread_count = 1
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------
# Writing the datasets.


def _settings(seed, per_train, per_test, frames, size) -> dict:
    return {
        "version": FORMAT_VERSION,
        "seed": int(seed),
        "videos_per_class_train": int(per_train),
        "videos_per_class_test": int(per_test),
        "frames": int(frames),
        "size": int(size),
        "fps": FPS,
    }


def _world_json(world: World, settings: dict) -> dict:
    def cls(c: WorldClass, i: int) -> dict:
        return {
            "id": i,
            "name": c.name,
            "slug": c.slug,
            "actions": list(c.actions),
            "captions": [world.actions[a].caption for a in c.actions],
        }

    return {
        "settings": settings,
        "seed": settings["seed"],
        "atomic_actions": {str(a.id): asdict(a) for a in world.actions},
        "unrelated_actions": [a.id for a in world.actions if a.unrelated],
        "seen": [cls(c, i) for i, c in enumerate(world.seen)],
        "unseen": [cls(c, i) for i, c in enumerate(world.unseen)],
    }


def _write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _write_dataset(
    root: Path, classes: tuple[WorldClass, ...], group: int, world: World, settings: dict
) -> int:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "classes.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "name"])
        for i, c in enumerate(classes):
            writer.writerow([i, c.name])
    count = 0
    splits = (
        ("train", settings["videos_per_class_train"]),
        ("test", settings["videos_per_class_test"]),
    )
    for split_index, (split, per_class) in enumerate(splits):
        lines = []
        for ci, c in enumerate(classes):
            for vi in range(per_class):
                # One generator per video: the same video whatever else is written.
                rng = np.random.default_rng([settings["seed"], group, ci, split_index, vi])
                video_id = f"{c.slug}_{split}_{vi:03d}"
                rel = f"videos/{c.slug}/{video_id}.mp4"
                segments = plan_timeline(c.actions, settings["frames"], rng)
                write_mp4(root / rel, render(segments, settings["size"], rng))
                truth = {
                    "video": video_id,
                    "class": c.name,
                    "class_id": ci,
                    "split": split,
                    "actions": list(c.actions),
                    "captions": [world.actions[a].caption for a in c.actions],
                    "frames": per_frame(segments),
                    "segments": segments,
                    "unrelated_actions": list(UNRELATED_IDS),
                    "fps": FPS,
                }
                _write_json((root / rel).with_suffix(".json"), truth)
                lines.append(f"{rel} {ci}\n")
                count += 1
        (root / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
    return count


def write_world(
    out_dir: Path,
    seed: int = 0,
    videos_per_class_train: int = 8,
    videos_per_class_test: int = 4,
    frames: int = 32,
    size: int = 64,
) -> WorldInfo:
    """Write the seen and unseen datasets under `out_dir` (see the module docstring).

    Idempotent: when `<out>/world.json` already records the same settings nothing is
    rewritten. `world.json` is written last, so an interrupted run is redone in full.
    """
    world = default_world()
    if frames < 4 * 2 + 1:
        raise ValueError(f"frames must be at least 9 (got {frames})")
    if size < 32:
        raise ValueError(f"size must be at least 32 (got {size})")
    out = Path(out_dir)
    settings = _settings(seed, videos_per_class_train, videos_per_class_test, frames, size)
    info = WorldInfo(out, out / "seen", out / "unseen", world, settings, written=False)
    world_file = out / "world.json"
    if world_file.is_file():
        try:
            old = json.loads(world_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = None
        if isinstance(old, dict) and old.get("settings") == settings:
            info.videos = sum(len(classes) for classes in (world.seen, world.unseen)) * (
                videos_per_class_train + videos_per_class_test
            )
            return info
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "atomic_actions.json", {str(a.id): a.caption for a in world.actions})
    _write_json(out / "phrasings.json", {str(a.id): list(a.phrasings) for a in world.actions})
    info.videos = _write_dataset(info.seen_root, world.seen, 0, world, settings)
    info.videos += _write_dataset(info.unseen_root, world.unseen, 1, world, settings)
    _write_json(world_file, _world_json(world, settings))
    info.written = True
    return info


# ----------------------------------------------------------------------------------------
# Candidate sub-text sets.


def faithful_set(c: WorldClass, world: World) -> list[str]:
    """The class's atomic captions in order, made exactly 4 distinct sub-texts.

    A repeated action reads "... again"; a short sequence is padded with the finer phrasing
    of its first action's start, then of its last action's end; a long one keeps its first 4.
    """
    texts: list[str] = []
    for a in c.actions:
        caption = world.actions[a].caption
        texts.append(f"{caption} again" if caption in texts else caption)
    first, last = world.actions[c.actions[0]], world.actions[c.actions[-1]]
    if len(texts) < SUBTEXTS_PER_SET:
        texts.insert(0, first.begin)
    if len(texts) < SUBTEXTS_PER_SET:
        texts.append(last.end)
    extra = [a.begin for a in world.actions] + [a.end for a in world.actions]
    while len(texts) < SUBTEXTS_PER_SET:  # not reached by the default world
        texts.append(next(t for t in extra if t not in texts))
    return texts[:SUBTEXTS_PER_SET]


def unrelated_set(c: WorldClass, world: World) -> list[str]:
    """Captions of 4 atomic actions the class does not contain (class-like ones first)."""
    others = [a for a in world.actions if a.id not in c.actions]
    others.sort(key=lambda a: (a.unrelated, a.id))
    return [a.caption for a in others[:SUBTEXTS_PER_SET]]


def near_duplicate_set(c: WorldClass, world: World) -> list[str]:
    """4 near-duplicates of the class's first atomic action: related, not diverse (what
    Eq. 3's diversity is there to reject)."""
    caption = world.actions[c.actions[0]].caption
    return [caption, f"{caption} again", f"{caption} once more", f"then {caption}"]


def candidate_sets(world: World | WorldInfo | None = None) -> dict[str, list[list[str]]]:
    """{class name: [faithful, unrelated, near-duplicates]} for every seen and unseen class."""
    if world is None:
        world = default_world()
    if isinstance(world, WorldInfo):
        world = world.world
    return {
        c.name: [faithful_set(c, world), unrelated_set(c, world), near_duplicate_set(c, world)]
        for c in world.classes
    }


def write_candidates(path: Path = CANDIDATES_PATH) -> Path:
    """Write the default world's candidate sets as JSON (`{class: [[...], [...], [...]]}`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(candidate_sets(default_world()), indent=1, sort_keys=True) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


if __name__ == "__main__":  # pragma: no cover
    import sys
    import time

    start = time.perf_counter()
    if len(sys.argv) > 1:
        result = write_world(Path(sys.argv[1]))
        print(f"{result.videos} videos, written={result.written}", end=" ")
    else:
        print(write_candidates(), end=" ")
    print(f"in {time.perf_counter() - start:.1f}s")
