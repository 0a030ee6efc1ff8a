"""Something-Something v2 as released: `labels/*.json` and one folder of `<id>.webm` videos.

`labels/labels.json` maps each class (a template without brackets) to its id as a string,
`{"Approaching something with your camera": "0", ...}`; `labels/train.json` and
`labels/validation.json` list the videos, `[{"id": "78687", "label": "holding potato next
to vicks vaporub bottle", "template": "Holding [something] next to [something]",
"placeholders": [...]}, ...]`, and an entry's class is its template with the brackets
removed. `labels/test.json` lists ids only (no labels), so it is no split here: `val`
(validation.json) is the evaluation split. The label files may also lie directly under
`--root`, or carry the 20BN prefix (`something-something-v2-train.json`).

Videos are `<id>.webm` (or .mp4/.mkv/.avi, e.g. re-encoded copies) directly in
`<root>/20bn-something-something-v2/` or `<root>/videos/`, or in `--videos DIR` (or its
`20bn-something-something-v2/`). Entries without a file are reported in
`SplitList.missing`. Without `labels.json` the shipped class list (`ssv2`, 174 classes in
the official id order) gives the ids.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from storyboard_common.classes import load_classes
from storyboard_common.errors import UserError

from ..items import SplitList, VideoItem
from ._common import VIDEO_EXTS, absolute, normalize_split, require_root, shipped_names

LABEL = "Something-Something v2"
SPLITS = ("train", "val")
JSON_STEMS = {"train": "train", "val": "validation"}
LABEL_DIRS = ("labels", ".")
PREFIX = "something-something-v2-"
VIDEO_DIRS = ("20bn-something-something-v2", "videos")
# Every name the label files may have, in either folder (what a copy of a root keeps).
ANNOTATION_FILES = tuple(
    name if folder == "." else f"{folder}/{name}"
    for folder in LABEL_DIRS
    for stem in ("labels", *JSON_STEMS.values(), "test")
    for name in (f"{stem}.json", f"{PREFIX}{stem}.json")
)
_EXPECT = "the official labels/ folder (labels.json, train.json, validation.json)"
_FOLDERS = "the folder 20bn-something-something-v2 (or videos) of <id>.webm files"
# the official extension first, then the reader's usual order
_EXTS = (".webm", *(e for e in VIDEO_EXTS if e != ".webm"))


def template_name(template: str) -> str:
    """A template as a class name: `Holding [something] next to [something]` ->
    `Holding something next to something`."""
    return " ".join(template.replace("[", "").replace("]", "").split())


def load(
    root: Path | str,
    split: str = "train",
    videos: Path | str | None = None,
    class_names: Sequence[str] | None = None,
    shipped: str | None = None,
) -> SplitList:
    """One split; classes (in id order) are `class_names`, labels.json's, or the shipped list
    `shipped`."""
    root = require_root(root, _EXPECT)
    split = normalize_split(split, (*SPLITS, "test"), LABEL)
    if split == "test":
        raise UserError(
            f"{LABEL}'s test.json has ids only, no labels, so it cannot be used for training "
            "or evaluation; the evaluation split is val (validation.json)."
        )
    json_path = _label_file(root, JSON_STEMS[split])
    if json_path is None:
        raise UserError(
            f"{LABEL} annotation file not found: {root / 'labels' / (JSON_STEMS[split] + '.json')}"
            f"; --root must hold {_EXPECT}."
        )
    if class_names is not None:
        names, source = tuple(class_names), "the given class list"
    else:
        labels_json = _label_file(root, "labels")
        if labels_json is not None:
            names, source = _read_labels(labels_json), str(labels_json)
        elif shipped_names(shipped) is not None:
            names, source = shipped_names(shipped), f"the shipped {shipped} class list"
        else:
            raise UserError(
                f"{LABEL} class file not found: {root / 'labels' / 'labels.json'}; "
                f"--root must hold {_EXPECT}."
            )
    by_name = {_norm(name): i for i, name in enumerate(names)}
    clips = _index_videos(_video_dirs(root, videos))

    items: list[VideoItem] = []
    missing: list[str] = []
    for n, entry in enumerate(_read_entries(json_path), 1):
        vid, template = entry
        class_id = by_name.get(_norm(template), -1)
        if class_id < 0:
            raise UserError(
                f"{json_path} entry {n} (id {vid}): template {template!r} is not a class of "
                f"{source} ({len(names)} classes)."
            )
        found = clips.get(vid)
        if found is None:
            missing.append(vid)
        else:
            items.append(VideoItem(found, vid, (class_id,)))
    return SplitList("ssv2", split, None, names, tuple(items), False, tuple(missing))


def absent(root: Path, split: str, fold: int | None = None) -> str | None:
    """None when the split's json is on disk, else its path relative to `root`."""
    stem = JSON_STEMS[normalize_split(split, SPLITS, LABEL)]
    return None if _label_file(Path(root), stem) else f"labels/{stem}.json"


def _norm(name: str) -> str:
    return template_name(name).casefold()


def _label_file(root: Path, stem: str) -> Path | None:
    """`labels/<stem>.json`, `<stem>.json` or their 20BN-prefixed names, the first found."""
    for folder in LABEL_DIRS:
        for name in (f"{stem}.json", f"{PREFIX}{stem}.json"):
            path = root / folder / name if folder != "." else root / name
            if path.is_file():
                return path
    return None


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a readable JSON file ({exc}).") from exc


def _read_labels(path: Path) -> tuple[str, ...]:
    """labels.json (`{template: "id"}`) -> class names in id order (brackets removed), read
    by the one class-list reader, which takes the other JSON label shapes too."""
    return tuple(map(template_name, load_classes(classes_file=path, flag="labels.json").names))


def _read_entries(path: Path) -> list[tuple[str, str]]:
    """(video id, template) of each entry of train.json / validation.json."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise UserError(
            f'{path} must be a list of entries like {{"id": "78687", "template": ...}}.'
        )
    entries = []
    for n, entry in enumerate(data, 1):
        if not isinstance(entry, dict) or "id" not in entry:
            raise UserError(f"{path} entry {n} is not an object with an id: {entry!r:.80}.")
        if not entry.get("template"):
            raise UserError(
                f"{path} entry {n} (id {entry['id']}) has no template (label), so this split "
                "cannot be used for training or evaluation."
            )
        entries.append((str(entry["id"]).strip(), str(entry["template"])))
    return entries


def _video_dirs(root: Path, videos: Path | str | None) -> list[Path]:
    """The existing video folders: --videos (and its 20BN folder), else root's."""
    if videos is not None:
        base = absolute(videos)
        if not base.is_dir():
            raise UserError(
                f"{LABEL} video folder not found: {base}; --videos must hold the "
                f"<id>.webm files (or {_FOLDERS})."
            )
        inner = base / VIDEO_DIRS[0]
        return [base, inner] if inner.is_dir() else [base]
    found = [root / d for d in VIDEO_DIRS if (root / d).is_dir()]
    if not found:
        wanted = " or ".join(str(root / d) for d in VIDEO_DIRS)
        raise UserError(
            f"{LABEL} video folder not found: {wanted}; --root must hold {_FOLDERS} "
            "(or pass --videos DIR)."
        )
    return found


def _index_videos(folders: list[Path]) -> dict[str, Path]:
    """video id -> its file, by one scandir per folder (.webm before other extensions, then
    a frame folder `<id>/`)."""
    rank = {ext: i for i, ext in enumerate(_EXTS)}
    best: dict[str, tuple[int, int, Path]] = {}
    for f, folder in enumerate(folders):
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir():  # a frame folder, after any video file of the id
                        stem, r = entry.name, len(_EXTS)
                    else:
                        stem, ext = os.path.splitext(entry.name)
                        r = rank.get(ext.lower())
                        if r is None or not entry.is_file():
                            continue
                    key = (f, r, folder / entry.name)
                    if stem not in best or key[:2] < best[stem][:2]:
                        best[stem] = key
        except OSError:
            pass
    return {stem: key[2] for stem, key in best.items()}
