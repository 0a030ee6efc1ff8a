"""A synthetic "storyboard world": classes made of atomic actions, written as real videos.

`make demo` and `make study` need a dataset that exists on any machine, so this module draws
one (numpy only) and writes it with PyAV (mpeg4) in the generic `list` layout the trainer
reads:

    <out>/atomic_actions.json         {atomic id: caption}
    <out>/phrasings.json              {atomic id: [caption, other phrasings...]}
    <out>/world.json                  classes, their action sequences, order-only pairs,
                                      seed, settings
    <out>/seen/classes.csv            `id,name` (8 classes: supervised and few-shot)
    <out>/seen/train.txt, test.txt    `videos/<class_slug>/<id>.mp4 <class id>`
    <out>/seen/videos/<class_slug>/<id>.mp4 and <id>.json (per-frame ground truth)
    <out>/unseen/...                  the same for 4 zero-shot classes (their few training
                                      videos exist for the layout only; nothing trains on them)

A world is written all or nothing: into the hidden sibling `.<out>.partial` (locked while
written; a killed writer's is resumed), then renamed onto `<out>`. A folder holding
`world.json` is a complete world; one that holds neither that nor nothing is refused.

The design (format 3, fixed before any result of it was seen) meets the paper's premise that
a CLIP recognises what each frame shows:

* Every atomic action has a single-frame signature, held for the whole of its segment: a
  pose (in the air, squashed, tilted), a size (big, small), a colour (red) or a prop (a flag,
  a box). Where the square stands drifts at random and carries no meaning.
* Classes share actions and appearance (always the same square); several start with the
  same action; some pairs differ in one action ("hop then duck" / "hop then wave") and some
  only in order ("hop then duck" / "duck then hop": `ORDER_ONLY_PAIRS`; no bag-of-frames
  mode can tell those apart).
* Inside a video the actions have uneven random durations and 10-30% of the frames are
  unrelated to the class (the square stands still, or a ball rolls past) at random places.
* Unseen classes recombine the seen classes' actions in sequences no seen class has.

`candidate_sets(world)` gives per class a faithful sub-text set and two worse ones;
`write_candidates(path)` ships them as JSON for `subtext_gen generate --llm file`.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_path, atomic_write_text, make_folder, os_reason
from storyboard_common.resources import data_path

FORMAT_VERSION = 3
FPS = 8
WORLD_FILE = "world.json"  # in a world folder only once the world is complete
PROGRESS_FILE = ".writing.json"  # in the partial folder: the settings being written there
CANDIDATES_PATH = data_path("world", "candidates.json")
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


def _action(i, key, caption, begin, end, *words, unrelated=False) -> AtomicAction:
    return AtomicAction(i, key, caption, begin, end, tuple(words), unrelated)


ATOMIC_ACTIONS: tuple[AtomicAction, ...] = (
    _action(
        0,
        "still",
        "the square stands still",
        "the square stops moving",
        "the square waits in place",
        "wait",
        "the square waits",
        unrelated=True,
    ),
    _action(
        1,
        "jump",
        "the square jumps",
        "the square leaps up into the air",
        "the square is high above the ground",
        "hop",
        "the square hops",
    ),
    _action(
        2,
        "crouch",
        "the square crouches",
        "the square squashes down flat",
        "the square is low and wide",
        "duck",
        "the square ducks",
    ),
    _action(
        3,
        "spin",
        "the square spins",
        "the square tilts over",
        "the square stands on its corner",
        "twirl",
        "the square twirls",
    ),
    _action(
        4,
        "grow",
        "the square grows",
        "the square swells up",
        "the square is big",
        "grow",
        "the square gets big",
    ),
    _action(
        5,
        "shrink",
        "the square shrinks",
        "the square gets smaller",
        "the square is small",
        "shrink",
        "the square gets small",
    ),
    _action(
        6,
        "red",
        "the square turns red",
        "the square starts to blush",
        "the square is bright red",
        "blush",
        "the square blushes",
    ),
    _action(
        7,
        "wave",
        "the square waves a flag",
        "the square raises a flag",
        "the flag flutters above the square",
        "wave",
        "the square waves",
    ),
    _action(
        8,
        "carry",
        "the square carries a box",
        "the square lifts a box",
        "a box sits on the square",
        "carry",
        "the square carries",
    ),
    _action(
        9,
        "ball",
        "a ball rolls past the square",
        "a ball enters the scene",
        "the ball leaves the scene",
        "a ball",
        "a rolling ball",
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

    @property
    def order_only_pairs(self) -> list[tuple[str, str]]:
        """Pairs of seen classes with the same actions in another order: only a model that
        sees order (a temporal module) can tell them apart."""
        return [
            (a.name, b.name)
            for a, b in combinations(self.seen, 2)
            if a.actions != b.actions and sorted(a.actions) == sorted(b.actions)
        ]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _cls(name: str, keys: str, seen: bool) -> WorldClass:
    return WorldClass(name, tuple(_BY_KEY[k].id for k in keys.split()), seen)


_SEEN = (
    ("hop then duck", "jump crouch"),
    ("duck then hop", "crouch jump"),  # the order of "hop then duck" swapped
    ("hop then wave", "jump wave"),  # one action from "hop then duck"
    ("twirl and grow", "spin grow"),
    ("twirl and shrink", "spin shrink"),  # one action from "twirl and grow"
    ("grow then blush", "grow red"),
    ("blush then grow", "red grow"),  # the order of "grow then blush" swapped
    ("hop carry and wave", "jump carry wave"),
)
_UNSEEN = (
    ("blush then shrink", "red shrink"),
    ("duck then twirl", "crouch spin"),
    ("carry then duck", "carry crouch"),
    ("wave twirl and grow", "wave spin grow"),
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
# Drawing (numpy only). Each action's signature is held on every frame of its segment.

_RED = np.array([225.0, 30.0, 30.0])
_BASE_COLOURS = np.array([[40.0, 70.0, 200.0], [30.0, 150.0, 60.0], [120.0, 50.0, 170.0]])
_FLAG = np.array([250.0, 140.0, 0.0])
_POLE = np.array([60.0, 40.0, 30.0])
_BOX = np.array([140.0, 90.0, 40.0])
_BALL = np.array([230.0, 200.0, 40.0])


def _pose(action: int, p: float, half: float, big: float, lift: float) -> dict:
    """The square's shape on a frame of `action` at progress p in (0, 1]: half width, half
    height, rotation, height above the ground, and whether it is red."""
    pose = {"hw": half, "hh": half, "angle": 0.0, "lift": 0.0, "red": action == 6}
    if action == 1:  # in the air all along: a hop arc that never touches the ground
        pose["lift"] = lift * (0.55 + 0.45 * math.sin(math.pi * p))
    elif action == 2:  # squashed flat
        pose["hw"], pose["hh"] = half * 1.6, half * 0.45
    elif action == 3:  # tilted 30-60 degrees
        pose["angle"] = math.radians(30.0 + 30.0 * p)
    elif action == 4:
        pose["hw"] = pose["hh"] = half * big
    elif action == 5:
        pose["hw"] = pose["hh"] = half * 0.5
    return pose


def render(segments: list[dict], size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames uint8 [T, size, size, 3] of the square acting out `segments`."""
    s = size / 64.0
    frames = segments[-1]["end"]
    ground = 46.0 * s
    half = rng.uniform(6.0, 8.0) * s
    big = rng.uniform(1.7, 1.9)
    lift = rng.uniform(12.0, 17.0) * s
    colour = _BASE_COLOURS[rng.integers(len(_BASE_COLOURS))] + rng.uniform(-20, 20, 3)
    red = _RED + rng.uniform(-10, 10, 3)
    tint = rng.uniform(170.0, 235.0, 3)
    floor = tint * rng.uniform(0.6, 0.8)
    # Where the square stands drifts at random: position means nothing here.
    x = rng.uniform(20.0, 44.0) * s
    velocity = rng.uniform(-0.8, 0.8) * s

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    background = np.empty((size, size, 3), np.float32)
    background[:] = tint
    background[int(ground) :] = floor
    video = np.empty((frames, size, size, 3), np.uint8)
    for seg in segments:
        a, n = seg["action"], seg["end"] - seg["start"]
        ball_dir = float(rng.choice((-1.0, 1.0)))
        for j in range(n):
            p = (j + 1) / n
            x += velocity
            if not 16.0 * s <= x <= 48.0 * s:
                velocity = -velocity
                x = float(np.clip(x, 16.0 * s, 48.0 * s))
            pose = _pose(a, p, half, big, lift)
            hw, hh = pose["hw"], pose["hh"]
            extent = math.hypot(hw, hh) if pose["angle"] else hh
            cy = ground - extent - pose["lift"]
            frame = background.copy()
            if pose["lift"]:  # a shadow on the ground under a square in the air
                shadow = ((xx - x) / (hw * 1.1)) ** 2 + ((yy - ground - 1.5 * s) / (1.5 * s)) ** 2
                frame[shadow <= 1] *= 0.55
            cos, sin = math.cos(pose["angle"]), math.sin(pose["angle"])
            u = (xx - x) * cos + (yy - cy) * sin
            v = -(xx - x) * sin + (yy - cy) * cos
            frame[(np.abs(u) <= hw) & (np.abs(v) <= hh)] = red if pose["red"] else colour
            top = cy - extent
            if a == 7:  # a pole from the square's top with a flag that flutters
                pole_top = top - 13.0 * s
                frame[(np.abs(xx - x) <= 0.8 * s) & (yy >= pole_top) & (yy <= top)] = _POLE
                tip = 8.0 * s * (0.8 + 0.2 * math.sin(2 * math.pi * p * 2))
                flag = (
                    (xx >= x)
                    & (xx <= x + tip)
                    & (np.abs(yy - pole_top - 3 * s) <= 3 * s * (1 - (xx - x) / max(tip, 1)))
                )
                frame[flag] = _FLAG
            elif a == 8:  # a box resting on the square
                box = 4.5 * s
                frame[(np.abs(xx - x) <= box) & (yy >= top - 2 * box) & (yy <= top)] = _BOX
            elif a == 9:  # a ball rolls across the scene, inside it on every frame
                bx = size / 2 + ball_dir * (p - 0.5) * (size - 12 * s)
                frame[(xx - bx) ** 2 + (yy - (ground - 4 * s)) ** 2 <= (4 * s) ** 2] = _BALL
            frame += rng.normal(0.0, 4.0, frame.shape).astype(np.float32)
            video[seg["start"] + j] = frame.clip(0, 255).astype(np.uint8)
    return video


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Write uint8 [T, H, W, 3] frames as an mpeg4 video (atomically: `atomic_path`)."""
    import av

    height, width = frames.shape[1:3]
    with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp, av.open(str(tmp), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "2"}
        stream.thread_count = 1
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ----------------------------------------------------------------------------------------
# Writing the datasets.


def _settings(seed, per_train, per_test, unseen_train, frames, size) -> dict:
    return {
        "version": FORMAT_VERSION,
        "seed": int(seed),
        "videos_per_class_train": int(per_train),
        "videos_per_class_test": int(per_test),
        "unseen_videos_per_class_train": int(unseen_train),
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
        "order_only_pairs": [list(pair) for pair in world.order_only_pairs],
        "unseen": [cls(c, i) for i, c in enumerate(world.unseen)],
    }


def _write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _write_dataset(
    root: Path,
    classes: tuple[WorldClass, ...],
    group: int,
    world: World,
    settings: dict,
    per_class_train: int,
) -> set[Path]:
    """Write (or finish) one dataset of the world under `root`; -> the files it consists of."""
    root.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()  # csv quotes a name holding a comma or a quote
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["id", "name"])
    writer.writerows([i, c.name] for i, c in enumerate(classes))
    atomic_write_text(root / "classes.csv", table.getvalue())
    files = {root / "classes.csv"}
    splits = (
        ("train", per_class_train),
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
                lines.append(f"{rel} {ci}\n")
                truth_path = (root / rel).with_suffix(".json")
                files.update((root / rel, truth_path))
                if truth_path.is_file():  # resumed: written (after its video) before a kill
                    continue
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
                _write_json(truth_path, truth)
        atomic_write_text(root / f"{split}.txt", "".join(lines))
        files.add(root / f"{split}.txt")
    return files


def _video_count(world: World, settings: dict) -> int:
    test = settings["videos_per_class_test"]
    return len(world.seen) * (settings["videos_per_class_train"] + test) + len(world.unseen) * (
        settings["unseen_videos_per_class_train"] + test
    )


def write_world(
    out_dir: Path,
    seed: int = 0,
    videos_per_class_train: int = 40,
    videos_per_class_test: int = 25,
    frames: int = 24,
    size: int = 64,
    unseen_videos_per_class_train: int = 2,
) -> WorldInfo:
    """Write the seen and unseen datasets under `out_dir` (see the module docstring).

    Idempotent: when `<out>/world.json` already records the same settings nothing is
    rewritten. All or nothing: the world is written into `.<out>.partial` beside `out`
    and renamed onto it when complete (replacing an older world of other settings), so a
    kill leaves `out` as it was; the next call resumes the partial world (every file in it
    is complete: videos are deterministic and written atomically). A second writer, or an
    `out` that is neither a world nor empty, is refused with a `UserError`.
    """
    world = default_world()
    if frames < 4 * 2 + 1:
        raise ValueError(f"frames must be at least 9 (got {frames})")
    if size < 64 or size % 32:
        # decord cannot batch-decode some widths (48 and 72 px among them; trainer/data/video.py)
        raise ValueError(f"size must be a multiple of 32, at least 64 (got {size})")
    out = Path(out_dir)
    settings = _settings(
        seed,
        videos_per_class_train,
        videos_per_class_test,
        unseen_videos_per_class_train,
        frames,
        size,
    )
    info = WorldInfo(out, out / "seen", out / "unseen", world, settings, written=False)
    info.videos = _video_count(world, settings)
    if world_settings(out) == settings:
        return info
    _refuse_foreign(out)
    with _partial_folder(out) as partial:
        if world_settings(out) == settings:  # another writer completed it meanwhile
            shutil.rmtree(partial)
            return info
        if world_settings(partial) != settings:  # else complete, killed before its rename
            _fill(partial, world, settings)
        (partial / PROGRESS_FILE).unlink(missing_ok=True)
        _move_into_place(partial, out)
    info.written = True
    return info


def _fill(partial: Path, world: World, settings: dict) -> None:
    """Write (or finish) the world of `settings` in the locked `partial` folder."""
    progress = partial / PROGRESS_FILE
    if _read_json(progress) != settings:  # a killed writer's world of other settings
        for child in partial.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        _write_json(progress, settings)
    files = {progress, partial / "atomic_actions.json", partial / "phrasings.json"}
    _write_json(partial / "atomic_actions.json", {str(a.id): a.caption for a in world.actions})
    _write_json(partial / "phrasings.json", {str(a.id): list(a.phrasings) for a in world.actions})
    per_train = settings["videos_per_class_train"], settings["unseen_videos_per_class_train"]
    files |= _write_dataset(partial / "seen", world.seen, 0, world, settings, per_train[0])
    files |= _write_dataset(partial / "unseen", world.unseen, 1, world, settings, per_train[1])
    for path in [p for p in partial.rglob("*") if p.is_file() and p not in files]:
        path.unlink()  # a killed writer's temporary file
    _write_json(partial / WORLD_FILE, _world_json(world, settings))  # the completion mark


def world_settings(folder: Path) -> dict | None:
    """The settings a complete world in `folder` was written with (from its `world.json`),
    else None."""
    meta = _read_json(Path(folder) / WORLD_FILE)
    settings = meta.get("settings") if isinstance(meta, dict) else None
    return settings if isinstance(settings, dict) else None


def world_folder(folder: Path, seed: int = 0) -> Path:
    """A folder to pre-train on (`pretrain-clip --world`): one holding a complete world
    (`world.json`) or a world of one's own (`atomic_actions.json` and `seen/train.txt`) as
    it is; otherwise the built-in world of `seed` is written there (`write_world`)."""
    folder = Path(folder)
    if world_settings(folder) is not None or (
        (folder / "atomic_actions.json").is_file() and (folder / "seen" / "train.txt").is_file()
    ):
        return folder
    return write_world(folder, seed=seed).out_dir


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _refuse_foreign(out: Path) -> None:
    """A `UserError` unless `out` is missing, an empty folder or a world (ours to replace)."""
    if not os.path.lexists(out):
        return
    if out.is_dir() and (world_settings(out) is not None or not any(out.iterdir())):
        return
    raise UserError(
        f"{out} is neither a storyboard world (it has no {WORLD_FILE}) nor an empty folder; "
        "remove it or choose another folder for the world."
    )


@contextmanager
def _partial_folder(out: Path) -> Iterator[Path]:
    """`.<out>.partial` beside `out`, locked for the block (flock: the OS releases it when
    its writer is killed, whose partial world is then resumed); a second writer is
    refused."""
    partial = out.parent / f".{out.name}.partial"
    while True:
        try:
            make_folder(partial, out)
            fd = os.open(partial, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise UserError(
                f"could not create {partial} to write the world {out} ({os_reason(exc)})."
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"another process is writing the world {out} (into {partial}); let it finish."
            ) from None
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(partial))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # the folder locked was renamed onto `out` meanwhile: take a new one
    try:
        yield partial
    finally:
        os.close(fd)


def _move_into_place(partial: Path, out: Path) -> None:
    """Rename the complete `partial` onto `out`; an older world there is moved aside first
    and removed after (a kill in between leaves `out` missing, and the next call moves the
    complete partial world)."""
    try:
        if out.is_dir() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old)
            os.replace(partial, out)
            shutil.rmtree(old)
        else:
            os.replace(partial, out)
    except OSError as exc:
        raise UserError(
            f"could not move the world written in {partial} onto {out} ({os_reason(exc)})."
        ) from exc


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
    Eq. 4's diversity is there to reject)."""
    caption = world.actions[c.actions[0]].caption
    return [caption, f"{caption} again", f"{caption} once more", f"then {caption}"]


def subtext_pools(c: WorldClass, world: World) -> dict[str, list[str]]:
    """Every sub-text of each kind a class's sets can draw from, item by item (the study's
    random TPP groups): faithful (its actions' captions, then their finer starts, finer
    ends and plain phrasings, each in the class's order, so that the first N items cover
    the actions evenly), unrelated (the captions and finer phrasings of the actions it
    does not contain) and near-duplicate (the variants of its actions' captions that
    `near_duplicate_set` uses)."""
    own = [world.actions[i] for i in c.actions]
    faithful = [
        t for field in zip(*((a.caption, a.begin, a.end, a.words[-1]) for a in own)) for t in field
    ]
    unrelated = [
        t for a in world.actions if a.id not in c.actions for t in (a.caption, a.begin, a.end)
    ]
    near = [
        variant
        for a in own
        for variant in (f"{a.caption} again", f"{a.caption} once more", f"then {a.caption}")
    ]
    pools = (("faithful", faithful), ("unrelated", unrelated), ("near-duplicate", near))
    return {kind: list(dict.fromkeys(texts)) for kind, texts in pools}


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
    text = json.dumps(candidate_sets(default_world()), indent=1, sort_keys=True) + "\n"
    atomic_write_text(path, text)
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
