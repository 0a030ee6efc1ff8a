"""TPP scoring and selection: candidates.parquet -> tpp.parquet + subtexts.parquet.

Pass 1 encodes the global text of every class and every distinct sub-text (pooled only)
and scores all candidate sets at once; pass 2 encodes the selected sets and the global
texts again with their word tokens, which is a small fraction of pass 1.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storyboard_common.classes import class_text
from storyboard_common.clip import (
    LoadedClip,
    TextFeatures,
    context_length,
    encode_texts,
    tokens_cut,
)
from storyboard_common.errors import UserError
from storyboard_common.subtexts import (
    SUBTEXTS_FILE,
    TPP_FILE,
    ArtifactMeta,
    read_subtexts,
    scored_dir,
)

from .artifacts import (
    FALLBACK_CANDIDATE_ID,
    CandidateRow,
    SubtextRow,
    TppRow,
    read_candidates,
    read_tpp,
    subtexts_table,
    tpp_table,
    write_scored_pair,
)
from .tpp import TPPResult, tpp

DEFAULT_TEMPLATE = "a video of a person {}."


def global_text(template: str, class_name: str) -> str:
    """`template` with the class's words where its `{}` is; a template that cannot be
    filled in (another placeholder, two `{}`, a lone brace) is one sentence."""
    if "{}" not in template:
        raise UserError(f"--template {template!r} must contain {{}} where the class name goes.")
    try:
        return template.format(class_text(class_name))
    except KeyError as exc:
        reason = f"{{{exc.args[0]}}} is no placeholder it knows"
    except IndexError:
        reason = "it has more than one {}"
    except ValueError as exc:
        reason = str(exc)
    raise UserError(
        f"--template {template!r} cannot be filled in ({reason}): it takes one {{}} for the "
        "class name; write a literal brace twice ({{ or }})."
    )


def check_cut_class_texts(clip: LoadedClip, names: list[str], globals_: list[str]) -> None:
    """Refuse two classes whose global texts CLIP reads as one (the same token ids once cut to
    its context, or once its tokenizer has folded case and spacing): their features would be
    identical, the two classes never told apart."""
    if not globals_:
        return
    first: dict[bytes, int] = {}
    for c, row in enumerate(clip.tokenizer(globals_).numpy()):
        seen = first.setdefault(row.tobytes(), c)
        if seen != c:
            cut = tokens_cut(clip, [globals_[seen], globals_[c]])
            how = (
                f"once cut to CLIP {clip.model_id}'s {context_length(clip)}-token context"
                if cut.any()
                else f"to CLIP {clip.model_id}'s tokenizer"
            )
            raise UserError(
                f"classes {names[seen]!r} and {names[c]!r} have the same text {how}: "
                "shorten their names or the --template so they differ within it."
            )


def warn_cut_texts(
    clip: LoadedClip, names: list[str], globals_: list[str], chosen: dict[int, tuple[str, ...]]
) -> None:
    """One warning line for each text of a class (its global text, its chosen sub-texts) that
    CLIP's context cuts, naming the class and the tokens cut: CLIP reads the text without
    them."""
    texts = [(c, "global text", text) for c, text in enumerate(globals_)]
    texts += [
        (c, f"sub-text {k + 1}", t)
        for c in sorted(chosen)
        for k, t in enumerate(chosen[c])
        if t != globals_[c]  # the global-text fallback: said once
    ]
    cuts = tokens_cut(clip, [text for _, _, text in texts])
    for (c, what, _), cut in zip(texts, cuts.tolist()):
        if cut:
            warnings.warn(
                f"class {names[c]!r}: its {what} is {cut} token(s) longer than CLIP "
                f"{clip.model_id}'s {context_length(clip)}-token context; CLIP reads it "
                "without them.",
                stacklevel=3,
            )


@dataclass(frozen=True)
class ScoreSummary:
    out_dir: Path
    classes: int
    scored: int  # candidate sets scored
    fallback: tuple[str, ...]  # classes that got the global text as sub-texts
    seconds: float
    text_tower_seconds: float  # time inside the text tower (both passes)


def select_best(class_ids: np.ndarray, scores: np.ndarray) -> dict[int, int]:
    """Index of the highest-TPP candidate per class; the first one wins a tie."""
    best: dict[int, int] = {}
    for i, (c, s) in enumerate(zip(class_ids.tolist(), scores.tolist())):
        if c not in best or s > scores[best[c]]:
            best[c] = i
    return best


def score(
    artifacts_dir: Path,
    clip: LoadedClip | Callable[[], LoadedClip],
    alpha: str = "complement",
    beta: str = "complement",
    template: str = DEFAULT_TEMPLATE,
    fallback: str | None = None,
    batch_size: int = 256,
) -> ScoreSummary:
    """Score every valid candidate of `artifacts_dir` and write the two artifacts.

    `clip` may be a loader, called only once the candidates have checked out, so that a
    mistake is reported before a large model is loaded.
    """
    start = time.perf_counter()
    if fallback not in (None, "global"):
        raise UserError(f"--fallback {fallback!r} is not known; the only fallback is `global`.")
    candidates = read_candidates(artifacts_dir)
    names, n = candidates.class_names, candidates.n_subtexts
    valid = _valid_sets(candidates.rows, names, n, artifacts_dir, fallback)
    globals_ = [global_text(template, name) for name in names]
    if callable(clip):
        clip = clip()
    _warn_random_weights(clip)
    check_cut_class_texts(clip, names, globals_)
    encode = TimedEncoder(clip, batch_size)
    result = _score_sets(encode, globals_, valid, n, alpha, beta)
    scores = result.score.numpy()
    class_ids = np.asarray([r.class_id for r in valid], dtype=np.int64)
    best = select_best(class_ids, scores)

    # Pass 2: word tokens of the global texts and the chosen sub-texts.
    C = len(names)
    chosen = {
        c: (valid[i].sub_texts if c in best else (globals_[c],) * n)
        for c, i in ((c, best.get(c, -1)) for c in range(C))
    }
    warn_cut_texts(clip, names, globals_, chosen)
    feats = encode(globals_ + [t for c in range(C) for t in chosen[c]], with_tokens=True)
    meta = ArtifactMeta(
        clip_model=clip.model_id,
        clip_pretrained=clip.pretrained_id,
        embed_dim=clip.embed_dim,
        n_subtexts=n,
        template=template,
        alpha=alpha,
        beta=beta,
        fallback_classes=tuple(i for i in range(C) if i not in best),
        scoring_id=uuid.uuid4().hex,
        llms=dict(sorted(Counter(valid[i].llm for i in best.values()).items())),
    )
    rows = _subtext_rows(names, globals_, chosen, valid, scores, best, feats, n)
    out_dir = scored_dir(Path(artifacts_dir), (clip.model_id, clip.pretrained_id))
    write_scored_pair(
        tpp_table(_tpp_rows(valid, result, set(best.values())), meta),
        subtexts_table(rows, meta),
        out_dir,
    )
    return ScoreSummary(
        out_dir=out_dir,
        classes=C,
        scored=len(valid),
        fallback=tuple(names[i] for i in meta.fallback_classes),
        seconds=time.perf_counter() - start,
        text_tower_seconds=encode.seconds,
    )


def _valid_sets(
    rows: list[CandidateRow],
    names: list[str],
    n: int,
    artifacts_dir: Path,
    fallback: str | None,
) -> list[CandidateRow]:
    """The candidate sets that parsed into `n` sub-texts; a class without one is refused
    unless `fallback` gives it the global text."""
    valid = [r for r in rows if r.ok and len(r.sub_texts) == n]
    has_valid = {r.class_id for r in valid}
    without = [name for i, name in enumerate(names) if i not in has_valid]
    if without and fallback != "global":
        raise UserError(
            f"{len(without)} class(es) have no valid candidate in {artifacts_dir}: "
            f"{', '.join(without[:20])}{' ...' if len(without) > 20 else ''}; generate more "
            "or pass --fallback global."
        )
    return valid


class TimedEncoder:
    """`encode_texts` with `clip`, counting the seconds spent in the text tower."""

    def __init__(self, clip: LoadedClip, batch_size: int):
        self.clip, self.batch_size = clip, batch_size
        self.seconds = 0.0

    def __call__(self, texts: list[str], with_tokens: bool):
        t0 = time.perf_counter()
        feats = encode_texts(self.clip, texts, batch_size=self.batch_size, with_tokens=with_tokens)
        self.seconds += time.perf_counter() - t0
        return feats


def _score_sets(
    encode: TimedEncoder,
    globals_: list[str],
    valid: list[CandidateRow],
    n: int,
    alpha: str,
    beta: str,
) -> TPPResult:
    """Pass 1: the TPP of every valid set, from the pooled features of the global texts and
    of every distinct sub-text (each encoded once)."""
    distinct = list(dict.fromkeys(t for r in valid for t in r.sub_texts))
    pooled = encode(globals_ + distinct, with_tokens=False).pooled
    index = {t: len(globals_) + i for i, t in enumerate(distinct)}
    class_ids = np.asarray([r.class_id for r in valid], dtype=np.int64)
    sub_idx = np.asarray([[index[t] for t in r.sub_texts] for r in valid], dtype=np.int64)
    embed_dim = encode.clip.embed_dim
    return tpp(
        torch.from_numpy(pooled[class_ids]) if len(valid) else torch.zeros(0, embed_dim),
        torch.from_numpy(pooled[sub_idx]) if len(valid) else torch.zeros(0, n, embed_dim),
        alpha=alpha,
        beta=beta,
    )


def _warn_random_weights(clip: LoadedClip) -> None:
    """Warn that a randomly initialised text tower ranks sub-texts by chance: a test or a
    demo may mean it, a user choosing sub-texts does not."""
    if clip.random_weights:
        warnings.warn(
            f"--clip-pretrained none: CLIP {clip.model_id}'s text tower is randomly initialised, "
            "so TPP ranks the sub-text sets by a random tower's geometry, not by their meaning; "
            "score with pretrained weights (e.g. --clip-pretrained openai) to choose sub-texts.",
            stacklevel=3,  # the caller of `score`
        )


def _subtext_rows(
    names: list[str],
    globals_: list[str],
    chosen: dict[int, tuple[str, ...]],
    valid: list[CandidateRow],
    scores: np.ndarray,
    best: dict[int, int],
    feats: TextFeatures,
    n: int,
) -> list[SubtextRow]:
    """subtexts.parquet's rows: each class's chosen sub-texts (or its global text, for a
    class without a valid set), their TPP and their features from pass 2."""
    C = len(names)
    return [
        SubtextRow(
            class_id=c,
            class_name=names[c],
            global_text=globals_[c],
            sub_texts=chosen[c],
            tpp=float(scores[best[c]]) if c in best else float("nan"),
            candidate_id=valid[best[c]].candidate_id if c in best else FALLBACK_CANDIDATE_ID,
            global_emb=feats.pooled[c],
            global_tokens=feats.tokens[c],
            # the chosen set's sub-texts follow the C global texts, n per class
            sub_emb=feats.pooled[C + c * n : C + (c + 1) * n],
            sub_tokens=feats.tokens[C + c * n : C + (c + 1) * n],
        )
        for c in range(C)
    ]


def _tpp_rows(valid: list[CandidateRow], result: TPPResult, selected: set[int]) -> list[TppRow]:
    """tpp.parquet's rows: each valid set's TPP, its terms, and whether it was chosen."""
    scores = result.score.numpy()
    return [
        TppRow(
            candidate_id=r.candidate_id,
            class_id=r.class_id,
            tpp=float(scores[i]),
            sigma=result.sigma[i].tolist(),
            delta=result.delta[i].tolist(),
            selected=i in selected,
        )
        for i, r in enumerate(valid)
    ]


@dataclass(frozen=True)
class ClassReport:
    class_id: int
    class_name: str
    sub_texts: tuple[str, ...]
    tpp: float
    runner_up: tuple[str, ...] | None
    runner_up_tpp: float | None
    fallback: bool


def class_reports(artifacts_dir: Path, scored: Path) -> list[ClassReport]:
    """Per class: the chosen set and its TPP, and the runner-up set and its TPP."""
    art = read_subtexts(scored / SUBTEXTS_FILE)
    scores = read_tpp(scored / TPP_FILE).to_pylist()
    texts = {r.candidate_id: r.sub_texts for r in read_candidates(artifacts_dir).rows}
    ranked: dict[int, list[dict]] = defaultdict(list)
    for rec in sorted(scores, key=lambda r: -r["tpp"]):
        ranked[rec["class_id"]].append(rec)
    reports = []
    for c, name in enumerate(art.class_names):
        others = [r for r in ranked[c] if not r["selected"]]
        runner = others[0] if others else None
        reports.append(
            ClassReport(
                class_id=c,
                class_name=name,
                sub_texts=tuple(art.sub_texts[c]),
                tpp=float(art.tpp[c]),
                runner_up=tuple(texts.get(runner["candidate_id"], ())) if runner else None,
                runner_up_tpp=float(runner["tpp"]) if runner else None,
                fallback=c in art.meta.fallback_classes,
            )
        )
    return reports
