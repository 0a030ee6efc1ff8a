"""The read side of the sub-text artifact, which both stages stand on: its file names and
`subtexts.parquet`'s schema, the `storyboard.*` metadata (`ArtifactMeta`), the folder key of
a CLIP (`clip_tag`), the check that a scored pair comes from one `score` call, and
`read_subtexts`, which hands the trainer padded arrays (see docs/design.md, "Artifacts").
`subtext_gen.artifacts` writes these files and keeps the candidate store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError

VERSION = "1"
META_PREFIX = "storyboard."

TPP_FILE = "tpp.parquet"
SUBTEXTS_FILE = "subtexts.parquet"

_f32 = pa.float32()

SUBTEXTS_SCHEMA = pa.schema(
    [
        ("class_id", pa.int32()),
        ("class_name", pa.string()),
        ("global_text", pa.string()),
        ("sub_texts", pa.list_(pa.string())),
        ("tpp", _f32),
        ("candidate_id", pa.string()),
        ("global_emb", pa.list_(_f32)),
        ("global_tokens", pa.list_(pa.list_(_f32))),
        ("sub_emb", pa.list_(pa.list_(_f32))),
        ("sub_tokens", pa.list_(pa.list_(pa.list_(_f32)))),
    ]
)


# ---------------------------------------------------------------- paths and metadata


def clip_tag(clip_model: str, clip_pretrained: str | None) -> str:
    """`<model>__<pretrained>` made filename-safe (a path keeps only its file name, a
    checkpoint identity `name@hash` only its name)."""

    def safe(text: str) -> str:
        text = text.rstrip("/\\")
        if os.sep in text or "/" in text:
            prefix, _, rest = text.partition(":")
            text = (prefix + "-" if rest and prefix in ("hf-hub", "local-dir") else "") + Path(
                rest or text
            ).name
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "none"

    return f"{safe(clip_model)}__{safe((clip_pretrained or 'none').split('@')[0])}"


def scored_dir(artifacts: Path, clip_id: tuple[str, str | None]) -> Path:
    """Where `score` writes the sub-texts of one dataset's artifact folder `artifacts` scored
    with the CLIP `clip_id` (model id, weights id), and where runs look for them:
    `<artifacts>/<clip tag>`, holding tpp.parquet and subtexts.parquet."""
    return Path(artifacts) / clip_tag(*clip_id)


def read_meta(path: Path) -> dict[str, str]:
    """The `storyboard.*` schema metadata of a Parquet file, prefix removed."""
    try:
        raw = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path} is not a readable Parquet file ({exc}).") from exc
    out = {}
    for k, v in raw.items():
        key = k.decode("utf-8")
        if key.startswith(META_PREFIX):
            out[key[len(META_PREFIX) :]] = v.decode("utf-8")
    return out


def read_table(path: Path, what: str) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}.")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path} is not a readable Parquet file ({exc}).") from exc


def check_columns(table: pa.Table, schema: pa.Schema, path: Path) -> None:
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}: not a {path.name}.")


# ---------------------------------------------------------------- scored sub-texts


@dataclass(frozen=True)
class ArtifactMeta:
    """The schema metadata of `tpp.parquet` and `subtexts.parquet`."""

    clip_model: str
    clip_pretrained: str
    embed_dim: int
    n_subtexts: int
    template: str
    alpha: str
    beta: str
    fallback_classes: tuple[int, ...] = ()
    version: str = VERSION
    # One per `score` call, in both files it writes: a pair from two calls (a rescore
    # killed between its two writes) is refused by the readers. Empty in older files.
    scoring_id: str = ""
    # Which LLMs (source labels) wrote the chosen sets: {llm: classes}, recorded by `score`
    # so that an export names them without stage one's folders. None in older files.
    llms: dict[str, int] | None = None

    def to_dict(self) -> dict[str, object]:
        recorded = {} if self.llms is None else {"llms": json.dumps(self.llms, sort_keys=True)}
        return {
            "clip_model": self.clip_model,
            "clip_pretrained": self.clip_pretrained,
            "embed_dim": self.embed_dim,
            "n_subtexts": self.n_subtexts,
            "template": self.template,
            "alpha": self.alpha,
            "beta": self.beta,
            "fallback_classes": ",".join(str(c) for c in self.fallback_classes),
            "version": self.version,
            "scoring_id": self.scoring_id,
            **recorded,
        }

    @classmethod
    def from_dict(cls, meta: dict[str, str], path: Path) -> ArtifactMeta:
        try:
            fallback = meta.get("fallback_classes", "")
            return cls(
                clip_model=meta["clip_model"],
                clip_pretrained=meta["clip_pretrained"],
                embed_dim=int(meta["embed_dim"]),
                n_subtexts=int(meta["n_subtexts"]),
                template=meta["template"],
                alpha=meta["alpha"],
                beta=meta["beta"],
                fallback_classes=tuple(int(c) for c in fallback.split(",") if c),
                version=meta["version"],
                scoring_id=meta.get("scoring_id", ""),
                llms=_recorded_llms(meta, path),
            )
        except KeyError as exc:
            raise UserError(f"{path} lacks the metadata key storyboard.{exc.args[0]}.") from exc


def _recorded_llms(meta: dict[str, str], path: Path) -> dict[str, int] | None:
    """`storyboard.llms` as {llm: classes}; None where it was not recorded."""
    if "llms" not in meta:
        return None
    try:
        llms = json.loads(meta["llms"])
        if not isinstance(llms, dict):
            raise ValueError(llms)
        return {str(name): int(count) for name, count in llms.items()}
    except (ValueError, TypeError) as exc:
        raise UserError(
            f"{path} has a damaged storyboard.llms (not a JSON object of LLM: classes); "
            "rescore it with `python -m subtext_gen score`."
        ) from exc


def check_scored_pair(path: Path) -> None:
    """Refuse `tpp.parquet` or `subtexts.parquet` when the other file beside it was written
    by another `score` call: a rescore stopped between its two writes leaves such a pair."""
    other = path.with_name(SUBTEXTS_FILE if path.name == TPP_FILE else TPP_FILE)
    if not other.is_file():  # a sub-text artifact copied on its own is whole
        return
    if read_meta(path).get("scoring_id", "") != read_meta(other).get("scoring_id", ""):
        raise UserError(
            f"{path.parent} holds {TPP_FILE} and {SUBTEXTS_FILE} from two different `score` "
            "runs (one was stopped between writing them); rerun `python -m subtext_gen score` "
            "on its artifact folder."
        )


@dataclass(frozen=True)
class SubtextArtifact:
    """`subtexts.parquet` as padded arrays, ready for the trainer (masks True on real tokens).

    Shapes: C classes, N sub-texts, W word tokens (padded), D embedding width.
    """

    meta: ArtifactMeta
    class_names: list[str]
    global_texts: list[str]
    sub_texts: list[list[str]]
    tpp: np.ndarray  # [C]
    global_emb: np.ndarray  # [C, D]
    global_tokens: np.ndarray  # [C, W, D]
    global_mask: np.ndarray  # [C, W]
    sub_emb: np.ndarray  # [C, N, D]
    sub_tokens: np.ndarray  # [C, N, W, D]
    sub_mask: np.ndarray  # [C, N, W]

    @property
    def identity(self) -> dict[str, str]:
        """What a run records of the artifact it trained with: the `score` call that wrote
        it and a digest of the texts its model reads (class names, global texts, sub-texts),
        which a re-score that chose the same texts keeps."""
        texts = json.dumps([self.class_names, self.global_texts, self.sub_texts])
        digest = hashlib.sha256(texts.encode("utf-8")).hexdigest()
        return {"scoring_id": self.meta.scoring_id, "texts_sha256": digest}


def pad_tokens(seqs: Sequence[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    width = max((len(s) for s in seqs), default=0)
    out = np.zeros((len(seqs), max(width, 1), dim), dtype=np.float32)
    mask = np.zeros((len(seqs), max(width, 1)), dtype=bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        mask[i, : len(s)] = True
    return out, mask


def read_subtexts(path: Path) -> SubtextArtifact:
    """Read and check `subtexts.parquet`; classes in id order 0..C-1."""
    path = Path(path)
    table = read_table(path, "sub-text artifact")
    check_columns(table, SUBTEXTS_SCHEMA, path)
    meta = ArtifactMeta.from_dict(read_meta(path), path)
    check_scored_pair(path)
    recs = sorted(table.to_pylist(), key=lambda r: r["class_id"])
    ids = [r["class_id"] for r in recs]
    if ids != list(range(len(recs))):
        raise UserError(f"{path} has class ids {ids[:5]}...; expected 0..{len(recs) - 1}.")
    d, n = meta.embed_dim, meta.n_subtexts

    def arr(x, shape) -> np.ndarray:
        try:  # ragged lists, another width or another count are all a ValueError here
            a = np.asarray(x, dtype=np.float32)
            if a.size and a.shape[-1] != d:
                raise ValueError(a.shape)
            return a.reshape(shape)
        except ValueError as exc:
            raise UserError(
                f"{path} holds embeddings that do not fit its metadata (sets of {n} sub-texts, "
                f"width {d}: storyboard.n_subtexts, storyboard.embed_dim); rescore it with "
                "`python -m subtext_gen score`."
            ) from exc

    global_tokens, global_mask = pad_tokens([arr(r["global_tokens"], (-1, d)) for r in recs], d)
    flat_sub = [arr(t, (-1, d)) for r in recs for t in r["sub_tokens"]]
    if len(flat_sub) != len(recs) * n:
        raise UserError(f"{path} does not hold {n} sub-texts for every class.")
    sub_tokens, sub_mask = pad_tokens(flat_sub, d)
    c, w = len(recs), sub_tokens.shape[1]
    artifact = SubtextArtifact(
        meta=meta,
        class_names=[r["class_name"] for r in recs],
        global_texts=[r["global_text"] for r in recs],
        sub_texts=[list(r["sub_texts"]) for r in recs],
        tpp=np.asarray([r["tpp"] for r in recs], dtype=np.float32),
        global_emb=arr([r["global_emb"] for r in recs], (c, d)),
        global_tokens=global_tokens,
        global_mask=global_mask,
        sub_emb=arr([r["sub_emb"] for r in recs], (c, n, d)),
        sub_tokens=sub_tokens.reshape(c, n, w, d),
        sub_mask=sub_mask.reshape(c, n, w),
    )
    for column in ("global_emb", "global_tokens", "sub_emb", "sub_tokens"):
        if not np.isfinite(getattr(artifact, column)).all():  # would end a run as NaN
            raise UserError(
                f"{path} holds values that are not finite (NaN or infinity) in {column}: score "
                "it again (`python -m subtext_gen score`)."
            )
    return artifact
