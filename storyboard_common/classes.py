"""Class lists (the shipped datasets' lists and user files: csv `id,name` or a txt list), and
the one rule by which class names are compared everywhere (`class_key`, `match_names`)."""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from storyboard_common.errors import UserError

from .resources import data_path, resolve_shipped

_CHARADES_LINE = re.compile(r"^c\d{3}\s+(.+)$")
_INDEXED_LINE = re.compile(r"^\d+\s+(\S.*)$")  # UCF's classInd.txt: "1 ApplyEyeMakeup"


@dataclass(frozen=True)
class ClassList:
    """Class names in id order (`names[i]` has id i) and the name used for artifact folders."""

    name: str
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)


def shipped_datasets() -> list[str]:
    return sorted(p.parent.name for p in data_path().glob("*/classes.csv"))


def load_classes(
    dataset: str | None = None, classes_file: Path | None = None, flag: str = "--classes"
) -> ClassList:
    """The classes of a shipped dataset (`--dataset`) or of a file (`flag`, `--classes`)."""
    if (dataset is None) == (classes_file is None):
        raise UserError("give exactly one of --dataset NAME or --classes FILE.")
    if dataset is not None:
        path = data_path(dataset, "classes.csv")
        if not path.is_file():
            raise UserError(
                f"no class list ships for --dataset {dataset!r} (shipped: "
                f"{', '.join(shipped_datasets()) or 'none'}); pass --classes FILE instead."
            )
        return ClassList(dataset, _read_csv(path))
    path = resolve_shipped(classes_file)
    if not path.is_file():
        raise UserError(f"{flag} file not found: {path}.")
    try:
        names = _read_csv(path) if path.suffix.lower() == ".csv" else _read_txt(path)
    except UnicodeDecodeError as exc:
        raise not_utf8(path, flag, exc) from exc
    return ClassList(path.stem, names)


def not_utf8(path: Path, flag: str, exc: UnicodeDecodeError) -> UserError:
    """The one sentence for a text file given by `flag` that is not UTF-8."""
    byte = exc.object[exc.start : exc.start + 1].hex()
    return UserError(
        f"{flag} file {path} is not UTF-8 text (it holds the byte 0x{byte}); save it as UTF-8."
    )


def _read_csv(path: Path) -> tuple[str, ...]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    if not {"id", "name"} <= set(reader.fieldnames or ()):
        raise UserError(f"{path} must be a csv with the header `id,name`.")
    if not rows:
        raise UserError(f"{path} holds no classes (only its header); list one `id,name` a line.")
    try:
        by_id = {int(r["id"]): r["name"].strip() for r in rows}
    except ValueError as exc:
        raise UserError(f"{path} has a non-integer id ({exc}).") from exc
    if sorted(by_id) != list(range(len(rows))):
        raise UserError(f"{path}: ids must be 0..{len(rows) - 1}, each once.")
    return _check_unique(tuple(by_id[i] for i in range(len(rows))), path)


def _read_txt(path: Path) -> tuple[str, ...]:
    """One class a line, in id order; Charades (`c000 Name`) and classInd (`1 Name`) codes go."""
    names = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip().strip('"').strip()
        if not line:
            continue
        match = _CHARADES_LINE.match(line) or _INDEXED_LINE.match(line)
        names.append(match.group(1).strip() if match else line)
    if not names:
        raise UserError(f"{path} holds no class names.")
    return _check_unique(tuple(names), path)


def _check_unique(names: tuple[str, ...], path: Path) -> tuple[str, ...]:
    """Names that are one class under `class_key` (`brush_hair`, `Brush hair`) are refused:
    every matching against the list would be ambiguous."""
    seen: dict[str, str] = {}
    dupes = []
    for n in names:
        key = class_key(n)
        if key in seen:
            dupes.append(n if seen[key] == n else f"{seen[key]} / {n}")
        seen.setdefault(key, n)
    if dupes:
        raise UserError(f"{path} lists these classes twice: {', '.join(sorted(set(dupes)))}.")
    return names


def class_text(name: str) -> str:
    """A class name as words: `brush_hair` -> `brush hair`, `ApplyEyeMakeup` -> `apply eye makeup`.

    Acronyms (`TV`) keep their case; a capital first letter of a sentence-case name is lowered.
    """
    text = name.replace("_", " ").strip()
    if " " not in text and re.search(r"[a-z][A-Z]", text):
        text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", text)
    words = text.split()
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)


def class_key(name: str) -> str:
    """The one rule by which class names are compared (imports, `--index-classes`, the
    artifact check, `--subsets`, class lists): case, `_`, `-` and runs of spaces folded,
    CamelCase split, SSv2 template brackets dropped. `brush_hair`, `Brush hair` and
    `brush-hair` are one class; `ApplyEyeMakeup` is `apply eye makeup`."""
    return class_text(name.replace("[", "").replace("]", "").replace("-", " ")).casefold()


@dataclass(frozen=True)
class NameMatch:
    """Where each of some names lands among a class list: `ids[i]` is the class id of
    `names[i]` (None if missing) and `how[i]` `exact`, `folded` or `missing`."""

    names: tuple[str, ...]
    ids: tuple[int | None, ...]
    how: tuple[str, ...]

    @property
    def missing(self) -> list[str]:
        return [n for n, h in zip(self.names, self.how) if h == "missing"]


def match_names(names: Sequence[str], classes: Sequence[str]) -> NameMatch:
    """Each name's class id in `classes`: the same spelling first, else the same `class_key`."""
    exact = {name: i for i, name in enumerate(classes)}
    folded: dict[str, int] = {}
    for i, name in enumerate(classes):
        folded.setdefault(class_key(name), i)
    ids: list[int | None] = []
    how: list[str] = []
    for name in names:
        if name in exact:
            ids.append(exact[name])
            how.append("exact")
        else:
            ids.append(folded.get(class_key(name)))
            how.append("missing" if ids[-1] is None else "folded")
    return NameMatch(tuple(names), tuple(ids), tuple(how))


def nearest_names(name: str, classes: Sequence[str], n: int = 3) -> list[str]:
    """The classes whose folded spelling is closest to `name`'s (for error messages)."""
    by_key: dict[str, str] = {}
    for c in classes:
        by_key.setdefault(class_key(c), c)
    close = difflib.get_close_matches(class_key(name), list(by_key), n=n, cutoff=0.5)
    return [by_key[k] for k in close]


def unknown_names(names: Sequence[str], classes: Sequence[str], shown: int = 10) -> str:
    """`'brush hiar' (nearest: brush_hair), 'jog' (no near name), ...` for an error message."""
    parts = []
    for name in names[:shown]:
        near = nearest_names(name, classes)
        parts.append(f"{name!r} ({'nearest: ' + ', '.join(near) if near else 'no near name'})")
    more = f" ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(parts) + more
