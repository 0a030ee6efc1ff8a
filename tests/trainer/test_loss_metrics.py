"""Eq. 13-15 against a loop reference, and the metrics against hand-computed examples."""

import math

import numpy as np
import pytest
import torch

from trainer.loss import storyboard_loss
from trainer.metrics import (
    average_views,
    confusion_matrix,
    mean_average_precision,
    mean_class_accuracy,
    per_class_accuracy,
    spread,
    topk_accuracy,
)


def log_softmax(xs, i):
    top = max(xs)
    return xs[i] - top - math.log(sum(math.exp(x - top) for x in xs))


def ref_loss(y, labels, lam):
    """Eq. 13-15 with k_b = the samples sharing b's label, written with loops."""
    b_size, c_size = len(y), len(y[0])
    t2v = v2t = 0.0
    for b in range(b_size):
        k_b = [bp for bp in range(b_size) if labels[bp] == labels[b]]
        column = [y[i][labels[b]] for i in range(b_size)]
        t2v += sum(-log_softmax(column, bp) for bp in k_b) / len(k_b)
        v2t += sum(-log_softmax([y[bp][c] for c in range(c_size)], labels[b]) for bp in k_b) / len(
            k_b
        )
    return t2v / b_size + lam * v2t / b_size


def ref_multi_label_loss(y, targets, lam):
    """The documented multi-hot form: both directions averaged over the positive pairs."""
    b_size, c_size = len(y), len(y[0])
    pairs = [(b, c) for b in range(b_size) for c in range(c_size) if targets[b][c]]
    t2v = sum(-log_softmax([y[i][c] for i in range(b_size)], b) for b, c in pairs) / len(pairs)
    v2t = sum(-log_softmax(list(y[b]), c) for b, c in pairs) / len(pairs)
    return t2v + lam * v2t


@pytest.fixture()
def logits():
    return torch.randn(6, 4, generator=torch.Generator().manual_seed(0)) * 3


@pytest.mark.parametrize("lam", [1.0, 0.0, 2.5])
def test_loss_matches_eq13_15_with_repeated_labels(logits, lam):
    labels = torch.tensor([0, 2, 0, 1, 2, 0])  # class 3 absent, class 0 three times
    got = storyboard_loss(logits, labels, lam=lam)
    assert got.dim() == 0
    assert got.item() == pytest.approx(ref_loss(logits.tolist(), labels.tolist(), lam), rel=1e-5)


def test_loss_is_linear_in_lambda(logits):
    labels = torch.tensor([0, 2, 0, 1, 2, 0])
    t2v = storyboard_loss(logits, labels, lam=0.0)
    v2t = storyboard_loss(logits, labels, lam=1.0) - t2v
    torch.testing.assert_close(storyboard_loss(logits, labels, lam=3.0), t2v + 3.0 * v2t)


def test_multi_hot_one_hot_equals_int_labels(logits):
    labels = torch.tensor([0, 2, 0, 1, 2, 0])
    one_hot = torch.nn.functional.one_hot(labels, 4)
    for targets in (one_hot.bool(), one_hot.float()):
        torch.testing.assert_close(
            storyboard_loss(logits, targets, lam=0.7), storyboard_loss(logits, labels, lam=0.7)
        )


def test_multi_hot_matches_documented_form(logits):
    targets = torch.tensor(
        [[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1], [0, 1, 1, 1], [1, 0, 0, 0]]
    )  # row 1 has no positive
    got = storyboard_loss(logits, targets.float(), lam=0.5)
    ref = ref_multi_label_loss(logits.tolist(), targets.tolist(), 0.5)
    assert got.item() == pytest.approx(ref, rel=1e-5)


def test_loss_gradients_and_no_positive():
    logits = torch.randn(3, 5, requires_grad=True)
    storyboard_loss(logits, torch.tensor([1, 1, 4])).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    empty = storyboard_loss(logits, torch.zeros(3, 5))
    assert empty.item() == 0.0
    empty.backward()


# ---------------------------------------------------------------- metrics


def test_map_by_hand():
    scores = np.array([[0.9, 0.1], [0.8, 0.4], [0.3, 0.7], [0.2, 0.6]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    # class 0 ranks rows 0+,1-,2+,3-: AP = (1/1 + 2/3) / 2 = 5/6
    # class 1 ranks rows 2-,3+,1+,0-: AP = (1/2 + 2/3) / 2 = 7/12
    assert mean_average_precision(scores, targets) == pytest.approx((5 / 6 + 7 / 12) / 2)
    # A class without positives is left out; torch input works the same.
    padded = np.concatenate([scores, np.zeros((4, 1))], axis=1)
    no_pos = np.concatenate([targets, np.zeros((4, 1))], axis=1)
    assert mean_average_precision(torch.tensor(padded), torch.tensor(no_pos)) == pytest.approx(
        17 / 24
    )
    assert math.isnan(mean_average_precision(scores, np.zeros((4, 2))))


def test_map_ties_keep_input_order():
    scores = np.full((4, 1), 0.5)
    assert mean_average_precision(scores, np.array([[0], [1], [0], [0]])) == pytest.approx(0.5)
    assert mean_average_precision(scores, np.array([[1], [0], [0], [0]])) == pytest.approx(1.0)


def test_topk_with_six_classes():
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 0: rank 1
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # label 4: rank 5
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # label 5: rank 6
            [0.1, 0.9, 0.8, 0.7, 0.6, 0.5],  # label 2: rank 3
        ]
    )
    labels = np.array([0, 4, 5, 2])
    assert topk_accuracy(scores, labels) == {"top1": 0.25, "top5": 0.75}
    assert topk_accuracy(torch.tensor(scores), torch.tensor(labels), ks=(1, 3, 10)) == {
        "top1": 0.25,
        "top3": 0.5,
        "top10": 1.0,
    }


def test_mean_class_accuracy_with_imbalanced_classes():
    labels = np.array([0, 0, 0, 0, 1])
    scores = np.eye(3)[[0, 0, 0, 0, 2]]  # class 0 all right, class 1 wrong, class 2 absent
    assert topk_accuracy(scores, labels, ks=(1,))["top1"] == pytest.approx(0.8)
    per_class = per_class_accuracy(scores, labels, 3)
    np.testing.assert_array_equal(per_class[:2], [1.0, 0.0])
    assert np.isnan(per_class[2])
    assert mean_class_accuracy(scores, labels, 3) == pytest.approx(0.5)


def test_average_views_averages_softmax_in_first_seen_order():
    scores = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, math.log(3)], [0.0, 10.0]])
    averaged, ids = average_views(torch.tensor(scores), ["b", "a", "b", "a"])
    assert ids == ["b", "a"]
    p_a = np.array([1, math.exp(-10)]) / (1 + math.exp(-10))
    np.testing.assert_allclose(averaged[0], [(0.5 + 0.25) / 2, (0.5 + 0.75) / 2])
    np.testing.assert_allclose(averaged[1], (p_a + p_a[::-1]) / 2)
    np.testing.assert_allclose(averaged.sum(1), 1.0)


def test_confusion_matrix():
    got = confusion_matrix(np.array([0, 1, 1, 2, 2]), np.array([0, 1, 2, 2, 0]), 3)
    np.testing.assert_array_equal(got, [[1, 0, 1], [0, 1, 0], [0, 1, 1]])


def test_spread_is_mean_sample_std_and_t_interval():
    s = spread([0.5, 0.6, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["n"] == 3
    assert s["std"] == pytest.approx(0.1)  # ddof 1
    assert s["ci95"] == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    one = spread([0.25])
    assert one == {"mean": 0.25, "std": None, "ci95": None, "n": 1}
    many = spread(np.arange(40) / 40)
    assert many["ci95"] == pytest.approx(1.96 * many["std"] / math.sqrt(40))
    with pytest.raises(ValueError):
        spread([])
