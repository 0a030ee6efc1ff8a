"""Writing a world (`write_world`): its seen and unseen datasets and JSON files, all or
nothing through a locked partial folder; finding one to pre-train on (`world_folder`); the
shipped candidate sets (`write_candidates`)."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_write_text, make_folder, os_reason

from .definition import (
    CANDIDATES_PATH,
    FORMAT_VERSION,
    UNRELATED_IDS,
    World,
    WorldClass,
    WorldInfo,
    candidate_sets,
    default_world,
)
from .render import FPS, per_frame, plan_timeline, render, write_mp4

WORLD_FILE = "world.json"  # in a world folder only once the world is complete
PROGRESS_FILE = ".writing.json"  # in the partial folder: the settings being written there


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


def write_candidates(path: Path = CANDIDATES_PATH) -> Path:
    """Write the default world's candidate sets as JSON (`{class: [[...], [...], [...]]}`)."""
    path = Path(path)
    text = json.dumps(candidate_sets(default_world()), indent=1, sort_keys=True) + "\n"
    atomic_write_text(path, text)
    return path
