"""Class lists (the shipped datasets' lists and user files: csv `id,name`, JSON label maps or
a txt list), the one reader of a user's text file (`read_user_text`: UTF-8, or UTF-16 with
its byte-order mark), and the one rule by which class names are compared everywhere
(`class_key`, `match_names`)."""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
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
        return ClassList(dataset, _read_csv(path.read_text(encoding="utf-8-sig"), path))
    path = resolve_shipped(classes_file)
    if not path.is_file():
        raise UserError(f"{flag} file not found: {path}.")
    text = read_user_text(path, flag)
    if path.suffix.lower() == ".json" or looks_like_json(text):
        names = names_from_json(text, path, flag)
    elif path.suffix.lower() == ".csv":
        names = _read_csv(text, path)
    else:
        names = _read_txt(text, path)
    return ClassList(path.stem, _check_unique(names, path))


def read_user_text(path: Path, flag: str) -> str:
    """A text file a user gives (`flag` names it in errors): UTF-8 (a byte-order mark
    allowed), or UTF-16 when it starts with UTF-16's byte-order mark (as Windows tools
    save); anything else is the one sentence `not_utf8`."""
    data = Path(path).read_bytes()
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        text = data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as exc:
        if utf16:
            raise UserError(
                f"{flag} file {path} starts as UTF-16 but is not UTF-16 text ({exc.reason}); "
                "save it as UTF-8."
            ) from exc
        raise not_utf8(path, flag, exc) from exc
    if "\0" in text:  # valid UTF-8, but no text file holds NUL: UTF-16 without its mark
        raise UserError(
            f"{flag} file {path} holds NUL bytes (UTF-16 without a byte-order mark?); save "
            "it as UTF-8."
        )
    return text


def not_utf8(path: Path, flag: str, exc: UnicodeDecodeError) -> UserError:
    """The one sentence for a text file given by `flag` that is not UTF-8."""
    byte = exc.object[exc.start : exc.start + 1].hex()
    return UserError(
        f"{flag} file {path} is not UTF-8 text (it holds the byte 0x{byte}); save it as UTF-8."
    )


def _read_csv(text: str, path: Path) -> tuple[str, ...]:
    """A csv `id,name`; a row with more fields than the header (a name with an unquoted
    comma) is refused naming its line, never cut at the comma."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = [h.strip() for h in rows[0]] if rows else []
    if not {"id", "name"} <= set(header):
        raise UserError(f"{path} must be a csv with the header `id,name`.")
    if not any(rows[1:]):
        raise UserError(f"{path} holds no classes (only its header); list one `id,name` a line.")
    id_col, name_col = header.index("id"), header.index("name")
    by_id: dict[int, str] = {}
    for line, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != len(header):
            raise UserError(
                f"{path} line {line} has {len(row)} fields, not the header's {len(header)} "
                f'({",".join(row)[:80]!r}); quote a name that holds a comma ("a, b").'
            )
        try:
            class_id = int(row[id_col])
        except ValueError:
            raise UserError(f"{path} line {line} has a non-integer id {row[id_col]!r}.") from None
        by_id[class_id] = row[name_col].strip()
    return _in_id_order(by_id, len(by_id), path)


def _in_id_order(by_id: dict[int, str], rows: int, path: Path) -> tuple[str, ...]:
    """Names by id -> names in id order; the ids must be 0..rows-1, each once."""
    if sorted(by_id) != list(range(rows)):
        raise UserError(f"{path}: ids must be 0..{rows - 1}, each once.")
    return tuple(by_id[i] for i in range(rows))


def names_from_json(text: str, path: Path, flag: str) -> tuple[str, ...]:
    """A JSON label list as what it is: a list of names in id order, `{"name": id}` (SSv2's
    labels.json; ids may be strings) or `{"id": "name"}` (an index map); anything else is
    refused in one sentence."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{flag} file {path} is not valid JSON ({exc}).") from exc
    shapes = '(a list of names, {"name": id} as SSv2\'s labels.json, or {"0": "name"})'
    if isinstance(data, list) and data and all(isinstance(n, str) for n in data):
        return tuple(n.strip() for n in data)
    if isinstance(data, dict) and data:
        if all(_is_int(v) for v in data.values()):  # {"name": id}
            by_id: dict[int, str] = {}
            for name, value in data.items():
                if by_id.setdefault(int(value), name.strip()) != name.strip():
                    raise UserError(f"{path} gives id {int(value)} to two classes.")
            return _in_id_order(by_id, len(data), path)
        if all(_is_int(k) for k in data) and all(isinstance(v, str) for v in data.values()):
            by_id = {int(k): v.strip() for k, v in data.items()}
            return _in_id_order(by_id, len(data), path)
    raise UserError(f"{flag} file {path} is JSON but not a class list {shapes}.")


def looks_like_json(text: str) -> bool:
    """A JSON object or list saved under another suffix (no class list line starts so)."""
    text = text.strip()
    return text.startswith("{") or (text.startswith("[") and text.endswith("]"))


def _is_int(value: object) -> bool:
    """An id as JSON label maps write it: an integer, or a string of digits."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())


def _read_txt(text: str, path: Path) -> tuple[str, ...]:
    """One class a line, in id order; Charades (`c000 Name`) and classInd (`1 Name`) codes go."""
    names = []
    for line in text.splitlines():
        line = line.strip().strip('"').strip()
        if not line:
            continue
        match = _CHARADES_LINE.match(line) or _INDEXED_LINE.match(line)
        names.append(match.group(1).strip() if match else line)
    if not names:
        raise UserError(f"{path} holds no class names.")
    return tuple(names)


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
