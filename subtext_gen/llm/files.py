"""The `file` backend: imports existing description sets as candidates.

Accepted files:
* JSON `{class name: [texts]}` (CuPL, "classify by description"): one candidate set per
  class; `{class name: [[texts], [texts], ...]}` gives several sets.
* JSON keyed by class index, `{"0": [texts], "1": [...], ...}` (published sub-action files
  such as `temporal_descriptors/4_descriptors.json`): when every key is an integer that is a
  class id of the class list (0..C-1) and the keys are not class names, key i is class i;
  a notice says so. Out-of-range indices, or names mixed with indices, are an error.
* CSV, long form with a `sub_text` column: `class,sub_text[,set]`, one sub-text a row, the
  rows of a class (and `set` label, if given) in order forming one set.
* CSV, wide form: `class,<any>,<any>,...`, one set a row, its non-empty cells the sub-texts.
Class names are matched as written or as words (`brush_hair` = `brush hair`, any case).
Every text is cleaned by the reply parser's `clean_item` (list labels such as `Step 1:`,
`1.`, `1)`, bullets, quotes around the whole text, trailing punctuation go).

Several files are several sources (`file_backends`): one backend each, its `llm` column
`file:<stem>`, or where stems clash the shortest tail of the path that tells them apart
(`file:x.csv`, `file:a/x.json`), so candidate keys (class, llm, prompt, sample) are unique
and the same inputs always give the same keys.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from storyboard_common.errors import UserError

from ..classes import ClassList, class_text
from ..parse import clean_item
from .base import Completion, Job

PROMPT_ID = "file"


def _key(name: str) -> str:
    return class_text(name).lower()


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
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
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
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
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


def _print_notice(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _listed(keys: Sequence[str]) -> str:
    more = f" ({len(keys)} in all)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + (" ..." if more else "") + more


class FileBackend:
    """Serves description sets from a file as if an LLM had replied them (raw = JSON list).

    `llm` defaults to `file:<stem>`; `notify` receives the one notice a file keyed by class
    index gets (default: a `note:` line on stderr).
    """

    def __init__(
        self,
        path: Path,
        llm: str | None = None,
        notify: Callable[[str], None] | None = None,
    ):
        self.path = Path(path)
        self.llm = llm or f"file:{self.path.stem}"
        self.sets = read_description_sets(self.path)
        if not any(texts for class_sets in self.sets.values() for texts in class_sets):
            raise UserError(f"{self.path} holds no description sets.")
        self.notify = notify or _print_notice
        self._matched: tuple[ClassList, dict[int, list[list[str]]]] | None = None

    def sets_by_class(self, classes: ClassList) -> dict[int, list[list[str]]]:
        """The file's sets per class id of `classes` (keys naming one class are merged, in
        file order); a key that names no class is an error."""
        if self._matched is None or self._matched[0] != classes:
            self._matched = (classes, self._match(classes))
        return self._matched[1]

    def _match(self, classes: ClassList) -> dict[int, list[list[str]]]:
        by_key = {_key(name): i for i, name in enumerate(classes.names)}
        ids = {name: by_key.get(_key(name)) for name in self.sets}
        unknown = [name for name, i in ids.items() if i is None]
        if unknown and self.path.suffix.lower() == ".json":
            ids = self._match_indices(classes, ids, unknown)
        elif unknown:
            raise UserError(
                f"{self.path} names classes that are not in {classes.name}: "
                f"{', '.join(sorted(unknown))}."
            )
        out: dict[int, list[list[str]]] = {}
        for name, class_sets in self.sets.items():
            out.setdefault(ids[name], []).extend(class_sets)
        return out

    def _match_indices(
        self, classes: ClassList, ids: dict[str, int | None], unknown: list[str]
    ) -> dict[str, int]:
        """A JSON file whose keys are not all class names: keyed by class index, or an error."""
        indices = [k for k in unknown if _INDEX.fullmatch(k.strip())]
        if not indices:
            raise UserError(
                f"{self.path} names classes that are not in {classes.name}: "
                f"{', '.join(sorted(unknown))}."
            )
        names = [k for k in ids if not _INDEX.fullmatch(k.strip())]
        if names:
            raise UserError(
                f"{self.path} mixes class names ({_listed(names)}) and class indices "
                f"({_listed(indices)}) as keys; key every class by name or every one by index."
            )
        if len(indices) < len(ids):
            raise UserError(
                f"{self.path} has integer keys of which some are class names of "
                f"{classes.name} ({_listed([k for k in ids if k not in indices])}) and some "
                "are not, so it is neither keyed by name nor by index."
            )
        c = len(classes)
        bad = sorted((k for k in indices if not 0 <= int(k) < c), key=lambda k: int(k))
        if bad:
            raise UserError(
                f"{self.path} is keyed by class index, but {_listed(bad)} "
                f"{'is not a class id' if len(bad) == 1 else 'are not class ids'} of "
                f"{classes.name} (0..{c - 1})."
            )
        self.notify(
            f"{self.path} was read as keyed by class index: key i is class i of "
            f'{classes.name} ("0" = {classes.names[0]}).'
        )
        return {k: int(k) for k in indices}

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
    paths: Sequence[Path], notify: Callable[[str], None] | None = None
) -> list[FileBackend]:
    """One backend per input file, each its own source with a unique `llm` label."""
    return [
        FileBackend(path, llm=llm, notify=notify) for path, llm in zip(paths, source_labels(paths))
    ]
