"""Evaluation protocols on top of a split: few-shot lists, epoch repetition, class halves.

Few-shot draws use a dedicated `random.Random(seed)` over items in a canonical order, so
every DDP rank (and every rerun) draws the same list, unlike BIKE's unseeded per-rank RNG.
"""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from storyboard_common.classes import (
    looks_like_json,
    match_names,
    names_from_json,
    read_user_text,
    unknown_names,
)
from storyboard_common.errors import UserError
from storyboard_common.files import atomic_write_text

from .items import SplitList, VideoItem


def fewshot_items(split: SplitList, shots: int, seed: int) -> list[VideoItem]:
    """K videos per class from a single-label train split, drawn with `Random(seed)`.

    Items are grouped by class and sorted by video id before drawing, so the draw depends
    only on (split contents, shots, seed). A class with fewer than K videos is an error.
    """
    if split.multi_label:
        raise UserError(f"--shots needs a single-label dataset; {split.dataset} is multi-label.")
    if shots < 1:
        raise UserError("--shots must be at least 1.")
    by_class: dict[int, list[VideoItem]] = defaultdict(list)
    for item in split.items:
        by_class[item.label].append(item)
    short = [
        f"{split.class_names[c]} ({len(by_class[c])})"
        for c in range(len(split.class_names))
        if len(by_class[c]) < shots
    ]
    if short:
        raise UserError(
            f"--shots {shots}: these classes of {split.dataset} {split.split} have fewer videos: "
            f"{', '.join(short[:10])}{' ...' if len(short) > 10 else ''}."
        )
    rng = random.Random(seed)
    chosen = []
    for c in range(len(split.class_names)):
        pool = sorted(by_class[c], key=lambda it: it.video_id)
        chosen.extend(sorted(rng.sample(pool, shots), key=lambda it: it.video_id))
    return chosen


def repeat_factor(fewshot_len: int, epoch_len: int) -> int:
    """How often a K-shot list is repeated so one epoch has about `epoch_len` items."""
    return max(1, round(epoch_len / max(fewshot_len, 1)))


def save_item_list(items: Sequence[VideoItem], path: Path) -> None:
    """Write a list of items (`video_id,path,labels`) that `load_item_list` reads back."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["video_id", "path", "labels"])
    for it in items:
        writer.writerow([it.video_id, str(it.path), " ".join(str(c) for c in it.labels)])
    atomic_write_text(Path(path), text.getvalue())


def load_item_list(path: Path, split: SplitList) -> list[VideoItem]:
    """The items of `split` named by a saved list (`--fewshot-list`), in the list's order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--fewshot-list file not found: {path}.")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise UserError(
            f"--fewshot-list {path} lists no videos: pass a csv with a `video_id` column and "
            "a row per video (a run's fewshot.csv)."
        )
    if "video_id" not in rows[0]:
        raise UserError(f"{path} must be a csv with a `video_id` column (as saved by a run).")
    by_id = {it.video_id: it for it in split.items}
    unknown = [r["video_id"] for r in rows if r["video_id"] not in by_id]
    if unknown:
        raise UserError(
            f"{path} names videos that are not in {split.dataset} {split.split}: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}."
        )
    return [by_id[r["video_id"]] for r in rows]


def half_class_splits(num_classes: int, halves: int = 10, seed: int = 0) -> list[np.ndarray]:
    """`halves` random halves of the label set (sorted class ids), seeded: the half-class
    zero-shot protocol evaluates on each and reports mean and standard deviation."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.permutation(num_classes)[: num_classes // 2]) for _ in range(halves)]


def class_positions(split: SplitList, class_ids: Sequence[int]) -> list[int]:
    """Positions in `split.items` of the items with a label among `class_ids`: the items
    `restrict_classes` keeps, in its order."""
    wanted = {int(c) for c in class_ids}
    return [p for p, it in enumerate(split.items) if wanted.intersection(it.labels)]


def restrict_classes(split: SplitList, class_ids: Sequence[int]) -> SplitList:
    """The items of the given classes only, relabelled 0..k-1 in the order of `class_ids`."""
    new_id = {int(c): i for i, c in enumerate(class_ids)}
    items = tuple(
        replace(
            it,
            labels=tuple(new_id[c] for c in it.labels if c in new_id),
            segments=tuple(
                replace(s, class_id=new_id[s.class_id]) for s in it.segments if s.class_id in new_id
            ),
        )
        for it in (split.items[p] for p in class_positions(split, class_ids))
    )
    return replace(
        split, class_names=tuple(split.class_names[int(c)] for c in class_ids), items=items
    )


def read_subset_file(path: Path) -> tuple[str, ...]:
    """The class names a subset file lists (`eval --subsets`): one a line (blank lines and
    `#` comments skipped), or a csv with a `name` column (`id,name`; the ids are not used)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--subsets file not found: {path}.")
    text = read_user_text(path, "--subsets")
    if path.suffix.lower() == ".json" or looks_like_json(text):  # a JSON label map or list
        return names_from_json(text, path, "--subsets")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if path.suffix.lower() == ".csv" or first.replace(" ", "").lower().startswith("id,name"):
        reader = csv.DictReader(io.StringIO(text))
        rows = []
        for row in reader:
            if None in row:  # more fields than the header: a name cut at an unquoted comma
                raise UserError(
                    f"--subsets {path} line {reader.line_num} has more fields than its header; "
                    'quote a name that holds a comma ("a, b").'
                )
            rows.append(row)
        fields = {(f or "").strip().lower(): f for f in (rows[0] if rows else {})}
        if "name" not in fields:
            raise UserError(f"--subsets {path}: a csv subset needs a `name` column (`id,name`).")
        names = [(row[fields["name"]] or "").strip() for row in rows]
    else:
        names = [line.strip().strip('"').strip() for line in text.splitlines()]
        names = [n for n in names if not n.startswith("#")]
    names = [n for n in names if n]
    if not names:
        raise UserError(f"--subsets {path} lists no class names.")
    return tuple(names)


def subset_class_ids(
    path: Path, names: Sequence[str], class_names: Sequence[str], dataset: str
) -> list[int]:
    """The dataset class ids of a subset file's names, in the file's order, matched by
    `class_key`; an unknown or repeated name is an error naming the file and the names."""
    found = match_names(names, class_names)
    if found.missing:
        raise UserError(
            f"--subsets {path}: not {'a class' if len(found.missing) == 1 else 'classes'} of "
            f"{dataset} ({len(class_names)} classes): {unknown_names(found.missing, class_names)}."
        )
    seen: set[int] = set()
    twice = [name for name, c in zip(names, found.ids) if c in seen or seen.add(c)]
    if twice:
        raise UserError(
            f"--subsets {path} lists these classes twice: {', '.join(repr(n) for n in twice)}."
        )
    return list(found.ids)
