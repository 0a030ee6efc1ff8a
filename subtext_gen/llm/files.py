"""The `file` backend: imports existing description sets as candidates.

Accepted files:
* JSON `{class name: [texts]}` (CuPL, "classify by description"): one candidate set per
  class; `{class name: [[texts], [texts], ...]}` gives several sets.
* JSON keyed by class index, `{"0": [texts], "1": [...], ...}` (published descriptor files
  such as OST's `temporal_descriptors/4_descriptors.json`), when every key is an integer
  and the keys are not class names. Key i is class i of the label list the file was
  written for (`index_classes`, `--index-classes FILE`), whose names are matched to the
  class list. That list is always needed: published orders of one dataset differ (HMDB-51
  lists sorted by name put kick_ball before kick and sword_exercise before sword, some
  also climb_stairs before climb; others keep the official order: data/README.md), so
  "key i is our class i" would pair sets with the wrong classes unnoticed. A key count
  other than the label list's, out-of-range indices, labels that are not classes, or
  names mixed with indices are an error.
* CSV, long form with a `sub_text` column: `class,sub_text[,set]`, one sub-text a row, the
  rows of a class (and `set` label, if given) in order forming one set.
* CSV, wide form: `class,<any>,<any>,...`, one set a row, its non-empty cells the sub-texts.
Class names are matched as written, else by `classes.class_key` (`brush_hair` = `Brush
hair` = `brush-hair`); `FileBackend.matched` records how each class was matched.
Every text is cleaned by the reply parser's `clean_item` (list labels such as `Step 1:`,
`1.`, `1)`, bullets, quotes around the whole text, trailing punctuation go).

Several files are several sources (`file_backends`): one backend each, its `llm` column
`file:<stem>`, or where stems clash the shortest tail of the path that tells them apart
(`file:x.csv`, `file:a/x.json`), so candidate keys (class, llm, prompt, sample) are unique
and the same inputs always give the same keys.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storyboard_common.classes import (
    ClassList,
    load_classes,
    match_names,
    read_user_text,
    shipped_datasets,
    unknown_names,
)
from storyboard_common.errors import UserError
from storyboard_common.resources import resolve_shipped

from ..parse import clean_item
from .base import BackendOption, Completion, Job, LLMBackend

PROMPT_ID = "file"
MATCH_KINDS = ("exact", "folded", "missing")


_INDEX = re.compile(r"[+-]?\d+")
_SHOWN = 10  # bad keys listed in an error


def _clean(sets: dict[str, list[list[str]]]) -> dict[str, list[list[str]]]:
    """Each text through the parser's `clean_item`; texts that clean to nothing go."""
    return {
        name: [[t for t in map(clean_item, texts) if t] for texts in class_sets]
        for name, class_sets in sets.items()
    }


def read_description_sets(path: Path) -> dict[str, list[list[str]]]:
    """Candidate sets per class key as written in the file (a name, or an index in JSON),
    each text cleaned as a reply's items are."""
    return _clean(_read_raw_sets(Path(path)))


def _read_raw_sets(path: Path) -> dict[str, list[list[str]]]:
    if not path.is_file():
        raise UserError(f"--input file not found: {path}.")
    return _parse_raw_sets(path, read_user_text(path, "--input"))


def _parse_raw_sets(path: Path, text: str) -> dict[str, list[list[str]]]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}).") from exc
        if not isinstance(data, dict):
            raise UserError(f"{path} must hold a JSON object {{class name: [texts]}}.")
        sets = {}
        for name, value in data.items():
            if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
                sets[name] = value
            elif isinstance(value, list):
                sets[name] = [value]
            else:
                raise UserError(f"{path}: the value for class {name!r} is not a list of texts.")
            bad = [t for v in sets[name] for t in v if not isinstance(t, str)]
            if bad:
                raise UserError(
                    f"{path}: the texts for class {name!r} must be strings, not "
                    f"{', '.join(json.dumps(t) for t in bad[:3])}{' ...' if len(bad) > 3 else ''}."
                )
        return sets
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if not rows or not rows[0] or rows[0][0].strip().lower() != "class":
            raise UserError(f"{path} must be a csv whose first column is `class`.")
        header = [h.strip().lower() for h in rows[0]]
        sets: dict[str, dict[str, list[str]]] = {}
        if "sub_text" in header:
            col, set_col = (
                header.index("sub_text"),
                header.index("set") if "set" in header else None,
            )
            for row in rows[1:]:
                if len(row) > col and row[col].strip():
                    label = row[set_col] if set_col is not None and len(row) > set_col else ""
                    sets.setdefault(row[0].strip(), {}).setdefault(label, []).append(row[col])
        else:
            for i, row in enumerate(rows[1:]):
                texts = [c for c in row[1:] if c.strip()]
                if row and texts:
                    sets.setdefault(row[0].strip(), {})[str(i)] = texts
        return {name: list(by_label.values()) for name, by_label in sets.items()}
    raise UserError(f"--input must be a .json or .csv file, not {path.name}.")


def _listed(keys: Sequence[str]) -> str:
    more = f" ({len(keys)} in all)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + (" ..." if more else "") + more


@dataclass(frozen=True)
class ImportMatch:
    """How an input file's keys landed on a class list: per class id, how it was matched
    (one of MATCH_KINDS: `exact`, `folded` spelling or `missing`: no set in the file) and
    the file's key that reached it."""

    path: Path
    classes: ClassList
    how: tuple[str, ...]
    keys: tuple[str | None, ...]

    def summary(self) -> str:
        """One line per kind of match: counts, and the folded and missing classes by name."""
        counts = Counter(self.how)
        parts = [f"{counts[k]} {k}" for k in MATCH_KINDS if counts[k]]
        lines = [
            f"{self.path} -> {self.classes.name}: {len(self.how) - counts['missing']} of "
            f"{len(self.how)} classes have sets ({', '.join(parts)})."
        ]
        folded = [
            f"{key!r} -> {name}"
            for name, how, key in zip(self.classes.names, self.how, self.keys)
            if how == "folded"
        ]
        missing = [n for n, how in zip(self.classes.names, self.how) if how == "missing"]
        if folded:
            lines.append(f"  folded spelling: {_listed(folded)}")
        if missing:
            lines.append(f"  missing (no sets in the file): {_listed(missing)}")
        return "\n".join(lines)


class FileBackend:
    """Serves description sets from a file as if an LLM had replied them (raw = JSON list).

    `llm` defaults to `file:<stem>`; `index_classes` is the label list an index-keyed file
    was written for (`--index-classes`). After `plan`, `matched` says how each class was
    matched.
    """

    def __init__(
        self,
        path: Path,
        llm: str | None = None,
        index_classes: ClassList | None = None,
    ):
        self.path = Path(path)
        self.llm = llm or f"file:{self.path.stem}"
        self.sets = read_description_sets(self.path)
        if not any(texts for class_sets in self.sets.values() for texts in class_sets):
            raise UserError(f"{self.path} holds no description sets.")
        self.index_classes = index_classes
        self._matched: tuple[ClassList, dict[int, list[list[str]]]] | None = None
        self.matched: ImportMatch | None = None

    @property
    def keyed_by_index(self) -> bool:
        """A JSON file whose keys are all integers (class indices, unless the class list has
        integer names)."""
        return self.path.suffix.lower() == ".json" and all(
            _INDEX.fullmatch(k.strip()) for k in self.sets
        )

    def sets_by_class(self, classes: ClassList) -> dict[int, list[list[str]]]:
        """The file's sets per class id of `classes` (keys naming one class are merged, in
        file order); a key that names no class is an error."""
        if self._matched is None or self._matched[0] != classes:
            self._matched = (classes, self._match(classes))
        return self._matched[1]

    def _match(self, classes: ClassList) -> dict[int, list[list[str]]]:
        keys = list(self.sets)
        by_name = match_names(keys, classes.names)
        if by_name.missing and self.path.suffix.lower() == ".json":
            ids, how = self._match_indices(classes, keys, by_name.missing)
        elif by_name.missing:
            raise UserError(
                f"{self.path} names classes that are not in {classes.name}: "
                f"{unknown_names(by_name.missing, classes.names)}."
            )
        else:
            ids, how = list(by_name.ids), list(by_name.how)
        out: dict[int, list[list[str]]] = {}
        per_class: list[str] = ["missing"] * len(classes)
        key_of: list[str | None] = [None] * len(classes)
        for key, class_id, kind in zip(keys, ids, how):
            out.setdefault(class_id, []).extend(self.sets[key])
            if key_of[class_id] is None:
                per_class[class_id], key_of[class_id] = kind, key
        self.matched = ImportMatch(self.path, classes, tuple(per_class), tuple(key_of))
        return out

    def _match_indices(
        self, classes: ClassList, keys: list[str], unknown: list[str]
    ) -> tuple[list[int], list[str]]:
        """A JSON file whose keys are not all class names: keyed by class index (mapped
        through `index_classes`, which it needs), or an error."""
        indices = [k for k in unknown if _INDEX.fullmatch(k.strip())]
        if not indices:
            raise UserError(
                f"{self.path} names classes that are not in {classes.name}: "
                f"{unknown_names(unknown, classes.names)}."
            )
        names = [k for k in keys if not _INDEX.fullmatch(k.strip())]
        if names:
            raise UserError(
                f"{self.path} mixes class names ({_listed(names)}) and class indices "
                f"({_listed(indices)}) as keys; key every class by name or every one by index."
            )
        if len(indices) < len(keys):
            raise UserError(
                f"{self.path} has integer keys of which some are class names of "
                f"{classes.name} ({_listed([k for k in keys if k not in indices])}) and some "
                "are not, so it is neither keyed by name nor by index."
            )
        labels = self.index_classes
        if labels is None:
            raise UserError(
                f"{self.path} is keyed by class index: pass --index-classes FILE, the label "
                "list it was written for (csv id,name, one name a line, or a shipped "
                f"dataset's name), since published orders differ ({len(keys)} keys)."
            )
        c = len(labels)
        if len(keys) != c:
            raise UserError(
                f"{self.path} is keyed by class index with {len(keys)} keys, but its "
                f"--index-classes list {labels.name} has {c} classes: pass the label list "
                "the file was written for."
            )
        bad = sorted((k for k in keys if not 0 <= int(k) < c), key=lambda k: int(k))
        if bad:
            raise UserError(
                f"{self.path} is keyed by class index, but {_listed(bad)} "
                f"{'is not a class id' if len(bad) == 1 else 'are not class ids'} of "
                f"{labels.name} (0..{c - 1})."
            )
        by_label = match_names([labels.names[int(k)] for k in keys], classes.names)
        if by_label.missing:
            raise UserError(
                f"{self.path} is keyed by the classes of --index-classes {labels.name}, of "
                f"which these are not classes of {classes.name}: "
                f"{unknown_names(by_label.missing, classes.names)}."
            )
        return list(by_label.ids), list(by_label.how)

    def plan(self, classes: ClassList, n_subtexts: int) -> list[Job]:
        """One job per class in the file, one sample per set; unknown class keys are an error."""
        return [
            Job(
                class_id=class_id,
                class_name=classes.names[class_id],
                prompt_id=PROMPT_ID,
                samples=tuple(range(len(class_sets))),
                messages=(),
            )
            for class_id, class_sets in sorted(self.sets_by_class(classes).items())
        ]

    def complete(self, jobs: Sequence[Job]) -> Iterator[Completion]:
        if self._matched is None:
            raise RuntimeError("FileBackend.complete() needs plan() first.")
        by_id = self._matched[1]
        for job in jobs:
            sets = by_id[job.class_id]
            yield Completion(
                job, tuple(json.dumps(sets[s], ensure_ascii=False) for s in job.samples)
            )

    def close(self) -> None:
        pass


def source_labels(paths: Sequence[Path]) -> list[str]:
    """The `llm` of each input file: `file:<stem>`, or where stems clash the shortest tail of
    the resolved path that tells the files apart (`file:x.json`, `file:a/x.json`).

    It depends only on the set of files, not on their order, so rerunning with the same
    inputs gives the same candidate keys; the same file twice is an error.
    """
    resolved = [Path(p).resolve() for p in paths]
    seen: dict[Path, Path] = {}
    for given, full in zip(paths, resolved):
        if full in seen:
            raise UserError(f"--input names the same file twice: {seen[full]} and {given}.")
        seen[full] = Path(given)
    levels = [0] * len(resolved)

    def label(i: int) -> str:
        parts = resolved[i].parts
        k = min(levels[i], len(parts))
        return resolved[i].stem if k == 0 else Path(*parts[-k:]).as_posix()

    while True:
        labels = [label(i) for i in range(len(resolved))]
        counts = Counter(labels)
        clashing = [i for i, text in enumerate(labels) if counts[text] > 1]
        if not clashing:
            return [f"file:{text}" for text in labels]
        for i in clashing:  # distinct resolved paths: at full length they differ
            levels[i] += 1


def file_backends(
    paths: Sequence[Path],
    index_classes: ClassList | None = None,
) -> list[FileBackend]:
    """One backend per input file, each its own source with a unique `llm` label;
    `index_classes` is the label list of every index-keyed file among them."""
    backends = [
        FileBackend(path, llm=llm, index_classes=index_classes)
        for path, llm in zip(paths, source_labels(paths))
    ]
    if index_classes is not None and not any(b.keyed_by_index for b in backends):
        raise UserError(
            f"--index-classes {index_classes.name} maps class indices, but no --input file is "
            "keyed by class index; drop it."
        )
    return backends


OPTIONS = (
    BackendOption(
        "input",
        None,
        "Description sets to import (file backend): JSON or CSV; repeat it for several "
        "sources, each its own candidates for TPP to choose among.",
        list[Path],
        metavar="FILE",
    ),
    BackendOption(
        "index_classes",
        None,
        "The label list an --input keyed by class index was written for (a class list "
        "file, or a shipped dataset's name): key i is its class i, matched to the classes by "
        "name. Always needed for such a file.",
        Path,
        metavar="FILE",
        elsewhere="--index-classes goes with --llm file and its --input files.",
    ),
)


def backends(options: Mapping[str, Any], classes: ClassList, n_subtexts: int) -> list[FileBackend]:
    """`--llm file`: one backend per --input file, each checked against the classes (N
    sub-texts a set) before anything is written."""
    if not options["input"]:
        raise UserError("--llm file needs --input FILE (JSON or CSV description sets).")
    index_classes = options["index_classes"]
    labels = _index_labels(index_classes) if index_classes else None
    found = file_backends([resolve_shipped(p) for p in options["input"]], index_classes=labels)
    for backend in found:
        backend.plan(classes, n_subtexts)
    return found


def _index_labels(index_classes: Path) -> ClassList:
    """--index-classes: a label list file, or the name of a shipped dataset's list."""
    if not resolve_shipped(index_classes).exists() and str(index_classes) in shipped_datasets():
        return load_classes(dataset=str(index_classes))
    return load_classes(classes_file=index_classes, flag="--index-classes")


# After the run, how each imported file's keys landed on the classes.
BACKEND = LLMBackend(OPTIONS, backends, report=lambda backend: backend.matched.summary())
