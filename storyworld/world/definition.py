"""The storyboard world's definition, without videos: its atomic actions, its seen and
unseen classes (`default_world`) and each class's candidate sub-text sets and pools."""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from storyboard_common.resources import data_path

FORMAT_VERSION = 3
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
