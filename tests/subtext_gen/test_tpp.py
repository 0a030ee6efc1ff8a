import math

import pytest
import torch

from storyboard_common.errors import UserError
from subtext_gen.tpp import tpp


def reference_tpp(t, subs, alpha, beta):
    """Eq. 2-4 written out with scalar loops, independent of the vectorised code."""

    def cos(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    n = len(subs)
    sigma = [(cos(t, s) + 1) / 2 for s in subs]
    delta = [
        1 - sum((cos(subs[i], subs[j]) + 1) / 2 for j in range(n) if j != i) / (n - 1)
        for i in range(n)
    ]
    f = {"identity": lambda x: x, "complement": lambda x: 1 - x}
    logs = [math.log(max(f[alpha](s) * f[beta](d), 1e-6)) for s, d in zip(sigma, delta)]
    return math.exp(-sum(logs) / n), sigma, delta


def test_tpp_hand_computed_complement():
    # t = (1,1,0), orthogonal subs: sigma = (.8536, .8536, .5), delta = .5 each.
    t = torch.tensor([1.0, 1.0, 0.0])
    subs = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 5.0]])  # not normalised
    r = tpp(t, subs)
    s = (1 / math.sqrt(2) + 1) / 2
    assert r.sigma.tolist() == pytest.approx([s, s, 0.5], abs=1e-6)
    assert r.delta.tolist() == pytest.approx([0.5, 0.5, 0.5], abs=1e-6)
    expected = ((1 - s) * 0.5 * (1 - s) * 0.5 * 0.5 * 0.5) ** (-1 / 3)
    assert float(r.score) == pytest.approx(expected, rel=1e-5)
    assert float(r.score) == pytest.approx(9.0696, abs=1e-3)


def test_tpp_hand_computed_identity_and_clamp():
    t = torch.tensor([1.0, 0.0])
    subs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # sigma = (1, .5), delta = (.5, .5)
    ident = tpp(t, subs, alpha="identity", beta="identity")
    assert float(ident.score) == pytest.approx((0.5 * 0.25) ** -0.5, rel=1e-6)  # 2.8284
    # complement: alpha(1) = 0 -> the log argument is clamped at 1e-6
    comp = tpp(t, subs)
    assert float(comp.score) == pytest.approx((1e-6 * 0.25) ** -0.5, rel=1e-4)  # 2000


@pytest.mark.parametrize(
    "alpha,beta",
    [("complement", "complement"), ("identity", "identity"), ("identity", "complement")],
)
def test_tpp_matches_scalar_reference_batched(alpha, beta):
    g = torch.Generator().manual_seed(1)
    t = torch.randn(2, 3, 8, generator=g)
    subs = torch.randn(2, 3, 4, 8, generator=g)
    r = tpp(t, subs, alpha, beta)
    assert r.score.shape == (2, 3) and r.sigma.shape == (2, 3, 4) and r.delta.shape == (2, 3, 4)
    for i in range(2):
        for j in range(3):
            score, sigma, delta = reference_tpp(t[i, j].tolist(), subs[i, j].tolist(), alpha, beta)
            assert float(r.score[i, j]) == pytest.approx(score, rel=1e-4)
            assert r.sigma[i, j].tolist() == pytest.approx(sigma, abs=1e-5)
            assert r.delta[i, j].tolist() == pytest.approx(delta, abs=1e-5)


def test_complement_prefers_related_and_diverse_sets():
    # Same relatedness (cos 1/sqrt 2 to t) for the first two sets; only diversity differs.
    t = torch.tensor([1.0, 0, 0, 0])
    diverse = torch.tensor([[1.0, 1, 0, 0], [1.0, 0, 1, 0], [1.0, 0, 0, 1]])
    near_duplicates = torch.tensor([[1.0, 1, 0, 0], [1.0, 1, 0.01, 0], [1.0, 1, 0, 0.01]])
    unrelated = torch.tensor([[-1.0, 1, 0, 0], [-1.0, 0, 1, 0], [-1.0, 0, 0, 1]])
    score = lambda s: float(tpp(t, s).score)  # noqa: E731
    assert score(diverse) > score(near_duplicates)
    assert score(diverse) > score(unrelated)
    assert float(tpp(t, diverse, "identity", "identity").score) < float(
        tpp(t, unrelated, "identity", "identity").score
    )  # the literal reading ranks the other way


def test_unknown_scaling_is_a_user_error():
    with pytest.raises(UserError, match="--beta"):
        tpp(torch.ones(2), torch.ones(2, 2), beta="square")
