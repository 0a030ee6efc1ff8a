"""The study's statistics and references, against hand computations."""

import math

import numpy as np
import pytest

from storyworld.study import analysis


def test_wilson_interval_by_hand():
    # 8 of 10: centre (0.8 + 1.96^2/20) / (1 + 1.96^2/10), the textbook [0.490, 0.943].
    low, high = analysis.wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert analysis.wilson_interval(0, 25)[0] == 0.0 and analysis.wilson_interval(25, 25)[1] == 1.0
    low, high = analysis.wilson_interval(100, 200)
    assert low < 0.5 < high
    assert high - low == pytest.approx(2 * 1.96 * 0.5 / math.sqrt(200), rel=0.02)


def test_linear_probe_separates_what_is_separable_and_not_noise():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (4, 16)) * 3
    labels = np.repeat(np.arange(4), 30)
    x = centres[labels] + rng.normal(0, 1, (120, 16))
    test_labels = np.repeat(np.arange(4), 10)
    test_x = centres[test_labels] + rng.normal(0, 1, (40, 16))
    probe = analysis.linear_probe(x, labels, test_x, test_labels)
    assert probe["train"] == 1.0 and probe["test"] >= 0.95
    noise = analysis.linear_probe(
        rng.normal(0, 1, (120, 16)),
        labels,
        rng.normal(0, 1, (400, 16)),
        np.repeat(np.arange(4), 100),
    )
    assert noise["test"] < 0.4  # chance is 0.25


def test_zero_shot_logits_are_cosines_of_mean_frames():
    frames = np.array([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [2.0, 0.0]]])
    text = np.array([[1.0, 1.0], [0.0, 3.0]])
    logits = analysis.zero_shot_logits(frames, text)
    np.testing.assert_allclose(logits, [[1.0, 1 / math.sqrt(2)], [1 / math.sqrt(2), 0.0]])


def test_importance_share_by_hand():
    weights = np.array([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    on_action = np.array([[True, False, True], [False, True, True]])
    np.testing.assert_allclose(analysis.importance_share(weights, on_action), [0.75, 2 / 3])


def test_text_anchored_probe_starts_at_zero_shot_and_learns_a_map():
    """With W = I it is the frozen zero-shot; fit, it classifies features that the class
    texts alone do not (the texts point elsewhere than the class centres)."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (3, 8)) * 3
    labels = np.repeat(np.arange(3), 40)
    x = centres[labels] + rng.normal(0, 0.5, (120, 8))
    test_labels = np.repeat(np.arange(3), 10)
    test_x = centres[test_labels] + rng.normal(0, 0.5, (30, 8))
    texts = centres[[1, 2, 0]]  # each class text sits on another class's centre
    result = analysis.text_anchored_probe(x, labels, test_x, test_labels, texts, math.log(10))
    zero = (analysis.zero_shot_logits(test_x[:, None], texts).argmax(1) == test_labels).mean()
    assert result["zero_shot_test"] == pytest.approx(zero) and zero < 0.2
    assert result["train"] == 1.0 and result["test"] >= 0.95


def test_spearman_and_its_tests_by_hand():
    assert list(analysis.ranks([3.0, 1.0, 2.0, 2.0])) == [4.0, 1.0, 2.5, 2.5]
    # ranks (1, 2, 3, 4) against (1, 3, 2, 4): 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 12/60
    assert analysis.spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    assert analysis.spearman([1, 2, 3], [5, 5, 5]) is None
    x = np.arange(6.0)
    rising = np.stack([x * 0.1 + s * 0.001 for s in range(3)], axis=1)  # [6 groups, 3 seeds]
    test = analysis.rank_correlation_test(x, rising, permutations=2000, bootstraps=200)
    assert test["rho"] == pytest.approx(1.0) and test["ci95"] == pytest.approx([1.0, 1.0])
    # only the identity order of 6! = 720 reaches rho = 1: p near 1/720 (+1 smoothing)
    assert test["p_one_sided"] < 0.01
    falling = analysis.rank_correlation_test(x, -rising, permutations=500, bootstraps=50)
    assert falling["rho"] == pytest.approx(-1.0) and falling["p_one_sided"] == 1.0
    # seeds that disagree widen the bootstrap interval: group 0 best under seed 0 only
    mixed = rising.copy()
    mixed[0, 0] = 5.0
    wide = analysis.rank_correlation_test(x, mixed, permutations=200, bootstraps=400)
    assert wide["ci95"][0] <= wide["rho"] < wide["ci95"][1] == pytest.approx(1.0)
