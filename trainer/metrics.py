"""Evaluation metrics: top-k, per-class and mean class accuracy, mAP, multi-view averaging,
and the spread of a metric over runs (`spread`: mean and 95% t-interval).

Pure functions: inputs are numpy arrays or torch tensors (any device), outputs numpy arrays
or Python floats. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu()
    return np.asarray(x)


def _ranked_classes(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best classes per row, best first; ties go to the lower class id."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def topk_accuracy(scores, labels, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose label is among the k best scores: {"top1": .., "top5": ..}.

    scores [N,C], labels int [N]. k larger than C counts as C.
    """
    scores, labels = _numpy(scores), _numpy(labels).astype(np.int64)
    ranked = _ranked_classes(scores, min(max(ks), scores.shape[1]))
    hit = ranked == labels[:, None]  # [N, k]: at most one True per row
    return {f"top{k}": float(hit[:, :k].any(axis=1).mean()) for k in ks}


def per_class_accuracy(scores, labels, num_classes: int) -> np.ndarray:
    """Top-1 accuracy of each class over its own samples -> [C], NaN for absent classes."""
    scores, labels = _numpy(scores), _numpy(labels).astype(np.int64)
    correct = (scores.argmax(axis=1) == labels).astype(np.float64)
    hits = np.bincount(labels, weights=correct, minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / counts, np.nan)


def mean_class_accuracy(scores, labels, num_classes: int) -> float:
    """Mean over the classes present in `labels` of their top-1 accuracy."""
    return float(np.nanmean(per_class_accuracy(scores, labels, num_classes)))


def mean_average_precision(scores, targets) -> float:
    """mAP over all predictions at once: mean over classes with a positive of their AP.

    scores [N,C], targets multi-hot [N,C]. AP of a class = mean, over its positives, of the
    precision among the samples ranked at or above that positive. Samples are ranked by
    descending score; equal scores keep their input order (stable), so ties are
    deterministic. NaN when no class has a positive.
    """
    scores, targets = _numpy(scores), _numpy(targets).astype(np.float64) > 0.5
    order = np.argsort(-scores, axis=0, kind="stable")
    ranked = np.take_along_axis(targets, order, axis=0).astype(np.float64)  # [N,C]
    precision = np.cumsum(ranked, axis=0) / np.arange(1, len(ranked) + 1)[:, None]
    n_positive = ranked.sum(axis=0)
    present = n_positive > 0
    if not present.any():
        return float("nan")
    ap = (precision * ranked).sum(axis=0)[present] / n_positive[present]
    return float(ap.mean())


def average_views(scores, video_ids: Sequence[Hashable]) -> tuple[np.ndarray, list]:
    """Average the V views (clips x crops) of each video: [N*V, C] -> ([N, C], ids).

    Views are averaged as softmax probabilities over classes (not raw logits), so that one
    view with large logits cannot outvote the others. Videos come out in the order of their
    first view; views may come in any order and in any number per video.
    """
    sums, counts, ids = view_sums(scores, video_ids)
    return sums / counts[:, None], ids


def view_sums(scores, video_ids: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray, list]:
    """Per video, its views' softmax probabilities summed and its view count: [N*V, C] ->
    ([N, C] float64, [N], ids in the order of their first view). What `average_views`
    divides; sums of several parts add up with `add_view_sums`."""
    scores = _numpy(scores).astype(np.float64)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return add_view_sums(
        shifted / shifted.sum(axis=1, keepdims=True), np.ones(len(scores)), video_ids
    )


def add_view_sums(
    sums, counts, video_ids: Sequence[Hashable]
) -> tuple[np.ndarray, np.ndarray, list]:
    """Rows of per-video sums and view counts (from several batches or ranks, a video in any
    number of them) added up per video -> (sums [N, C], counts [N], ids in the order of
    their first row)."""
    sums = np.asarray(sums, dtype=np.float64)
    position: dict = {}  # video id -> its row in the output, in order of first appearance
    group = np.asarray([position.setdefault(v, len(position)) for v in video_ids], dtype=np.int64)
    total = np.zeros((len(position), sums.shape[1]))
    np.add.at(total, group, sums)
    return total, np.bincount(group, weights=counts, minlength=len(position)), list(position)


def confusion_matrix(pred, labels, num_classes: int) -> np.ndarray:
    """Counts [C,C] int64: row = true class, column = predicted class."""
    pred, labels = _numpy(pred).astype(np.int64), _numpy(labels).astype(np.int64)
    flat = np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (then ~1.96).
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def spread(values: Sequence[float]) -> dict:
    """{mean, std, ci95, n} of a metric over seeds: `std` is the sample standard deviation
    (ddof 1), `ci95` the half-width of the 95% Student-t interval of the mean,
    t_{0.975, n-1} * std / sqrt(n). With one value, std and ci95 are None."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("spread of no values")
    out = {"mean": float(x.mean()), "std": None, "ci95": None, "n": int(x.size)}
    if x.size > 1:
        std = float(x.std(ddof=1))
        dof = x.size - 1
        t = _T975[dof - 1] if dof <= len(_T975) else 1.96
        out.update(std=std, ci95=t * std / math.sqrt(x.size))
    return out
