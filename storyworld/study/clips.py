"""Each world CLIP made ready for the study's runs (`prepare`): pre-training, the sub-texts
TPP keeps (stage one run on the world's candidate sets), the frozen feature caches, the
references on those caches (zero-shot, linear probes), the calibrated temperatures and the
sub-text groups of the TPP test. Every step is resumable: a rerun reuses what is on disk."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from storyboard_common.classes import load_classes
from storyboard_common.clip import LoadedClip, load_clip
from storyboard_common.errors import UserError
from storyboard_common.files import atomic_write_text
from storyboard_common.progress import Heartbeat
from storyboard_common.subtexts import TPP_FILE, SubtextArtifact, read_subtexts
from subtext_gen.artifacts import read_candidates, read_tpp
from subtext_gen.generate import generate
from subtext_gen.llm.files import FileBackend
from subtext_gen.score import class_reports, score
from trainer.cache.build import cache_features
from trainer.cache.store import TEST, TRAIN, read_split
from trainer.model.video_clip import clip_log_logit_scale
from trainer.settings import RunConfig
from trainer.subtexts import artifact_class_text

from .. import WORLD_CLIP
from ..pretrain import encode_frames, frame_accuracies, load_frame_pairs, log_path, pretrain_clip
from ..world.definition import CANDIDATES_PATH, SUBTEXTS_PER_SET, WorldInfo, subtext_pools
from . import analysis
from .design import BRANCHES, StudyDesign
from .tpp_groups import SET_KINDS, TPP_SCALINGS, count_groups, group_sets, random_groups


@dataclass
class ClipAssets:
    """What one world CLIP brings to the runs: checkpoint, sub-texts, feature caches."""

    objective: str
    checkpoint: Path
    seen_subtexts: Path
    unseen_subtexts: Path
    seen_cache: Path
    unseen_cache: Path
    group_subtexts: dict[str, Path] = field(default_factory=dict)  # by TPP group

    def subtexts(self, group: str | None) -> Path:
        return self.seen_subtexts if group is None else self.group_subtexts[group]


@dataclass
class CachedSplit:
    """A cached split's first view, with what each sampled frame shows."""

    features: torch.Tensor  # [M, T, D]
    labels: np.ndarray  # [M]
    on_action: np.ndarray  # bool [M, T]: the frame shows one of its class's actions


def load_cached_split(cache: Path, split: str, root: Path) -> CachedSplit:
    table = read_split(cache, split, view=0)
    features = torch.from_numpy(np.ascontiguousarray(table.features, dtype=np.float32))
    labels = np.asarray([row[0] for row in table.labels])
    on_action = []
    for video_id, frames in zip(table.video_ids, table.frame_indices):
        truth = json.loads((root / f"{video_id}.json").read_text())
        own = set(truth["actions"])
        on_action.append([truth["frames"][i] in own for i in frames])
    return CachedSplit(features, labels, np.asarray(on_action, dtype=bool))


def _scored(
    dataset_root: Path, out: Path, checkpoint: Path, sets: dict[str, list[list[str]]], scaling: str
) -> Path:
    """Stage one on candidate `sets` ({class: [set, ...]} for every class of the dataset):
    `generate` with the file backend, then `score` with alpha = beta = `scaling` (TPP keeps
    the best set per class; one set per class is kept as it is). -> the scored folder."""
    classes = load_classes(classes_file=dataset_root / "classes.csv")
    subset = out / "candidates.json"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(subset, json.dumps({c: sets[c] for c in classes.names}, indent=1))
    items = len(next(iter(sets.values()))[0])
    generate(classes, FileBackend(subset), out, n_subtexts=items, show_progress=False)
    return score(
        out, lambda: load_clip(WORLD_CLIP, str(checkpoint), "cpu"), alpha=scaling, beta=scaling
    ).out_dir


def _subtexts(
    dataset_root: Path, out: Path, checkpoint: Path, scaling: str
) -> tuple[Path, dict[str, str]]:
    """The shipped candidate sets of this dataset's classes, kept by TPP with alpha = beta =
    `scaling`. -> (subtexts.parquet, {class: the kind of set kept})."""
    shipped = json.loads(Path(CANDIDATES_PATH).read_text())
    scored = _scored(dataset_root, out, checkpoint, shipped, scaling)
    kept = {
        r.class_name: SET_KINDS[shipped[r.class_name].index(list(r.sub_texts))]
        for r in class_reports(out, scored)
    }
    return scored / "subtexts.parquet", kept


def _scores_of_sets(
    dataset_root: Path, out: Path, checkpoint: Path, sets: dict[str, list[list[str]]], scaling: str
) -> dict[tuple[str, tuple[str, ...]], dict[str, float]]:
    """TPP under `scaling`, and the mean of its sigma (Eq. 3) and delta (Eq. 4) terms, of
    every candidate set: {(class, sub-texts): {"tpp", "sigma", "delta"}}, read from the
    scores stage one writes."""
    scored = _scored(dataset_root, out, checkpoint, sets, scaling)
    texts = {r.candidate_id: (r.class_name, tuple(r.sub_texts)) for r in read_candidates(out).rows}
    return {
        texts[r["candidate_id"]]: {
            "tpp": r["tpp"],
            "sigma": float(np.mean(r["sigma"])),
            "delta": float(np.mean(r["delta"])),
        }
        for r in read_tpp(scored / TPP_FILE).to_pylist()
    }


def _pool_scores(
    dataset_root: Path, base: Path, checkpoint: Path, groups: dict[str, dict[str, list[str]]]
) -> dict[str, dict[tuple[str, tuple[str, ...]], dict[str, float]]]:
    """Every distinct set of the `groups`, scored once per TPP reading in one pool:
    {reading: {(class, sub-texts): scores}} (`_scores_of_sets`)."""
    pool: dict[str, list[list[str]]] = {}
    for sets in groups.values():
        for c, texts in sets.items():
            if texts not in pool.setdefault(c, []):
                pool[c].append(texts)
    return {
        scaling: _scores_of_sets(dataset_root, base / f"{scaling}", checkpoint, pool, scaling)
        for scaling in TPP_SCALINGS
    }


def _group_figures(sets: dict[str, list[str]], scores: dict) -> dict:
    """A group's sets, TPP per class and reading, and the means over its classes of TPP
    (per reading), sigma and delta (the same under both readings)."""
    per_class = {
        scaling: {c: scores[scaling][(c, tuple(t))]["tpp"] for c, t in sets.items()}
        for scaling in TPP_SCALINGS
    }
    terms = scores[TPP_SCALINGS[0]]
    return {
        "sets": sets,
        "tpp": per_class,
        "mean_tpp": {k: float(np.mean(list(v.values()))) for k, v in per_class.items()},
        **{
            f"mean_{term}": float(np.mean([terms[(c, tuple(t))][term] for c, t in sets.items()]))
            for term in ("sigma", "delta")
        },
    }


def _group_artifact(dataset_root: Path, folder: Path, checkpoint: Path, sets: dict) -> Path:
    """The seen sub-text artifact of one group (its one set per class, kept as it is)."""
    one_each = {c: [t] for c, t in sets.items()}
    return _scored(dataset_root, folder, checkpoint, one_each, "complement") / "subtexts.parquet"


def prepare_groups(
    design: StudyDesign,
    world: WorldInfo,
    base: Path,
    checkpoint: Path,
    kept: dict[str, dict[str, str]],
    kept_paths: dict[str, Path],
) -> tuple[dict[str, Path], dict]:
    """Every TPP group's seen sub-text artifact (TPP's choices reuse the main runs' ones)
    and each group's TPP under both readings. -> ({group: subtexts.parquet}, {group:
    {"sets", "tpp": {reading: {class: TPP}}, "mean_tpp": {reading: mean over classes}}})."""
    classes = [c.name for c in world.world.seen]
    shipped = json.loads(Path(CANDIDATES_PATH).read_text())
    groups = group_sets(classes, shipped, kept, design.group_shares, design.group_seed)
    scores = _pool_scores(world.seen_root, base / "tpp-pool", checkpoint, groups)
    paths, figures = {}, {}
    for name, sets in groups.items():
        if name.startswith("tpp-"):
            paths[name] = kept_paths[name.removeprefix("tpp-")]
        else:
            folder = base / "groups" / name.replace("%", "pc")
            paths[name] = _group_artifact(world.seen_root, folder, checkpoint, sets)
        figures[name] = _group_figures(sets, scores)
    return paths, figures


def prepare_figure_groups(
    design: StudyDesign, world: WorldInfo, base: Path, checkpoint: Path, random: bool
) -> tuple[dict[str, Path], dict, dict]:
    """Issue 31's sub-text groups of the seen classes, each made by stage one: the random
    groups of the Fig. 2(b) test (when `random`) and the N-faithful groups of Fig. 2(a).
    -> ({group: subtexts.parquet}, {random group: figures}, {count group: figures})."""
    pools = {c.name: subtext_pools(c, world.world) for c in world.world.seen}
    randoms = (
        random_groups(pools, design.random_groups, SUBTEXTS_PER_SET, design.random_group_seed)
        if random
        else {}
    )
    counts = count_groups({c: p["faithful"] for c, p in pools.items()}, design.subtext_counts)
    # one pool for the random groups (sets of one size), one per count: stage one scores
    # sets of one size at a time
    pools_of = [("random-pool", randoms)] if randoms else []
    pools_of += [(f"{name}-pool", {name: sets}) for name, sets in counts.items()]
    scores: dict[str, dict] = {}
    for folder, groups in pools_of:
        pooled = _pool_scores(world.seen_root, base / folder, checkpoint, groups)
        for reading, by_set in pooled.items():
            scores.setdefault(reading, {}).update(by_set)
    paths = {
        name: _group_artifact(world.seen_root, base / "groups" / name, checkpoint, sets)
        for name, sets in {**randoms, **counts}.items()
    }
    return (
        paths,
        {name: _group_figures(sets, scores) for name, sets in randoms.items()},
        {name: _group_figures(sets, scores) for name, sets in counts.items()},
    )


def _cache(root: Path, out: Path, checkpoint: Path, design: StudyDesign, views: int) -> Path:
    cfg = RunConfig(
        dataset="list",
        root=root,
        clip_model=WORLD_CLIP,
        clip_pretrained=str(checkpoint),
        frames=design.frames,
        seed=0,
        batch_size=64,
        workers=design.workers,
        device="cpu",
    )
    if not (out / "index.parquet").is_file():
        cache_features(cfg, out, views, "float32", show_progress=False)
    return out


def prepare_clip(
    design: StudyDesign, world: WorldInfo, objective: str, work: Path, say: Callable[[str], None]
) -> tuple[ClipAssets, dict]:
    """Pre-train one world CLIP and make its sub-texts and caches; -> assets and the CLIP's
    own figures (frame-caption accuracy, pre-training, TPP kinds kept)."""
    base = work / objective.replace("+", "_")
    heartbeat = Heartbeat(lambda line: say(f"  {objective}: {line}"))
    checkpoint = pretrain_clip(
        world.seen_root,
        world.out_dir,
        base / "world-clip.pt",
        WORLD_CLIP,
        epochs=design.clip_epochs,
        seed=world.settings["seed"],
        device="cpu",
        show_progress=False,
        frame_stride=design.clip_frame_stride,
        objective=objective,
        heartbeat=heartbeat,
    )
    record = json.loads(log_path(checkpoint).read_text())
    accuracy = frame_accuracies(
        checkpoint,
        world.seen_root,
        world.out_dir,
        WORLD_CLIP,
        "test.txt",
        device="cpu",
        heartbeat=heartbeat,
    )
    say(
        f"  {objective}: CLIP: {record['steps']} steps, final loss "
        f"{record['epoch_losses'][-1]:.3f}; test frames find their caption: pooled "
        f"{accuracy['pooled']:.3f}, word tokens {accuracy['word_tokens']:.3f}"
    )
    kept: dict[str, dict[str, str]] = {}
    paths = {}
    for scaling in TPP_SCALINGS:
        for group, root in (("seen", world.seen_root), ("unseen", world.unseen_root)):
            path, kinds = _subtexts(root, base / f"subtexts-{scaling}-{group}", checkpoint, scaling)
            kept.setdefault(scaling, {}).update(kinds)
            paths[(scaling, group)] = path
        counts = Counter(kept[scaling].values())
        say(
            f"  {objective}: TPP {scaling} keeps "
            + ", ".join(f"{kind} {counts[kind]}" for kind in SET_KINDS)
        )
    assets = ClipAssets(
        objective,
        checkpoint,
        paths[("complement", "seen")],
        paths[("complement", "unseen")],
        _cache(world.seen_root, base / "cache-seen", checkpoint, design, design.views),
        _cache(world.unseen_root, base / "cache-unseen", checkpoint, design, 1),
    )
    figures = {
        "frame_caption_accuracy": accuracy,
        "tpp_kept": kept,
        "pretrain": {
            "steps": record["steps"],
            "final_loss": record["epoch_losses"][-1],
            "train_seconds": record["train_seconds"],
        },
    }
    if design.tpp_groups:
        seen_paths = {scaling: paths[(scaling, "seen")] for scaling in TPP_SCALINGS}
        assets.group_subtexts, figures["tpp_groups"] = prepare_groups(
            design, world, base, checkpoint, kept, seen_paths
        )
    if design.random_groups or design.subtext_counts:
        random = design.random_groups > 0 and objective in design.random_group_objectives
        extra, figures["random_groups"], figures["count_groups"] = prepare_figure_groups(
            design, world, base / "figures", checkpoint, random
        )
        assets.group_subtexts.update(extra)
    return assets, figures


@dataclass
class CalibrationFrames:
    """Evenly spaced frames of the seen training videos, as the frozen CLIP sees them."""

    features: torch.Tensor  # [V, F, D] unit frame embeddings
    labels: np.ndarray  # [V] each video's own class


def calibration_frames(
    design: StudyDesign, world: WorldInfo, clip: LoadedClip
) -> CalibrationFrames:
    """`design.calibration_frames` evenly spaced frames (segment centres) of every seen
    training video, encoded by the frozen world CLIP."""
    count = design.calibration_frames
    stride = world.settings["frames"] // count
    pairs = load_frame_pairs(
        world.seen_root, world.out_dir, clip.image_size, "train.txt", stride, stride // 2
    )
    features = encode_frames(clip, pairs.images)
    videos = int(pairs.video_ids.max()) + 1
    if len(pairs) != videos * count:
        raise UserError(f"{world.seen_root / 'train.txt'}: videos shorter than {count} frames.")
    lines = (world.seen_root / "train.txt").read_text().split("\n")
    labels = np.asarray([int(line.split()[1]) for line in lines if line.strip()])
    return CalibrationFrames(features.reshape(videos, count, -1), labels)


def references(
    assets: ClipAssets, world: WorldInfo, seen: CachedSplit, unseen: CachedSplit
) -> dict:
    """Zero-shot of the frozen CLIP with the class texts, and the linear probe."""
    train = read_split(assets.seen_cache, TRAIN)
    train_x = np.asarray(train.features, dtype=np.float64).mean(axis=1)
    train_y = np.asarray([row[0] for row in train.labels])
    test_x = seen.features.mean(1).numpy()
    probe = analysis.linear_probe(train_x, train_y, test_x, seen.labels)
    class_emb = read_subtexts(assets.seen_subtexts).global_emb
    log_scale = clip_log_logit_scale(load_clip(WORLD_CLIP, str(assets.checkpoint), "cpu").model)
    anchored = analysis.text_anchored_probe(
        train_x, train_y, test_x, seen.labels, class_emb, log_scale
    )
    unit = class_emb / np.linalg.norm(class_emb, axis=1, keepdims=True)
    cosines = unit @ unit.T
    np.fill_diagonal(cosines, -np.inf)
    zero = {}
    for name, split, subtexts in (
        ("seen", seen, assets.seen_subtexts),
        ("unseen", unseen, assets.unseen_subtexts),
    ):
        logits = analysis.zero_shot_logits(
            split.features.numpy(), read_subtexts(subtexts).global_emb
        )
        zero[name] = float((logits.argmax(1) == split.labels).mean())
    return {
        "linear_probe": probe,
        "text_anchored_probe": anchored,
        "class_text_nearest_cosine": [float(c) for c in cosines.max(axis=1)],
        "zero_shot_class_texts": zero,
    }


@dataclass
class Prepared:
    """One world CLIP, ready for runs: its assets, figures, cached test splits."""

    assets: ClipAssets
    figures: dict
    seen: CachedSplit
    unseen: CachedSplit
    unseen_texts: SubtextArtifact
    calibration: CalibrationFrames | None
    pair: tuple[float, float] | None  # the calibrated (tau_coarse, tau_fine)


def prepare(
    design: StudyDesign, world: WorldInfo, objective: str, work: Path, say: Callable[[str], None]
) -> Prepared:
    assets, figures = prepare_clip(design, world, objective, work, say)
    seen = load_cached_split(assets.seen_cache, TEST, world.seen_root)
    unseen = load_cached_split(assets.unseen_cache, TEST, world.unseen_root)
    figures.update(references(assets, world, seen, unseen))
    figures["uniform_importance"] = float(seen.on_action.mean())
    say(
        f"  {objective}: linear probe {figures['linear_probe']['test']:.3f} (train "
        f"{figures['linear_probe']['train']:.3f}); frozen zero-shot seen "
        f"{figures['zero_shot_class_texts']['seen']:.3f}, unseen "
        f"{figures['zero_shot_class_texts']['unseen']:.3f}"
    )
    frames, pair = None, None
    if design.calibration_frames is not None:
        clip = load_clip(WORLD_CLIP, str(assets.checkpoint), "cpu")
        frames = calibration_frames(design, world, clip)
        text = artifact_class_text(
            read_subtexts(assets.seen_subtexts),
            assets.seen_subtexts,
            (clip.model_id, clip.pretrained_id),
            clip.embed_dim,
        )
        figures["calibration"] = analysis.calibrate(
            design.calibration_taus,
            dict(zip(BRANCHES, design.target_largest_weight)),
            frames.features,
            frames.labels,
            text,
        )
        pair = (figures["calibration"]["coarse"], figures["calibration"]["fine"])
        figures["largest_weight_before"] = {
            f"{tau:g}": analysis.frozen_largest_weights(frames.features, frames.labels, text, tau)
            for tau in sorted({*design.taus, *pair})
        }
        say(f"  {objective}: calibrated tau_coarse {pair[0]:g}, tau_fine {pair[1]:g}")
    unseen_texts = read_subtexts(assets.unseen_subtexts)
    return Prepared(assets, figures, seen, unseen, unseen_texts, frames, pair)
