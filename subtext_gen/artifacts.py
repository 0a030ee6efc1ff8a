"""Stage one's side of the Parquet artifacts: the candidate store (`candidates.parquet`
and its journal), and writing `tpp.parquet` and `subtexts.parquet` (through
`storyboard_common.files`). The file names, `subtexts.parquet`'s schema, the metadata and
the read side of the sub-text artifact are in `storyboard_common.subtexts`, which both
stages use (see docs/design.md, "Artifacts").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_path, atomic_write_table, os_reason, remove_stale_temps
from storyboard_common.locks import folder_lock
from storyboard_common.subtexts import (
    META_PREFIX,
    SUBTEXTS_FILE,
    SUBTEXTS_SCHEMA,
    TPP_FILE,
    VERSION,
    ArtifactMeta,
    check_columns,
    check_scored_pair,
    read_meta,
    read_table,
)

CANDIDATES_FILE = "candidates.parquet"
JOURNAL_FILE = "candidates.journal.jsonl"
FALLBACK_CANDIDATE_ID = "fallback:global"

_f32 = pa.float32()

CANDIDATES_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("class_id", pa.int32()),
        ("class_name", pa.string()),
        ("llm", pa.string()),
        ("prompt_id", pa.string()),
        ("sample", pa.int32()),
        ("sub_texts", pa.list_(pa.string())),
        ("ok", pa.bool_()),
        ("error", pa.string()),
        ("raw", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

TPP_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("class_id", pa.int32()),
        ("tpp", _f32),
        ("sigma", pa.list_(_f32)),
        ("delta", pa.list_(_f32)),
        ("selected", pa.bool_()),
    ]
)

# ---------------------------------------------------------------- paths and keys


def candidate_id(class_name: str, llm: str, prompt_id: str, sample: int) -> str:
    """Stable hash of the key (class, llm, prompt, sample) of a candidate row."""
    key = "\x1f".join([class_name, llm, prompt_id, str(int(sample))])
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def _encode_meta(meta: dict[str, object]) -> dict[bytes, bytes]:
    return {(META_PREFIX + k).encode("utf-8"): str(v).encode("utf-8") for k, v in meta.items()}


# ---------------------------------------------------------------- candidates


@dataclass(frozen=True)
class CandidateRow:
    """One LLM answer (or failure) for the key (class, llm, prompt, sample)."""

    class_id: int
    class_name: str
    llm: str
    prompt_id: str
    sample: int
    sub_texts: tuple[str, ...]
    ok: bool
    error: str | None
    raw: str | None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def candidate_id(self) -> str:
        return candidate_id(self.class_name, self.llm, self.prompt_id, self.sample)

    @property
    def answered(self) -> bool:
        """The LLM replied (good or unparseable); False only when the request itself failed."""
        return self.raw is not None

    def to_record(self) -> dict:
        return {
            "candidate_id": self.candidate_id,
            "class_id": self.class_id,
            "class_name": self.class_name,
            "llm": self.llm,
            "prompt_id": self.prompt_id,
            "sample": self.sample,
            "sub_texts": list(self.sub_texts),
            "ok": self.ok,
            "error": self.error,
            "raw": self.raw,
            "created_at": self.created_at,
        }

    @classmethod
    def from_record(cls, rec: dict) -> CandidateRow:
        created = rec["created_at"]
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        return cls(
            class_id=int(rec["class_id"]),
            class_name=rec["class_name"],
            llm=rec["llm"],
            prompt_id=rec["prompt_id"],
            sample=int(rec["sample"]),
            sub_texts=tuple(rec["sub_texts"] or ()),
            ok=bool(rec["ok"]),
            error=rec["error"],
            raw=rec["raw"],
            created_at=created,
        )


LOCK_FILE = ".generate.lock"
JOURNAL_HEADER = "storyboard_journal"


def writer_lock(directory: Path):
    """One `generate` writes an artifact folder at a time: a `folder_lock` on
    `<directory>/.generate.lock` for the block, dropped by the OS however the holder dies."""
    return folder_lock(directory, LOCK_FILE, "`generate`", "the artifact folder")


def _damaged(path: Path, journal: Path) -> UserError:
    """The one sentence for a `candidates.parquet` that cannot be read."""
    if journal.exists():
        how = (
            f"delete it and rerun `generate`: the rows in {journal} are kept and the rest "
            "are asked for again."
        )
    else:
        how = f"delete the folder {path.parent} and rerun `generate`."
    return UserError(f"{path} is damaged (not a readable Parquet file); {how}")


def _read_candidates_file(path: Path, journal: Path) -> tuple[dict[str, str], list[CandidateRow]]:
    try:
        meta = read_meta(path)
        rows = read_candidate_rows(path)
    except UserError as exc:
        if isinstance(exc.__cause__, (pa.ArrowInvalid, OSError)):
            raise _damaged(path, journal) from exc.__cause__
        raise
    return meta, rows


def _journal_header(class_names: Sequence[str], n_subtexts: int) -> dict[str, object]:
    return {
        JOURNAL_HEADER: VERSION,
        "classes": list(class_names),
        "n_subtexts": int(n_subtexts),
    }


def read_journal_meta(path: Path) -> dict[str, str]:
    """The journal's header as `candidates.parquet` metadata (`version`, `classes`,
    `n_subtexts`); empty for a missing journal or one without a header."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UserError(f"cannot read {path} ({os_reason(exc)}).") from exc
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        return {}
    if not isinstance(head, dict) or JOURNAL_HEADER not in head:
        return {}
    return {
        "version": str(head[JOURNAL_HEADER]),
        "classes": json.dumps(head.get("classes", []), ensure_ascii=False),
        "n_subtexts": str(head.get("n_subtexts", "")),
    }


class CandidateStore:
    """`candidates.parquet` plus an append-only journal, so a crash loses nothing written.

    Every new row is appended to `candidates.journal.jsonl` and handed to the OS at once;
    `flush()` folds the journal into the Parquet file atomically and removes it. Rows are
    keyed by `candidate_id`; a later row replaces an earlier one with the same key.
    The class list, N and the format version are stored as metadata (the journal's first
    line carries them too) and must agree across runs.
    """

    def __init__(self, directory: Path, class_names: Sequence[str], n_subtexts: int):
        self.directory = Path(directory)
        self.path = self.directory / CANDIDATES_FILE
        self.journal_path = self.directory / JOURNAL_FILE
        self.class_names = list(class_names)
        self.n_subtexts = int(n_subtexts)
        self.rows: dict[str, CandidateRow] = {}
        if self.path.exists():
            meta, rows = _read_candidates_file(self.path, self.journal_path)
            self._check_compatible(meta, self.path)
            for row in rows:
                self.rows[row.candidate_id] = row
        self._check_compatible(read_journal_meta(self.journal_path), self.journal_path)
        for row in _read_journal(self.journal_path):
            self.rows[row.candidate_id] = row
        self._journal = None

    def _check_compatible(self, meta: dict[str, str], path: Path) -> None:
        version = meta.get("version")
        if version and version != VERSION:
            raise UserError(
                f"{path} was written by format version {version}, not {VERSION}; use another --out."
            )
        stored = json.loads(meta.get("classes", "[]"))
        if stored and stored != self.class_names:
            added = sorted(set(self.class_names) - set(stored))
            removed = sorted(set(stored) - set(self.class_names))
            raise UserError(
                f"{path} was made for another class list (not in it: {added or 'none'}; "
                f"only in it: {removed or 'none'}); use another --out."
            )
        stored_n = meta.get("n_subtexts")
        if stored_n and int(stored_n) != self.n_subtexts:
            raise UserError(
                f"{path} holds sets of {stored_n} sub-texts, not {self.n_subtexts} "
                "(--n-subtexts); use another --out."
            )

    def append(self, row: CandidateRow) -> None:
        rec = row.to_record()
        rec["created_at"] = row.created_at.isoformat()
        try:
            if self._journal is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._journal = open(self.journal_path, "a", encoding="utf-8")  # noqa: SIM115
                if self._journal.tell() == 0:  # a new journal: the header comes first
                    header = _journal_header(self.class_names, self.n_subtexts)
                    self._journal.write(json.dumps(header, ensure_ascii=False) + "\n")
            self._journal.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._journal.flush()  # in the OS now: a killed process loses nothing written
        except OSError as exc:
            raise UserError(f"could not write {self.journal_path} ({os_reason(exc)}).") from exc
        self.rows[row.candidate_id] = row

    def flush(self) -> None:
        """Fold the journal into `candidates.parquet` (atomic) and remove the journal."""
        if self._journal is not None:
            try:
                self._journal.close()
            except OSError:
                pass  # every row was flushed to the OS when appended
            self._journal = None
        if not self.rows and not self.path.exists():
            return
        meta = {
            "version": VERSION,
            "classes": json.dumps(self.class_names, ensure_ascii=False),
            "n_subtexts": self.n_subtexts,
        }
        ordered = sorted(
            self.rows.values(), key=lambda r: (r.class_id, r.llm, r.prompt_id, r.sample)
        )
        table = pa.Table.from_pylist(
            [r.to_record() for r in ordered], schema=CANDIDATES_SCHEMA
        ).replace_schema_metadata(_encode_meta(meta))
        atomic_write_table(table, self.path)
        self.journal_path.unlink(missing_ok=True)


def _read_journal(path: Path) -> Iterable[CandidateRow]:
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                if isinstance(rec, dict) and JOURNAL_HEADER in rec:
                    continue
                yield CandidateRow.from_record(rec)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line torn by a crash mid-write: its request is simply redone


def read_candidate_rows(path: Path) -> list[CandidateRow]:
    table = read_table(path, "candidates file")
    check_columns(table, CANDIDATES_SCHEMA, Path(path))
    return [CandidateRow.from_record(rec) for rec in table.to_pylist()]


@dataclass(frozen=True)
class Candidates:
    """Everything `score` needs from a dataset's artifact folder."""

    class_names: list[str]
    n_subtexts: int
    rows: list[CandidateRow]


def read_candidates(directory: Path) -> Candidates:
    """Read `candidates.parquet` with any unflushed journal rows (an interrupted run)."""
    directory = Path(directory)
    path = directory / CANDIDATES_FILE
    if not path.exists() and not (directory / JOURNAL_FILE).exists():
        raise UserError(
            f"no candidates in {directory}: run `python -m subtext_gen generate` first."
        )
    journal = directory / JOURNAL_FILE
    meta, file_rows = _read_candidates_file(path, journal) if path.exists() else ({}, [])
    if not meta:  # journal only (a run killed before its first flush): its header says
        meta = read_journal_meta(journal)
    rows = {r.candidate_id: r for r in file_rows}
    rows.update({r.candidate_id: r for r in _read_journal(directory / JOURNAL_FILE)})
    ordered = sorted(rows.values(), key=lambda r: (r.class_id, r.llm, r.prompt_id, r.sample))
    class_names = json.loads(meta.get("classes", "[]"))
    if not class_names:  # journal only: the class list is what the rows name
        class_names = [name for _, name in sorted({(r.class_id, r.class_name) for r in ordered})]
    n = (
        int(meta["n_subtexts"])
        if "n_subtexts" in meta
        else max((len(r.sub_texts) for r in ordered if r.ok), default=0)
    )
    return Candidates(class_names=class_names, n_subtexts=n, rows=ordered)


# ---------------------------------------------------------------- scores and sub-texts


@dataclass(frozen=True)
class TppRow:
    candidate_id: str
    class_id: int
    tpp: float
    sigma: Sequence[float]
    delta: Sequence[float]
    selected: bool


def tpp_table(rows: Sequence[TppRow], meta: ArtifactMeta) -> pa.Table:
    """tpp.parquet's table: each scored set's TPP, its terms and whether it was chosen."""
    return pa.Table.from_pylist(
        [
            {
                "candidate_id": r.candidate_id,
                "class_id": r.class_id,
                "tpp": float(r.tpp),
                "sigma": [float(x) for x in r.sigma],
                "delta": [float(x) for x in r.delta],
                "selected": bool(r.selected),
            }
            for r in rows
        ],
        schema=TPP_SCHEMA,
    ).replace_schema_metadata(_encode_meta(meta.to_dict()))


def read_tpp(path: Path) -> pa.Table:
    table = read_table(path, "TPP scores")
    check_columns(table, TPP_SCHEMA, Path(path))
    check_scored_pair(Path(path))
    return table


@dataclass(frozen=True)
class SubtextRow:
    """One class of `subtexts.parquet`; token arrays are [W, D] with only word tokens."""

    class_id: int
    class_name: str
    global_text: str
    sub_texts: Sequence[str]
    tpp: float
    candidate_id: str
    global_emb: np.ndarray  # [D]
    global_tokens: np.ndarray  # [W, D]
    sub_emb: np.ndarray  # [N, D]
    sub_tokens: Sequence[np.ndarray]  # N x [W_n, D]


def subtexts_table(rows: Sequence[SubtextRow], meta: ArtifactMeta) -> pa.Table:
    """subtexts.parquet's table: one row per class, in class-id order, float32 embeddings."""

    def f32(a) -> list:
        return np.asarray(a, dtype=np.float32).tolist()

    ordered = sorted(rows, key=lambda r: r.class_id)
    return pa.Table.from_pylist(
        [
            {
                "class_id": r.class_id,
                "class_name": r.class_name,
                "global_text": r.global_text,
                "sub_texts": list(r.sub_texts),
                "tpp": float(r.tpp),
                "candidate_id": r.candidate_id,
                "global_emb": f32(r.global_emb),
                "global_tokens": f32(r.global_tokens),
                "sub_emb": f32(r.sub_emb),
                "sub_tokens": [f32(t) for t in r.sub_tokens],
            }
            for r in ordered
        ],
        schema=SUBTEXTS_SCHEMA,
    ).replace_schema_metadata(_encode_meta(meta.to_dict()))


SCORE_LOCK_FILE = ".score.lock"


def write_scored_pair(tpp: pa.Table, subtexts: pa.Table, scored_dir: Path) -> None:
    """`tpp.parquet` and `subtexts.parquet` of one `score`, under the one-writer lock of
    the scored folder (`<scored_dir>/.score.lock`). Each is written whole to its temporary
    file before either is renamed into place, so an interrupt (Ctrl-C) or a fault while
    writing leaves the previous pair; only a kill between the two renames leaves a mixed
    pair, which readers refuse by its two scoring ids. Temporary files a killed `score`
    left (SIGKILL runs no clean-up) are removed first."""
    import pyarrow.parquet as pq

    scored_dir = Path(scored_dir)
    with folder_lock(scored_dir, SCORE_LOCK_FILE, "`score`", "the scored folder"):
        for name in (TPP_FILE, SUBTEXTS_FILE):
            remove_stale_temps(scored_dir / name)
        with (
            atomic_path(scored_dir / TPP_FILE) as tpp_tmp,
            atomic_path(scored_dir / SUBTEXTS_FILE) as subtexts_tmp,
        ):
            pq.write_table(tpp, tpp_tmp)
            pq.write_table(subtexts, subtexts_tmp)
