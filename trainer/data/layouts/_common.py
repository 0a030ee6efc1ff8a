"""Shared by the layout readers: flag checks, folder indexes, annotation-file reading."""

from __future__ import annotations

import codecs
import os
from pathlib import Path, PurePosixPath

from storyboard_common.classes import load_classes, read_user_text
from storyboard_common.errors import UserError
from storyboard_common.resources import data_path

from ..frames import folder_name

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
}

# Video extensions a reader accepts where a layout does not fix one, in order of preference.
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi")


def shipped_names(shipped: str | None) -> tuple[str, ...] | None:
    """The class names of the shipped list `shipped` (`Layout.classes`: the file
    storyboard_common/data/<shipped>/classes.csv), or None where none ships."""
    if shipped is None or not data_path(shipped, "classes.csv").is_file():
        return None
    return load_classes(shipped).names


def normalize_split(split: str, allowed: tuple[str, ...], label: str) -> str:
    """`split` as one of `allowed` ("validate" reads as "val"), or a UserError."""
    name = _SPLIT_ALIASES.get(str(split).strip().lower())
    if name not in allowed:
        raise UserError(
            f"--split {split!r} does not exist for {label}; choose one of {', '.join(allowed)}."
        )
    return name


def check_fold(fold: int | str | None, label: str) -> int:
    """A fold of the three-fold datasets; None means fold 1."""
    if fold is None:
        return 1
    try:
        value = int(fold)
    except (TypeError, ValueError):
        value = 0
    if value not in (1, 2, 3) or (isinstance(fold, float) and fold != value):
        raise UserError(f"--fold {fold!r} does not exist for {label}; choose 1, 2 or 3.")
    return value


def absolute(path: Path | str) -> Path:
    return Path(path).expanduser().resolve()


def require_root(root: Path | str, expect: str) -> Path:
    """The resolved `--root` folder; `expect` says what it must hold."""
    path = absolute(root)
    if not path.is_dir():
        raise UserError(f"--root folder not found: {path}; it must hold {expect}.")
    return path


def require_file(path: Path, what: str, expect: str) -> Path:
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; {expect}.")
    return path


def video_root(videos: Path | str | None, default: Path, label: str, expect: str) -> Path:
    """`--videos` (resolved) or the layout's default video folder, which must exist."""
    path = default if videos is None else absolute(videos)
    if not path.is_dir():
        flag = "--root" if videos is None else "--videos"
        raise UserError(f"{label} video folder not found: {path}; {flag} {expect}.")
    return path


def read_lines(path: Path) -> list[str]:
    """The lines of a text annotation file; undecodable bytes survive as in file names.
    A file with UTF-16's byte-order mark (as Windows tools save) is read as UTF-16."""
    data = Path(path).read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return read_user_text(path, "the list file").splitlines()
    return data.decode("utf-8", errors="surrogateescape").splitlines()


def rel_parts(rel: str) -> tuple[str, ...]:
    return PurePosixPath(rel.strip().replace("\\", "/")).parts


class DirIndex:
    """Names inside folders, read with one os.scandir per folder (no per-file stat calls).

    `find` resolves a relative path part by part, exactly or (with `ignore_case`) through
    a lower-case index of each folder built once; a video's path finds its frame folder
    (the path without its extension) where the file is not there.
    """

    def __init__(self) -> None:
        self._names: dict[Path, dict[str, bool]] = {}
        self._lower: dict[Path, dict[str, str]] = {}

    def names(self, folder: Path) -> dict[str, bool]:
        """{name: is_dir} of a folder's entries; empty if it is not a readable folder."""
        found = self._names.get(folder)
        if found is None:
            found = {}
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        try:
                            found[entry.name] = entry.is_dir()
                        except OSError:
                            found[entry.name] = False
            except OSError:
                pass
            self._names[folder] = found
        return found

    def _lower_index(self, folder: Path) -> dict[str, str]:
        index = self._lower.get(folder)
        if index is None:
            index = {}
            for name in sorted(self.names(folder)):
                index.setdefault(name.lower(), name)
            self._lower[folder] = index
        return index

    def _entry(self, folder: Path, name: str, ignore_case: bool, is_dir: bool) -> str | None:
        """The name in `folder` that `name` stands for, if it is a folder (`is_dir`) or a
        file as wanted."""
        names = self.names(folder)
        actual = (
            name
            if name in names or not ignore_case
            else self._lower_index(folder).get(name.lower())
        )
        return actual if actual in names and names[actual] == is_dir else None

    def find(self, base: Path, rel: str, ignore_case: bool = False) -> Path | None:
        """The existing file `base/rel`, else its frame folder (`folder_name`), or None."""
        parts = rel_parts(rel)
        if not parts:
            return None
        current = base
        if parts[0] == "/":
            current, parts = Path("/"), parts[1:]
        for i, part in enumerate(parts):
            if part == ".":
                continue
            if part == "..":
                current = current.parent
                continue
            if i < len(parts) - 1:  # folders on the way
                actual = self._entry(current, part, ignore_case, is_dir=True)
            else:  # a file at the end, or the frame folder standing for it
                actual = self._entry(current, part, ignore_case, is_dir=False) or self._entry(
                    current, folder_name(part), ignore_case, is_dir=True
                )
            if actual is None:
                return None
            current = current / actual
        return current
