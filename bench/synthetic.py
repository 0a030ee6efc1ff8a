"""Random class texts of the right shapes, for benchmarks that need no real sub-texts."""

from __future__ import annotations

import numpy as np

from storyboard_common.clip import LoadedClip
from storyboard_common.subtexts import ArtifactMeta, SubtextArtifact


def synthetic_artifact(
    clip: LoadedClip, classes: int, subtexts: int = 4, words: int = 12, seed: int = 0
) -> SubtextArtifact:
    """A sub-text artifact made for `clip` with random embeddings: what `artifact_class_text` reads,
    with 2..`words` real word tokens per text (padding is zero, as in real artifacts)."""
    rng = np.random.default_rng(seed)
    dim = clip.embed_dim

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    global_mask = np.arange(words) < rng.integers(2, words + 1, (classes, 1))
    sub_mask = np.arange(words) < rng.integers(2, words + 1, (classes, subtexts, 1))
    meta = ArtifactMeta(
        clip_model=clip.model_id,
        clip_pretrained=clip.pretrained_id,
        embed_dim=dim,
        n_subtexts=subtexts,
        template="a video of a person {}.",
        alpha="complement",
        beta="complement",
    )
    names = [f"action {c}" for c in range(classes)]
    return SubtextArtifact(
        meta=meta,
        class_names=names,
        global_texts=[meta.template.format(name) for name in names],
        sub_texts=[[f"step {n} of {name}" for n in range(subtexts)] for name in names],
        tpp=np.ones(classes, dtype=np.float32),
        global_emb=normal(classes, dim),
        global_tokens=normal(classes, words, dim) * global_mask[..., None],
        global_mask=global_mask,
        sub_emb=normal(classes, subtexts, dim),
        sub_tokens=normal(classes, subtexts, words, dim) * sub_mask[..., None],
        sub_mask=sub_mask,
    )
