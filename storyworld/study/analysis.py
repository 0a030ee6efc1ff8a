"""The study's statistics and references, as pure functions (arrays in, numbers out).

* `spread` (from `trainer.metrics`, shared with `trainer reproduce`): mean, sample standard
  deviation and the half-width of a 95% t-interval of a metric over seeds.
* `wilson_interval`: a 95% interval for one accuracy from its hits and trials (one seed).
* `linear_probe`: what a bag of frames can reach: multinomial logistic regression on
  standardised, mean-pooled frame features.
* `text_anchored_probe`: the same fit, but scored as Eq. 12 scores a video, against the
  frozen class texts: a learned linear map of the mean-pooled frames, then the cosine with
  t_c times a learned scale. The gap between the two probes is what anchoring the
  classifier to the class texts costs, whatever the head.
* `zero_shot_logits`: the frozen CLIP's own zero-shot scores, mean-pooled frames against
  the class texts (no training at all).
* `importance_share`: how much of a frame weighting lands on frames that show one of the
  video's own actions.
* `calibrate`: the temperatures whose frame weights on the frozen CLIP are as spread as the
  paper's Table 6 (`frozen_largest_weights`: the mean largest weight at one tau).
* `keyframe_difference`: Table 6's key-frame claim per video (fine minus coarse share).
* `spearman`, `rank_correlation_test`: the Fig. 2(b) test (rank correlation over groups, a
  permutation p-value, a seed bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trainer.metrics import spread
from trainer.model.aggregation import ClassText, class_logits, coarse_importance, fine_importance


def wilson_interval(hits: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion hits / trials (one run's accuracy:
    the spread that its test set alone allows)."""
    if trials <= 0 or not 0 <= hits <= trials:
        raise ValueError(f"a proportion needs 0 <= hits <= trials, trials >= 1 ({hits}/{trials})")
    p = hits / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    weight_decay: float = 1e-3,
    steps: int = 200,
) -> dict:
    """Top-1 of a multinomial logistic regression fit on standardised features.

    train_x [N, D] and test_x [M, D] (mean-pooled frame features), integer labels. Features
    are standardised with the training mean and deviation; the classifier is fit with
    L-BFGS on the mean cross entropy plus `weight_decay` * ||W||^2 (deterministic: zero
    init, full batch). -> {"train": top-1 on train_x, "test": top-1 on test_x}.
    """
    x = _float64(train_x)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / std
    y = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    classes = int(max(y.max().item(), int(np.max(test_y))) + 1)
    weight = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)

    def logits(features: torch.Tensor) -> torch.Tensor:
        return features @ weight + bias

    _fit_lbfgs(
        [weight, bias],
        lambda: F.cross_entropy(logits(x), y) + weight_decay * weight.pow(2).sum(),
        steps,
    )
    test = (_float64(test_x) - mean) / std
    return {"train": _top1(logits(x), train_y), "test": _top1(logits(test), test_y)}


def text_anchored_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    class_emb: np.ndarray,
    log_scale: float,
    weight_decay: float = 1e-3,
    steps: int = 200,
) -> dict:
    """Top-1 of `y[c] = exp(s) * cos(t_c, W x + b)` fit with cross entropy (L-BFGS, full
    batch), W starting at the identity, s at `log_scale`, plus `weight_decay` *
    ||W - I||^2; x are mean-pooled frame features in the joint space (not standardised, so
    W = I is the frozen CLIP's zero-shot). -> {"train", "test", "zero_shot_test"}."""
    x, test = _float64(train_x), _float64(test_x)
    y = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    text = _float64(class_emb)
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    weight = eye.clone().requires_grad_(True)
    bias = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(float(log_scale), dtype=torch.float64, requires_grad=True)

    def logits(features: torch.Tensor) -> torch.Tensor:  # Eq. 12 on the mapped features
        return class_logits(features @ weight.t() + bias, text, scale.exp())

    zero = _top1(logits(test), test_y)
    _fit_lbfgs(
        [weight, bias, scale],
        lambda: F.cross_entropy(logits(x), y) + weight_decay * (weight - eye).pow(2).sum(),
        steps,
    )
    return {
        "train": _top1(logits(x), train_y),
        "test": _top1(logits(test), test_y),
        "zero_shot_test": zero,
    }


def _float64(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float64)


def _fit_lbfgs(params: list[torch.Tensor], loss, steps: int) -> None:
    """Minimise `loss()` over `params` with full-batch L-BFGS (deterministic)."""
    optimizer = torch.optim.LBFGS(params, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = loss()
        value.backward()
        return value

    optimizer.step(closure)


def _top1(logits: torch.Tensor, labels) -> float:
    predicted = logits.detach().argmax(1).numpy()
    return float((predicted == np.asarray(labels)).mean())


def zero_shot_logits(frames: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """cos(mean_l v[b,l], t_c): frames [B, L, D] against pooled class texts [C, D] -> [B, C].
    The frozen CLIP's zero-shot score of a video: Eq. 12 (`class_logits`) with the `mean`
    aggregation and a scale of 1."""
    return class_logits(_float64(frames).mean(dim=1), _float64(class_emb), 1.0).numpy()


def importance_share(importance: np.ndarray, on_action: np.ndarray) -> np.ndarray:
    """sum_l a[b,l] * 1[frame l shows one of the video's own actions], per video.

    importance [B, L] (rows sum to 1), on_action bool [B, L] -> [B]. Uniform weights give
    the fraction of the sampled frames that show the video's actions, the reference.
    """
    return (np.asarray(importance, dtype=np.float64) * np.asarray(on_action)).sum(axis=1)


def keyframe_difference(fine: np.ndarray, coarse: np.ndarray) -> tuple[dict, float]:
    """Table 6's key-frame claim, paired per video: the `spread` over videos of the fine
    minus the coarse branch's share on own-action frames ([M] each), and the share of
    videos where fine is higher."""
    difference = np.asarray(fine) - np.asarray(coarse)
    return spread(difference), float((difference > 0).mean())


def mean_largest_weight(importance: np.ndarray) -> float:
    """The mean over videos of the largest frame weight: importance [B, L] (rows sum to 1).
    1/L is uniform weights, 1 one-hot; the paper's Table 6 rows give 0.43 (coarse) and 0.30
    (fine) over 4 frames."""
    return float(np.asarray(importance, dtype=np.float64).max(axis=1).mean())


def closest_tau(taus: Sequence[float], largest: Sequence[float], target: float) -> float:
    """The tau whose mean largest weight is closest to `target` (the smaller tau on a tie)."""
    if len(taus) != len(largest) or not len(taus):
        raise ValueError("closest_tau needs one mean largest weight per tau")
    gaps = [(abs(w - target), t) for t, w in zip(taus, largest)]
    return float(min(gaps)[1])


def own_class_weights(importance, labels: np.ndarray) -> np.ndarray:
    """[B, C, L] frame weights -> [B, L], the weights for each video's own class."""
    return np.asarray(importance)[np.arange(len(labels)), np.asarray(labels)]


@torch.inference_mode()
def frozen_largest_weights(
    features: torch.Tensor, labels: np.ndarray, text: ClassText, tau: float
) -> dict:
    """The mean largest frame weight of each branch on the frozen CLIP at `tau`, for frame
    embeddings [V, F, D] of videos of classes `labels` [V]: coarse with the plain global
    word tokens (a head's cross-attention starts as the identity), fine with the sub-texts."""
    weights = {
        "coarse": coarse_importance(features, text.global_tokens, text.global_mask, tau),
        "fine": fine_importance(features, text.sub_tokens, text.sub_mask, tau),
    }
    return {b: mean_largest_weight(own_class_weights(w, labels)) for b, w in weights.items()}


def calibrate(
    taus: Sequence[float],
    targets: dict[str, float],
    features: torch.Tensor,
    labels: np.ndarray,
    text: ClassText,
) -> dict:
    """The mean largest weight per branch at every tau of the grid (`frozen_largest_weights`
    of frames [V, F, D]), and the calibrated pair: per branch the tau closest to its target
    ({branch: target})."""
    grid = [frozen_largest_weights(features, labels, text, tau) for tau in taus]
    out = {"taus": list(taus), "frames": features.shape[1]}
    for branch, target in targets.items():
        largest = [g[branch] for g in grid]
        out[f"largest_{branch}"] = largest
        out[f"target_{branch}"] = target
        out[branch] = closest_tau(taus, largest, target)
    return out


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict:
    """Least-squares line y = slope * x + intercept, and its r^2 (the squared Pearson
    correlation; None when x or y does not vary)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.size != ys.size or xs.size < 2:
        raise ValueError("a line needs at least two (x, y) pairs")
    dx, dy = xs - xs.mean(), ys - ys.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx == 0:
        return {"slope": None, "intercept": None, "r2": None, "n": int(xs.size)}
    slope = float(dx @ dy) / sxx
    r2 = None if syy == 0 else float(dx @ dy) ** 2 / (sxx * syy)
    return {
        "slope": slope,
        "intercept": float(ys.mean() - slope * xs.mean()),
        "r2": r2,
        "n": int(xs.size),
    }


def paired_difference(first: dict, second: dict) -> dict:
    """`spread` of first[k] - second[k] over the keys (seeds, episodes) both hold: a paired
    comparison, whose interval is narrower than the two means' when episodes agree."""
    common = sorted(set(first) & set(second))
    if not common:
        raise ValueError("a paired difference needs at least one common episode")
    return spread(first[k] - second[k] for k in common)


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of `values`, ties given the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    result = np.empty(x.size)
    start = 0
    while start < x.size:
        end = start
        while end + 1 < x.size and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        result[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of the ranks (None when either does not vary)."""
    rx, ry = ranks(x), ranks(y)
    if rx.size != ry.size or rx.size < 2:
        raise ValueError("a rank correlation needs at least two (x, y) pairs")
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return None if denominator == 0 else float(dx @ dy) / denominator


def rank_correlation_test(
    x: Sequence[float],
    y_by_seed: np.ndarray,
    permutations: int,
    bootstraps: int,
    seed: int = 0,
) -> dict:
    """Spearman's rho between x (one value per group) and the groups' mean of y over seeds
    (`y_by_seed` [groups, seeds]), with the one-sided permutation p-value of rho > 0 (the
    group means shuffled over groups: (1 + #{rho_perm >= rho}) / (1 + permutations)) and a
    95% percentile interval from resampling the seeds with replacement (the same draw for
    every group, as a rerun with other seeds would)."""
    y = np.asarray(y_by_seed, dtype=np.float64)
    means = y.mean(axis=1)
    rho = spearman(x, means)
    rng = np.random.default_rng(seed)
    out: dict = {"rho": rho, "groups": int(y.shape[0]), "seeds": int(y.shape[1])}
    if rho is None:
        return {**out, "p_one_sided": None, "ci95": None}
    shuffled = [spearman(x, rng.permutation(means)) for _ in range(permutations)]
    beyond = sum(1 for r in shuffled if r is not None and r >= rho - 1e-12)
    resampled = [
        spearman(x, y[:, rng.integers(0, y.shape[1], y.shape[1])].mean(axis=1))
        for _ in range(bootstraps)
    ]
    finite = [r for r in resampled if r is not None]
    return {
        **out,
        "p_one_sided": (1 + beyond) / (1 + permutations),
        "ci95": [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))],
    }
