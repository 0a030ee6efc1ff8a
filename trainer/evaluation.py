"""Evaluation: per-video probabilities from a model (views averaged, gathered over ranks),
the metrics, the prediction files, and `evaluate_checkpoint` (supervised and zero-shot
protocols, from videos or from a feature cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from storyboard_common.classes import match_names, unknown_names
from storyboard_common.errors import UserError
from storyboard_common.files import atomic_write, atomic_write_text
from storyboard_common.progress import progress_bar
from storyboard_common.subtexts import read_subtexts

from . import metrics
from .cache.dataset import FeatureDataset
from .cache.store import TEST, FeatureCache, cache_identity, read_meta
from .data.dataset import EpochSampler, VideoClipDataset, loader_workers, make_loader
from .data.device_transforms import decode_clips
from .data.items import SplitList
from .data.layouts import folds, load_split, test_split
from .data.protocols import (
    class_positions,
    half_class_splits,
    read_subset_file,
    restrict_classes,
    subset_class_ids,
)
from .distributed import DistInfo, all_reduce_sum, from_main, gather_to_main
from .model.aggregation import ClassText
from .paths import dataset_root
from .precision import autocast
from .run_data import check_classes, check_decode_device, eval_spec
from .run_models import LoadedRun, load_run
from .subtexts import artifact_class_text


def model_inputs(batch: dict, device: torch.device) -> torch.Tensor:
    """A batch's (or a sample's) clips, or its cached frame features, on the device; clips
    handed over as JPEG bytes (`--decode-device cuda`) are decoded and cut there."""
    if "jpegs" in batch:
        try:
            return decode_clips(batch["jpegs"], device)
        except ValueError as error:  # a JPEG whose header read but whose data do not
            ids = batch["video_ids"] if "video_ids" in batch else [batch["video_id"]]
            raise UserError(
                f"a JPEG frame of {', '.join(dict.fromkeys(ids))} {error}: find the damaged "
                "frame folder with `python -m trainer check-data`, or decode with "
                "--decode-device cpu, which skips it."
            ) from error
    inputs = batch["features"] if "features" in batch else batch["frames"]
    return inputs.to(device, non_blocking=True)


@dataclass
class VideoScores:
    """Videos' views' softmax probabilities summed per video, with their view counts,
    labels (each video's first view's) and ids: what a rank holds of an evaluation."""

    sums: np.ndarray  # [N, C] float64
    counts: np.ndarray  # [N]
    labels: np.ndarray  # [N], or [N, C] multi-hot
    ids: list

    @classmethod
    def of_views(cls, logits, labels: np.ndarray, ids: list) -> VideoScores:
        """One batch's views (logits [V, C], labels and ids per view) per video."""
        sums, counts, video_ids = metrics.view_sums(logits, ids)
        return cls(sums, counts, _first_rows(labels, ids, video_ids), video_ids)

    @classmethod
    def added(cls, parts: list[VideoScores]) -> VideoScores:
        """`parts` (batches, or ranks in rank order) added up per video, videos in the order
        of their first appearance (a padded sampler gives some video to two ranks)."""
        ids = [i for part in parts for i in part.ids]
        sums, counts, video_ids = metrics.add_view_sums(
            np.concatenate([part.sums for part in parts]),
            np.concatenate([part.counts for part in parts]),
            ids,
        )
        labels = np.concatenate([part.labels for part in parts])
        return cls(sums, counts, _first_rows(labels, ids, video_ids), video_ids)


def _first_rows(rows: np.ndarray, row_ids: list, ids: list) -> np.ndarray:
    """The first row of each of `ids` in `rows`, whose rows are those of `row_ids`."""
    first: dict = {}
    for row, vid in enumerate(row_ids):
        first.setdefault(vid, row)
    return rows[[first[v] for v in ids]]


@torch.inference_mode()
def predict(model, text: ClassText, loader, dist_info: DistInfo, amp: str, progress=None):
    """Per-video probabilities (views averaged), labels, ids and the count of unreadable
    videos, on the main rank; None on the others. Each rank sums its videos' view
    probabilities batch by batch (a video's views are one sample, so on one rank) and only
    the main rank gathers them: memory grows with videos x classes, not x views."""
    model.eval()
    parts, skipped = [], 0
    task = progress.add_task("evaluate", total=len(loader), info="") if progress else None
    for batch in loader:
        skipped += len(batch["skipped"])
        if len(batch["video_ids"]):
            with autocast(dist_info.device, amp):
                logits = model(model_inputs(batch, dist_info.device), text)["logits"]
            parts.append(
                VideoScores.of_views(logits.float(), batch["labels"].numpy(), batch["video_ids"])
            )
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    mine = VideoScores.added(parts) if parts else None
    read = all_reduce_sum(torch.tensor(len(parts), device=dist_info.device))
    if not int(read):  # on every rank, so none waits at the gather below
        raise UserError("no test video could be read: check the data with `trainer check-data`.")
    gathered = gather_to_main((mine, skipped), dist_info)
    if gathered is None:
        return None
    scores = VideoScores.added([part for part, _ in gathered if part is not None])
    return (
        scores.sums / scores.counts[:, None],
        scores.labels,
        scores.ids,
        sum(n for _, n in gathered),
    )


def main_scores(predictions, num_classes: int, multi_label: bool, dist_info: DistInfo) -> dict:
    """The metrics of `predict`'s `predictions`, scored on the main rank and handed to every
    rank, so that all take the same decisions (a new best checkpoint)."""
    result = None
    if predictions is not None:
        probs, labels, _, _ = predictions
        result = score_predictions(probs, labels, num_classes, multi_label)
    return from_main(result, dist_info)


def score_predictions(probs, labels, num_classes: int, multi_label: bool) -> dict:
    if multi_label:  # top-k: one of the k best classes is a positive
        ranked = np.argsort(-probs, axis=1)[:, :5]
        hits = np.take_along_axis(labels > 0, ranked, axis=1)
        mean_ap = metrics.mean_average_precision(probs, labels)  # NaN: no positives at all
        return {
            "top1": float(hits[:, :1].any(1).mean()),
            "top5": float(hits.any(1).mean()),
            "mean_class_acc": None,
            "map": None if np.isnan(mean_ap) else mean_ap,
            "n": len(probs),
        }
    return {
        **metrics.topk_accuracy(probs, labels, (1, 5)),
        "mean_class_acc": metrics.mean_class_accuracy(probs, labels, num_classes),
        "map": None,
        "n": len(probs),
    }


def write_eval_outputs(out: Path, probs, labels, ids, class_names, multi_label: bool) -> None:
    if not multi_label:
        acc = metrics.per_class_accuracy(probs, labels, len(class_names))
        table = pd.DataFrame(
            {"class_id": range(len(class_names)), "class_name": class_names, "top1": acc}
        )
        atomic_write_text(out / "per_class_accuracy.csv", table.to_csv(index=False))
    top5 = np.argsort(-probs, axis=1)[:, :5]
    frame = pd.DataFrame(
        {
            "video_id": ids,
            "label": [list(map(int, np.flatnonzero(r))) for r in labels]
            if multi_label
            else labels.astype(int),
            "pred": probs.argmax(1).astype(int),
            "top5": [list(map(int, r)) for r in top5],
            "prob": [p.astype(np.float32) for p in probs],
        }
    )
    atomic_write(out / "predictions.parquet", lambda fh: frame.to_parquet(fh, index=False))


def evaluate_checkpoint(
    run_dir: Path,
    dataset: str | None = None,
    root: Path | None = None,
    subtexts: Path | Sequence[Path] | None = None,
    zero_shot: str | None = None,
    split: str | None = None,
    videos: Path | None = None,
    device: str = "auto",
    workers: int | None = None,
    show_progress: bool = True,
    checkpoint: str = "best",
    subsets: Sequence[Path] | None = None,
    features: Path | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | None = None,
    decode_device: str = "cpu",
    test_list: Path | None = None,
    class_list: Path | None = None,
) -> dict:
    """Evaluate a run's best (else last) checkpoint, or its last one with
    `checkpoint="last"`, on a dataset's test split(s): from the videos, or for a run with a
    frozen visual tower from the test views of a feature cache (`features`, one fold: the
    default `split`), which give the same metrics.

    `dataset` defaults to the run's own; there `root`, `videos`, `subtexts` and `split`
    default to the run's recorded ones (an exported model ships no dataset: its `root` is
    the given or default one), on another dataset to the default root and artifact.
    `clip_model`, `clip_pretrained`: where the run's CLIP files are now, if they moved;
    `test_list`, `class_list`: a `list` dataset's files (default: the run's on its own dataset).
    `decode_device` "cuda": frame folders' JPEGs decoded on the GPU (`--decode-device`).

    `zero_shot="full"`: the test splits (folds 1-3, or `split`) and their mean;
    `zero_shot="half"`: 10 seeded halves of the label set, mean and standard deviation;
    `zero_shot="subsets"`: each file of `subsets` (class names of the dataset) alone: its
    classes' test videos against its classes' texts; mean and standard deviation, and each
    file's result under "subsets". The texts come from one artifact for every file, or from
    one artifact per file (`subtexts` a list as long as `subsets`, as per-split description
    files are published); an artifact may hold any superset of its file's classes.
    """
    subsets = [Path(p) for p in subsets or ()]
    given = _check_zero_shot_inputs(zero_shot, subsets, subtexts)
    subset_names = [(path, read_subset_file(path)) for path in subsets]  # before the model
    loaded = load_run(
        run_dir,
        dataset,
        given[0] if given else None,
        device,
        checkpoint,
        reads_data=True,
        root=root,
        videos=videos,
        workers=workers,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        decode_device=decode_device,
        test_list=test_list,
        class_list=class_list,
    )
    cfg, dist_info = loaded.cfg, loaded.dist_info
    dataset = cfg.dataset
    split = _evaluated_split(loaded, run_dir, split, zero_shot, features)
    root = dataset_root(dataset, cfg.root)
    # the artifact each subset file's texts come from: its own, else the run's one
    artifacts = given if len(given) > 1 else [loaded.subtexts] * len(subsets)
    subset_files = [(path, names, art) for (path, names), art in zip(subset_names, artifacts)]
    texts = SubsetTexts(loaded)
    results, per_subset = [], []
    with progress_bar(show_progress and dist_info.is_main) as progress:
        for fold in folds(dataset, split):
            for group, result in _evaluate_fold(
                loaded, fold, root, zero_shot, subset_files, texts, features, workers, progress
            ):
                results.append(result)
                if group.subset_file is not None:
                    per_subset.append(_subset_result(group, fold, result))
    summary = summarise(results)
    return {**summary, "subsets": per_subset} if zero_shot == "subsets" else summary


def _check_zero_shot_inputs(
    zero_shot: str | None, subsets: list[Path], subtexts: Path | Sequence[Path] | None
) -> list[Path]:
    """Refuse --subsets and several --subtexts where the protocol takes none; -> the
    --subtexts given, as a list."""
    if zero_shot == "subsets" and not subsets:
        raise UserError("--zero-shot subsets needs --subsets FILE (class names), once per subset.")
    if subsets and zero_shot != "subsets":
        raise UserError("--subsets FILE goes with --zero-shot subsets.")
    given = (
        [Path(subtexts)] if isinstance(subtexts, str | Path) else list(map(Path, subtexts or ()))
    )
    if len(given) > 1 and not subsets:
        raise UserError("several --subtexts go with --zero-shot subsets, one per --subsets file.")
    if len(given) > 1 and len(given) != len(subsets):
        raise UserError(
            f"{len(given)} --subtexts for {len(subsets)} --subsets files: give one artifact for "
            "all of them, or one per --subsets file in the same order."
        )
    return given


def _evaluated_split(
    loaded: LoadedRun,
    run_dir: Path,
    split: str | None,
    zero_shot: str | None,
    features: Path | None,
) -> str:
    """The folds to evaluate: `split` if given, else the feature cache's fold, else the
    run's own split on its own dataset (other folds' test lists hold its train videos) and
    every fold elsewhere or zero-shot. A feature cache holds one fold only."""
    dataset, trained_on = loaded.cfg.dataset, loaded.trained_on
    if features is not None:
        cached_fold = feature_cache_fold(features, run_dir, trained_on)
        split = split or ("all" if cached_fold is None else str(cached_fold))
    if split is None:
        own = dataset == trained_on["dataset"] and not zero_shot
        split = trained_on["split"] if own else "all"
    if features is not None and len(folds(dataset, split)) > 1:
        raise UserError(
            f"--features {features} holds one fold ({cached_fold}); pass --split "
            f"{cached_fold} or evaluate the folds from the videos."
        )
    return split


@dataclass
class ClassGroup:
    """Classes evaluated together, against their texts: every class of the test split
    (`class_ids` None), a seeded half of them, or a subset file's."""

    class_ids: list[int] | None  # the dataset's class ids; None: every class
    text: ClassText
    artifact: Path  # the sub-text artifact the texts come from
    subset_file: Path | None = None


def _class_groups(loaded: LoadedRun, num_classes: int, halves: bool) -> list[ClassGroup]:
    """Every class at once, or (`halves`) 10 seeded halves of the label set."""
    text, artifact = loaded.built.text, loaded.subtexts
    if not halves:
        return [ClassGroup(None, text, artifact)]
    return [
        ClassGroup(half, text.subset(torch.as_tensor(half)), artifact)
        for half in half_class_splits(num_classes, 10, loaded.cfg.seed)
    ]


def _evaluate_fold(
    loaded: LoadedRun,
    fold: int | None,
    root: Path,
    zero_shot: str | None,
    subset_files: list[tuple[Path, list[str], Path]],
    texts: SubsetTexts,
    features: Path | None,
    workers: int | None,
    progress,
) -> list[tuple[ClassGroup, dict]]:
    """Each class group of one fold's test split with its metrics: every class, the seeded
    halves (`zero_shot="half"`), or each subset file's classes (`subset_files`: the file,
    its class names, the artifact of its texts)."""
    cfg, dataset = loaded.cfg, loaded.cfg.dataset
    test = load_split(dataset, root, test_split(dataset), fold, cfg.videos, False, cfg.list_files())
    as_jpegs = features is None and check_decode_device(
        cfg.decode_device, loaded.dist_info.device, test.items
    )
    if zero_shot == "subsets":
        groups = [
            ClassGroup(
                subset_class_ids(path, names, test.class_names, dataset),
                texts.rows(artifact, path, names),
                artifact,
                path,
            )
            for path, names, artifact in subset_files
        ]
    else:
        check_classes(test, loaded.class_names, loaded.subtexts)
        groups = _class_groups(loaded, len(test.class_names), zero_shot == "half")
    cache = None if features is None else _test_cache(loaded, features, test, fold)
    return [
        (group, _evaluate_group(loaded, test, group, cache, workers, as_jpegs, progress))
        for group in groups
    ]


def _test_cache(
    loaded: LoadedRun, features: Path, test: SplitList, fold: int | None
) -> FeatureCache:
    """The feature cache at `features`, checked to hold this run's CLIP features of `test`'s
    videos (`fold`)."""
    spec = eval_spec(loaded.cfg, loaded.built.image_size)
    whole = VideoClipDataset(test.items, len(test.class_names), test.multi_label, spec)
    identity = cache_identity(loaded.cfg.dataset, fold, loaded.built.clip_id, None, whole)
    return FeatureCache(features, identity, {TEST: len(whole)})


def _subset_result(group: ClassGroup, fold: int | None, result: dict) -> dict:
    """A subset file's entry under "subsets": which file, fold, classes and artifact, and
    its metrics."""
    where = {} if fold is None else {"fold": fold}
    return {
        "file": str(group.subset_file),
        **where,
        "classes": len(group.class_ids),
        "subtexts": str(group.artifact),
        **result,
    }


def _evaluate_group(
    loaded: LoadedRun,
    test: SplitList,
    group: ClassGroup,
    cache: FeatureCache | None,
    workers: int | None,
    as_jpegs: bool,
    progress,
) -> dict:
    """The metrics of the test videos of `group`'s classes against its texts, read from the
    videos (`as_jpegs`: as JPEG bytes, decoded on the device) or from the feature cache's
    test views."""
    cfg, dist_info = loaded.cfg, loaded.dist_info
    if group.class_ids is None:
        split_list, positions = test, range(len(test.items))
    else:
        split_list = restrict_classes(test, group.class_ids)
        positions = class_positions(test, group.class_ids)
    if group.subset_file is not None and not split_list.items:
        raise UserError(
            f"--subsets {group.subset_file}: none of its classes has a video in "
            f"{cfg.dataset} {test.split} on disk."
        )
    classes, multi = len(split_list.class_names), split_list.multi_label
    if cache is None:
        spec = eval_spec(cfg, loaded.built.image_size)
        data = VideoClipDataset(split_list.items, classes, multi, spec, encoded=as_jpegs)
    else:
        data = FeatureDataset(cache, TEST, split_list.items, positions, classes, multi)
    loader = make_loader(
        data,
        4,
        EpochSampler(len(data), False, 0, dist_info.rank, dist_info.world),
        0 if cache else loader_workers(workers),
    )
    model = loaded.built.model
    predictions = predict(model, group.text, loader, dist_info, cfg.amp, progress)
    return main_scores(predictions, classes, multi, dist_info)


class SubsetTexts:
    """The class texts of a subset file's names, taken by name from a sub-text artifact: the
    run's own (already on the device) or another scored with the run's CLIP, each read once."""

    def __init__(self, loaded: LoadedRun):
        self.loaded = loaded
        self.read: dict[Path, tuple[list[str], ClassText]] = {
            Path(loaded.subtexts).resolve(): (loaded.class_names, loaded.built.text)
        }

    def rows(self, artifact: Path, subset_file: Path, names: Sequence[str]) -> ClassText:
        key = Path(artifact).resolve()
        if key not in self.read:
            built = self.loaded.built
            width = built.text.global_emb.shape[-1]
            read = read_subtexts(artifact)
            text = artifact_class_text(read, artifact, built.clip_id, width)
            self.read[key] = (read.class_names, text.to(self.loaded.dist_info.device))
        class_names, text = self.read[key]
        found = match_names(names, class_names)
        if found.missing:
            raise UserError(
                f"--subtexts {artifact} has no sub-texts for these classes of --subsets "
                f"{subset_file}: {unknown_names(found.missing, class_names)}; pass the "
                "artifact scored for that file's classes."
            )
        return text.subset(torch.as_tensor(found.ids))


def feature_cache_fold(features: Path, run_dir: Path, trained_on: dict) -> int | None:
    """The fold a feature cache holds, after checking that the run can read it: a cache
    holds the frozen tower's features, so the run must not have trained its tower."""
    if not trained_on.get("freeze_backbone"):
        raise UserError(
            f"--features: {run_dir} trained its visual tower, and {features} holds the frozen "
            "tower's features; evaluate this run from the videos."
        )
    return read_meta(features)["fold"]


def summarise(results: list[dict]) -> dict:
    """Mean over folds or halves (and the standard deviation where there are several)."""
    if len(results) == 1:
        return results[0]
    out: dict = {"n": int(sum(r["n"] for r in results)), "runs": len(results)}
    for key in ("top1", "top5", "mean_class_acc", "map"):
        values = [r[key] for r in results if r[key] is not None]
        out[key] = float(np.mean(values)) if values else None
        if values:
            out[f"{key}_std"] = float(np.std(values))
    return out
