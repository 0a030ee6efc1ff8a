"""Eq. 5-12 against references written straight from the equations, with explicit loops."""

import math
from types import SimpleNamespace

import pytest
import torch

from trainer.model.aggregation import (
    AGGREGATIONS,
    FFN,
    ClassText,
    CrossAttention,
    StoryboardHead,
    class_logits,
    coarse_importance,
    fine_importance,
    weighted_frames,
)

B, C, L, N, W, D = 2, 3, 4, 2, 3, 5
TAU = 0.5  # large enough that the softmaxes are not one-hot, so errors would show


def cos(a, b):
    return float((a @ b) / (a.norm() * b.norm()))


def softmax(xs):
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    return [e / sum(exps) for e in exps]


@pytest.fixture()
def data():
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    text_tokens = torch.randn(C, W, D, generator=g, dtype=torch.float64)
    text_mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    sub_tokens = torch.randn(C, N, W, D, generator=g, dtype=torch.float64)
    sub_mask = torch.tensor(
        [[[1, 1, 0], [1, 1, 1]], [[1, 0, 0], [0, 0, 0]], [[1, 1, 0], [1, 0, 0]]], dtype=torch.bool
    )  # class 1, sub-text 1 is empty
    return frames, text_tokens, text_mask, sub_tokens, sub_mask


def with_garbage_padding(tokens, mask, value=float("nan")):
    """Same tokens, padding replaced by something no result may depend on."""
    return tokens.masked_fill(~mask[..., None], value)


# ---------------------------------------------------------------- references (loops)


def ref_coarse(frames, tokens, mask, tau):
    out = torch.zeros(B, C, L, dtype=torch.float64)
    for b in range(B):
        for c in range(C):
            words = [w for w in range(tokens.shape[1]) if mask[c, w]]
            for w in words:
                p = softmax([cos(tokens[c, w], frames[b, fr]) / tau for fr in range(L)])
                for fr in range(L):
                    out[b, c, fr] += p[fr] / len(words)
    return out


def ref_fine(frames, sub_tokens, sub_mask, tau):
    out = torch.zeros(B, C, L, dtype=torch.float64)
    for b in range(B):
        for c in range(C):
            scores = []
            for fr in range(L):
                per_sub = []
                for n in range(sub_tokens.shape[1]):
                    words = [w for w in range(sub_tokens.shape[2]) if sub_mask[c, n, w]]
                    if words:
                        sims = [cos(sub_tokens[c, n, w], frames[b, fr]) for w in words]
                        per_sub.append(sum(sims) / len(words))
                scores.append(max(per_sub) / tau)
            for fr, p in enumerate(softmax(scores)):
                out[b, c, fr] = p
    return out


def ref_cross_attention(module, text_tokens, text_mask, sub_tokens, sub_mask):
    """Eq. 5-7 per class and head, keys = only the real sub-text tokens of that class."""
    h = module.heads
    dh = D // h
    out = torch.zeros_like(text_tokens)
    with torch.no_grad():
        _ref_cross_attention_into(out, module, h, dh, text_tokens, text_mask, sub_tokens, sub_mask)
    return out


def _ref_cross_attention_into(out, module, h, dh, text_tokens, text_mask, sub_tokens, sub_mask):
    for c in range(C):
        keys = torch.stack(
            [sub_tokens[c, n, w] for n in range(N) for w in range(W) if sub_mask[c, n, w]]
        )
        k_all, v_all = module.k(keys), module.v(keys)
        for w in range(W):
            if not text_mask[c, w]:
                continue
            q_all = module.q(text_tokens[c, w])
            heads = []
            for i in range(h):
                q, k, v = (x[..., i * dh : (i + 1) * dh] for x in (q_all, k_all, v_all))
                p = softmax([float(q @ k[j]) / math.sqrt(dh) for j in range(len(keys))])
                heads.append(sum(p[j] * v[j] for j in range(len(keys))))
            mixed = torch.cat(heads)
            if module.out is not None:
                mixed = module.out(mixed)
            out[c, w] = mixed + text_tokens[c, w]


# ---------------------------------------------------------------- Eq. 8-11


@pytest.mark.parametrize("tau", [TAU, 0.01])
def test_coarse_importance_matches_eq8(data, tau):
    frames, text_tokens, text_mask, _, _ = data
    got = coarse_importance(frames, text_tokens, text_mask, tau)
    assert got.shape == (B, C, L)
    torch.testing.assert_close(
        got, ref_coarse(frames, text_tokens, text_mask, tau), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(got.sum(-1), torch.ones(B, C, dtype=got.dtype))


@pytest.mark.parametrize("tau", [TAU, 0.01])
def test_fine_importance_matches_eq10(data, tau):
    frames, _, _, sub_tokens, sub_mask = data
    got = fine_importance(frames, sub_tokens, sub_mask, tau)
    assert got.shape == (B, C, L)
    torch.testing.assert_close(got, ref_fine(frames, sub_tokens, sub_mask, tau), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.sum(-1), torch.ones(B, C, dtype=got.dtype))


def test_padding_never_counts(data):
    frames, text_tokens, text_mask, sub_tokens, sub_mask = data
    for value in (float("nan"), 1e4, 0.0):
        torch.testing.assert_close(
            coarse_importance(
                frames, with_garbage_padding(text_tokens, text_mask, value), text_mask, TAU
            ),
            coarse_importance(frames, text_tokens, text_mask, TAU),
        )
        torch.testing.assert_close(
            fine_importance(
                frames, with_garbage_padding(sub_tokens, sub_mask, value), sub_mask, TAU
            ),
            fine_importance(frames, sub_tokens, sub_mask, TAU),
        )


def test_class_without_tokens_is_uniform_and_finite(data):
    frames, text_tokens, text_mask, sub_tokens, sub_mask = data
    frames = frames.clone().requires_grad_(True)
    text_mask = text_mask.clone()
    text_mask[1] = False
    sub_mask = sub_mask.clone()
    sub_mask[2] = False
    coarse = coarse_importance(frames, text_tokens, text_mask, 0.01)
    fine = fine_importance(frames, sub_tokens, sub_mask, 0.01)
    torch.testing.assert_close(coarse[:, 1], torch.full((B, L), 1 / L, dtype=coarse.dtype))
    torch.testing.assert_close(fine[:, 2], torch.full((B, L), 1 / L, dtype=fine.dtype))
    (coarse.sum() + fine.sum() + (coarse * fine).square().sum()).backward()
    assert torch.isfinite(frames.grad).all()


def test_weighted_frames_matches_eq9(data):
    frames = data[0]
    importance = torch.softmax(torch.randn(B, C, L, dtype=torch.float64), -1)
    ref = torch.zeros(B, C, D, dtype=torch.float64)
    for b in range(B):
        for c in range(C):
            for fr in range(L):
                ref[b, c] += importance[b, c, fr] * frames[b, fr]
    torch.testing.assert_close(weighted_frames(importance, frames), ref)


def test_class_logits_matches_eq12():
    video = torch.randn(B, C, D, dtype=torch.float64)
    pooled = torch.randn(B, D, dtype=torch.float64)
    classes = torch.randn(C, D, dtype=torch.float64)
    got, got_pooled = class_logits(video, classes, 3.0), class_logits(pooled, classes, 3.0)
    assert got.shape == got_pooled.shape == (B, C)
    for b in range(B):
        for c in range(C):
            assert got[b, c].item() == pytest.approx(3.0 * cos(classes[c], video[b, c]), abs=1e-6)
            assert got_pooled[b, c].item() == pytest.approx(
                3.0 * cos(classes[c], pooled[b]), abs=1e-6
            )


# ---------------------------------------------------------------- Eq. 5-7 and the FFN


def randomise(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return module


@pytest.mark.parametrize("heads", [1, 5])
def test_cross_attention_matches_eq5_7(data, heads):
    _, text_tokens, text_mask, sub_tokens, sub_mask = data
    module = randomise(CrossAttention(D, heads).double())
    assert (module.out is None) == (heads == 1)
    got = module(text_tokens, text_mask, sub_tokens, sub_mask)
    assert got.shape == (C, W, D) and torch.isfinite(got).all()
    ref = ref_cross_attention(module, text_tokens, text_mask, sub_tokens, sub_mask)
    torch.testing.assert_close(got[text_mask], ref[text_mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("heads", [1, 5])
def test_cross_attention_masks_padded_keys(data, heads):
    _, text_tokens, text_mask, sub_tokens, sub_mask = data
    module = randomise(CrossAttention(D, heads).double())
    clean = module(text_tokens, text_mask, sub_tokens, sub_mask)
    for value in (float("nan"), 1e4):
        noisy = module(
            text_tokens, text_mask, with_garbage_padding(sub_tokens, sub_mask, value), sub_mask
        )
        torch.testing.assert_close(noisy, clean)
    # Padded queries may hold anything but never NaN.
    noisy_queries = module(
        with_garbage_padding(text_tokens, text_mask), text_mask, sub_tokens, sub_mask
    )
    assert torch.isfinite(noisy_queries).all()
    torch.testing.assert_close(noisy_queries[text_mask], clean[text_mask])


@pytest.mark.parametrize("heads", [1, 5])
def test_cross_attention_starts_as_identity(data, heads):
    _, text_tokens, text_mask, sub_tokens, sub_mask = data
    module = CrossAttention(D, heads).double()
    out = module(text_tokens, text_mask, sub_tokens, sub_mask)
    torch.testing.assert_close(out[text_mask], text_tokens[text_mask])


def test_cross_attention_class_without_sub_tokens(data):
    _, text_tokens, text_mask, sub_tokens, sub_mask = data
    sub_mask = sub_mask.clone()
    sub_mask[0] = False
    module = randomise(CrossAttention(D, 1).double())
    tokens = text_tokens.clone().requires_grad_(True)
    out = module(tokens, text_mask, sub_tokens, sub_mask)
    torch.testing.assert_close(out[0][text_mask[0]], text_tokens[0][text_mask[0]])
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_ffn_starts_as_identity():
    x = torch.randn(B, C, D)
    torch.testing.assert_close(FFN(D)(x), x)


# ---------------------------------------------------------------- the assembled head


def class_text(data):
    _, text_tokens, text_mask, sub_tokens, sub_mask = data
    g = torch.Generator().manual_seed(2)
    return ClassText(
        global_emb=torch.randn(C, D, generator=g),
        global_tokens=text_tokens.float(),
        global_mask=text_mask,
        sub_emb=torch.randn(C, N, D, generator=g),
        sub_tokens=sub_tokens.float(),
        sub_mask=sub_mask,
    )


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_head_modes_give_logits_and_gradients(data, mode):
    text = class_text(data)
    frames = data[0].float().requires_grad_(True)
    head = StoryboardHead(D, mode=mode, heads=1)
    out = head(frames, text)
    assert out["logits"].shape == (B, C)
    assert (out["coarse"] is None) == (mode in ("mean", "fine"))
    assert (out["fine"] is None) == (mode not in ("fine", "coarse+fine"))
    for key in ("coarse", "fine"):
        if out[key] is not None:
            assert out[key].shape == (B, C, L)
    out["logits"].square().sum().backward()
    assert frames.grad is not None and torch.isfinite(frames.grad).all()
    assert frames.grad.abs().sum() > 0


def test_head_at_init_is_eq12_without_learned_parts(data):
    text = class_text(data)
    frames = data[0].float()
    head = StoryboardHead(D, tau_coarse=TAU, tau_fine=TAU)
    assert head.logit_scale.exp().item() == pytest.approx(1 / 0.07)
    coarse = coarse_importance(frames, text.global_tokens, text.global_mask, TAU)
    fine = fine_importance(frames, text.sub_tokens, text.sub_mask, TAU)
    video = weighted_frames(coarse, frames) + weighted_frames(fine, frames)
    expected = class_logits(video, text.global_emb, 1 / 0.07)
    torch.testing.assert_close(head(frames, text)["logits"], expected)
    with torch.no_grad():
        head.logit_scale.fill_(10.0)
    assert head(frames, text)["logits"].abs().max() <= 100.0 + 1e-4


@pytest.mark.parametrize("mode", ["global", "coarse", "fine", "coarse+fine"])
def test_head_all_classes_at_once_equals_one_class_at_a_time(data, mode):
    text = class_text(data)
    frames = data[0].float()
    head = randomise(StoryboardHead(D, mode=mode, heads=1, tau_coarse=TAU, tau_fine=TAU))
    with torch.no_grad():
        head.logit_scale.fill_(1.0)
    logits = head(frames, text)["logits"]
    for c in range(C):
        one = ClassText(**{k: v[c : c + 1] for k, v in vars(text).items()})
        torch.testing.assert_close(head(frames, one)["logits"][:, 0], logits[:, c])


def test_class_text_from_artifact():
    import numpy as np

    art = SimpleNamespace(
        global_emb=np.zeros((C, D), np.float32),
        global_tokens=np.zeros((C, W, D), np.float32),
        global_mask=np.ones((C, W), bool),
        sub_emb=np.zeros((C, N, D), np.float32),
        sub_tokens=np.zeros((C, N, W, D), np.float32),
        sub_mask=np.ones((C, N, W), bool),
        class_names=["a", "b", "c"],
    )
    text = ClassText.from_artifact(art).to("cpu", torch.float64)
    assert text.num_classes == C
    assert text.sub_tokens.shape == (C, N, W, D) and text.sub_tokens.dtype == torch.float64
    assert text.sub_mask.dtype == torch.bool and text.global_mask.dtype == torch.bool


def test_head_under_bf16_autocast_keeps_cosines_in_fp32(data):
    text = class_text(data)
    frames = data[0].float()
    head = StoryboardHead(D)
    reference = head(frames, text)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(frames, text)
    assert out["coarse"].dtype == out["fine"].dtype == out["logits"].dtype == torch.float32
    torch.testing.assert_close(out["coarse"], reference["coarse"])
    torch.testing.assert_close(out["fine"], reference["fine"])
