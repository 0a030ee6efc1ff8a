"""The trainer's one door from a sub-text artifact to the model: the check that the artifact
was scored with the CLIP the model is built on (model, weights and embedding width), and
the `ClassText` the model classifies against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storyboard_common.errors import UserError
from storyboard_common.files import artifacts_root
from storyboard_common.subtexts import (
    SUBTEXTS_FILE,
    ArtifactMeta,
    SubtextArtifact,
    clip_tag,
    read_meta,
)

from .model.aggregation import ClassText


def check_artifact_matches_clip(
    meta: ArtifactMeta, model_id: str, pretrained_id: str, artifact_path: str | Path
) -> None:
    """Refuse an artifact made with another CLIP (model or weights) than the one loaded."""
    if meta.clip_model == model_id and meta.clip_pretrained == pretrained_id:
        return
    raise UserError(
        f"{artifact_path} was made with CLIP {meta.clip_model}/{meta.clip_pretrained}, but "
        f"--clip-model/--clip-pretrained give {model_id}/{pretrained_id}; rescore it with "
        "`python -m subtext_gen score --tpp --clip-model ... --clip-pretrained ...` for this "
        "CLIP or pass the matching CLIP."
    )


def require_subtexts(path: Path, dataset: str) -> Path:
    """`path` when it is a file; else a UserError listing the artifacts scored for `dataset`
    under the artifacts root and the flags that select each."""
    path = Path(path)
    if path.is_file():
        return path
    found = []
    for artifact in sorted((artifacts_root() / dataset).glob(f"*/{SUBTEXTS_FILE}")):
        try:
            meta = read_meta(artifact)
        except UserError:
            continue  # unreadable: not one to offer
        found.append((artifact, meta.get("clip_model", "?"), meta.get("clip_pretrained", "?")))
    raise UserError(f"sub-text artifact not found: {path}. " + artifact_choices(dataset, found))


def artifact_choices(dataset: str, found: list[tuple[Path, str, str]]) -> str:
    """What to pass instead, for the (artifact, CLIP model id, weights id) scored for
    `dataset`: the CLIP flags that find an artifact in its default place, else --subtexts
    with them; a checkpoint's weights id (`name@hash`) names the file to pass."""
    score = (
        f"`python -m subtext_gen score --tpp --dataset {dataset} --clip-model ... "
        "--clip-pretrained ...` scores one for another CLIP"
    )
    if not found:
        return f"No artifact is scored for {dataset} under {artifacts_root()}: {score}."
    choices = []
    for artifact, model, pretrained in found:
        name, _, digest = pretrained.partition("@")
        weights = f"PATH/{name} (the checkpoint it was scored with)" if digest else pretrained
        flags = f"--clip-model {model} --clip-pretrained {weights}"
        if artifact.parent.name != clip_tag(model, pretrained):  # moved: named by path
            flags = f"--subtexts {artifact} {flags}"
        choices.append(f"{artifact} ({flags})")
    return f"Scored for {dataset}: {'; '.join(choices)}; or {score}."


@dataclass(frozen=True)
class TrainedTexts:
    """The sub-texts a model was trained with (`SubtextArtifact.identity`, as its checkpoint
    or export records it), who was trained (`source`) and what to do when an artifact read
    for it holds other texts (`instead`)."""

    identity: dict
    source: str
    instead: str

    def check(self, artifact: SubtextArtifact, path: str | Path) -> None:
        """Refuse `artifact` (read from `path`) when its texts are not the recorded ones: it
        was scored again with other texts since (a re-score that chose the same texts
        passes)."""
        now = artifact.identity
        if now["texts_sha256"] == self.identity["texts_sha256"]:
            return
        raise UserError(
            f"{path} holds other sub-texts than {self.source} was trained with (scored as "
            f"{self.identity['scoring_id'] or 'unrecorded'} then, as "
            f"{now['scoring_id'] or 'unrecorded'} now: it was scored again); {self.instead}."
        )


def recorded_texts(record: dict | None, source: str, instead: str) -> TrainedTexts | None:
    """The `TrainedTexts` of a checkpoint's or export's record; None where it records none
    (runs and exports made before runs recorded their texts)."""
    if not isinstance(record, dict) or "texts_sha256" not in record:
        return None
    return TrainedTexts(record, source, instead)


def artifact_class_text(
    artifact: SubtextArtifact, artifact_path: str | Path, clip_id: tuple[str, str], embed_dim: int
) -> ClassText:
    """The class texts of a sub-text artifact, after checking that it was scored with the
    CLIP `clip_id` (model, pretrained) whose joint space is `embed_dim` wide."""
    check_artifact_matches_clip(artifact.meta, *clip_id, artifact_path)
    width = int(artifact.global_emb.shape[-1])
    if artifact.meta.embed_dim != embed_dim:
        raise UserError(
            f"{artifact_path} holds {artifact.meta.embed_dim}-d text embeddings, but CLIP "
            f"{clip_id[0]} embeds in {embed_dim} dimensions; rescore it with "
            "`python -m subtext_gen score --tpp` for this CLIP."
        )
    if width != embed_dim:
        raise UserError(
            f"{artifact_path} says storyboard.embed_dim={artifact.meta.embed_dim} but holds "
            f"{width}-d embeddings; rescore it with `python -m subtext_gen score --tpp`."
        )
    return ClassText.from_artifact(artifact)
