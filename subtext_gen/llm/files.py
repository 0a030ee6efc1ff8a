"""The `file` backend: imports existing description sets as candidates.

Accepted files:
* JSON `{class name: [texts]}` (CuPL, "classify by description"): one candidate set per
  class; `{class name: [[texts], [texts], ...]}` gives several sets.
* CSV, long form with a `sub_text` column: `class,sub_text[,set]`, one sub-text a row, the
  rows of a class (and `set` label, if given) in order forming one set.
* CSV, wide form: `class,<any>,<any>,...`, one set a row, its non-empty cells the sub-texts.
Class names are matched as written or as words (`brush_hair` = `brush hair`, any case).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..classes import ClassList, class_text
from ..errors import UserError
from .base import Completion, Job

PROMPT_ID = "file"


def _key(name: str) -> str:
    return class_text(name).lower()


def read_description_sets(path: Path) -> dict[str, list[list[str]]]:
    """Candidate sets per class name, as written in the file."""
    path = Path(path)
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
                sets[name] = [[str(t) for t in v] for v in value]
            elif isinstance(value, list):
                sets[name] = [[str(t) for t in value]]
            else:
                raise UserError(f"{path}: the value for class {name!r} is not a list of texts.")
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


class FileBackend:
    """Serves description sets from a file as if an LLM had replied them (raw = JSON list)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.llm = f"file:{self.path.stem}"
        self.sets = read_description_sets(self.path)

    def plan(self, classes: ClassList, n_subtexts: int) -> list[Job]:
        """One job per class in the file, one sample per set; unknown class names are an error."""
        by_key = {_key(name): i for i, name in enumerate(classes.names)}
        unknown = sorted(name for name in self.sets if _key(name) not in by_key)
        if unknown:
            raise UserError(
                f"{self.path} names classes that are not in {classes.name}: {', '.join(unknown)}."
            )
        jobs = []
        for name, class_sets in self.sets.items():
            class_id = by_key[_key(name)]
            jobs.append(
                Job(
                    class_id=class_id,
                    class_name=classes.names[class_id],
                    prompt_id=PROMPT_ID,
                    samples=tuple(range(len(class_sets))),
                    messages=(),
                )
            )
        return sorted(jobs, key=lambda j: j.class_id)

    def complete(self, jobs: Sequence[Job]) -> Iterator[Completion]:
        by_key = {_key(name): sets for name, sets in self.sets.items()}
        for job in jobs:
            sets = by_key[_key(job.class_name)]
            yield Completion(
                job, tuple(json.dumps(sets[s], ensure_ascii=False) for s in job.samples)
            )

    def close(self) -> None:
        pass
