"""The assembled video model on the tiny CLIP: shapes, temporal module, freezing, gradient
checkpointing, optimiser groups and the artifact/CLIP identity checks."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from storyboard_common.errors import UserError
from storyboard_common.subtexts import ArtifactMeta, SubtextArtifact
from trainer.data.transforms import normalise_clips
from trainer.model.aggregation import AGGREGATIONS, ClassText
from trainer.model.args import ModelArgs
from trainer.model.temporal import TemporalTransformer
from trainer.model.video_clip import VideoCLIP, build_model, clip_log_logit_scale, param_groups
from trainer.settings import RunConfig
from trainer.subtexts import artifact_class_text, check_artifact_matches_clip

B, T, C, N, W, D = 2, 4, 3, 2, 4, 32
ARTIFACT_PATH = "artifacts/tiny/TinyCLIP-test__none/subtexts.parquet"


def make_artifact(**meta_changes) -> SubtextArtifact:
    rng = np.random.default_rng(0)
    global_mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    sub_mask = np.zeros((C, N, W), dtype=bool)
    for c, lengths in enumerate([(2, 3), (4, 1), (3, 3)]):
        for n, length in enumerate(lengths):
            sub_mask[c, n, :length] = True
    meta = ArtifactMeta(
        clip_model="TinyCLIP-test",
        clip_pretrained="none",
        embed_dim=D,
        n_subtexts=N,
        template="a video of a person {}.",
        alpha="complement",
        beta="complement",
    )
    return SubtextArtifact(
        meta=dataclasses.replace(meta, **meta_changes),
        class_names=["run", "jump", "sit"],
        global_texts=[f"a video of a person {c}." for c in ("run", "jump", "sit")],
        sub_texts=[[f"step {n}" for n in range(N)] for _ in range(C)],
        tpp=rng.random(C).astype(np.float32),
        global_emb=rng.standard_normal((C, D)).astype(np.float32),
        global_tokens=rng.standard_normal((C, W, D)).astype(np.float32) * global_mask[..., None],
        global_mask=global_mask,
        sub_emb=rng.standard_normal((C, N, D)).astype(np.float32),
        sub_tokens=rng.standard_normal((C, N, W, D)).astype(np.float32) * sub_mask[..., None],
        sub_mask=sub_mask,
    )


@pytest.fixture()
def clip(tiny_clip):
    """The session's tiny CLIP with its own copy of the weights (the model mutates them)."""
    return dataclasses.replace(tiny_clip, model=copy.deepcopy(tiny_clip.model))


@pytest.fixture()
def clips():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (B, T, 3, 32, 32), dtype=torch.uint8, generator=g)


def class_text_for(clip, artifact: SubtextArtifact) -> ClassText:
    """The artifact's class texts, checked against `clip` as a run checks them."""
    return artifact_class_text(
        artifact, ARTIFACT_PATH, (clip.model_id, clip.pretrained_id), clip.embed_dim
    )


def build(clip, **kwargs):
    args = ModelArgs.of_run(RunConfig(**kwargs), clip)
    return build_model(clip, args), class_text_for(clip, make_artifact())


def loss_of(out):
    return F.cross_entropy(out["logits"], torch.tensor([0, 2]))


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_forward_every_aggregation(clip, clips, mode):
    model, text = build(clip, aggregation=mode)
    assert isinstance(text, ClassText) and text.num_classes == C
    out = model(clips, text)
    assert out["logits"].shape == (B, C)
    assert torch.isfinite(out["logits"]).all()
    assert out["frames"].shape == (B, T, D)
    has_coarse = mode in ("global", "coarse", "coarse+fine")
    has_fine = mode in ("fine", "coarse+fine")
    assert (out["coarse"] is not None) == has_coarse
    assert (out["fine"] is not None) == has_fine
    for key in ("coarse", "fine"):
        if out[key] is not None:
            assert out[key].shape == (B, C, T)


def test_float_clips_equal_uint8_clips(clip, clips):
    model, text = build(clip)
    model.eval()
    torch.testing.assert_close(
        model(normalise_clips(clips), text)["logits"], model(clips, text)["logits"]
    )


@pytest.mark.parametrize("layers", [0, 2])
def test_temporal_layers(clip, clips, layers):
    model, text = build(clip, temporal_layers=layers, frames=8)  # T = 4: positions interpolated
    assert model(clips, text)["logits"].shape == (B, C)
    x = torch.randn(B, T, D)
    torch.testing.assert_close(model.temporal(x), x, rtol=0, atol=0)
    n_params = sum(p.numel() for p in model.temporal.parameters())
    assert (n_params == 0) == (layers == 0)


def test_temporal_mixes_frames_once_trained():
    torch.manual_seed(0)
    temporal = TemporalTransformer(D, layers=2, heads=8, frames=8)
    x = torch.randn(B, 5, D)  # another length than `frames`
    torch.testing.assert_close(temporal(x), x, rtol=0, atol=0)
    temporal.proj.weight.data.normal_()
    out = temporal(x)
    assert out.shape == x.shape and not torch.allclose(out, x)
    # Frame order matters (position embeddings), so it is not a per-frame function.
    flipped = temporal(x.flip(1)).flip(1)
    assert not torch.allclose(out, flipped)
    out.sum().backward()
    assert temporal.frame_position.grad is not None
    assert temporal.blocks[0].self_attn.in_proj_weight.grad.abs().sum() > 0


def test_gradients_reach_visual_when_not_frozen(clip, clips):
    model, text = build(clip, temporal_layers=1)
    model.train()
    assert model.visual.training
    loss_of(model(clips, text)).backward()
    grads = [p.grad for p in model.visual.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_frozen_visual_gets_no_gradient_and_stays_in_eval(clip, clips):
    model, text = build(clip, temporal_layers=1, freeze_backbone=True, grad_checkpointing=True)
    model.train()
    assert model.training and model.head.training and model.temporal.training
    assert not model.visual.training
    assert not any(m.training for m in model.visual.modules())
    loss_of(model(clips, text)).backward()
    assert all(not p.requires_grad and p.grad is None for p in model.visual.parameters())
    assert model.head.logit_scale.grad is not None
    assert model.temporal.proj.weight.grad is not None
    model.eval()
    model.train()
    assert not model.visual.training


def test_grad_checkpointing_gives_same_logits_and_gradients(clip, clips):
    plain, text = build(clip, aggregation="coarse+fine", temporal_layers=1)
    other = dataclasses.replace(clip, model=copy.deepcopy(clip.model))
    checkpointed, _ = build(
        other, aggregation="coarse+fine", temporal_layers=1, grad_checkpointing=True
    )
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.visual.transformer.grad_checkpointing
    assert not plain.visual.transformer.grad_checkpointing
    results = []
    for model in (plain, checkpointed):
        model.train()
        out = model(clips, text)
        loss_of(out).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out["logits"].detach(), grads))
    (logits_a, grads_a), (logits_b, grads_b) = results
    torch.testing.assert_close(logits_a, logits_b)
    assert grads_a.keys() == grads_b.keys()
    assert any(name.startswith("visual.") for name in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], msg=name)


def test_param_groups(clip):
    model, _ = build(clip, temporal_layers=1)
    groups = param_groups(model, lr=1e-3, backbone_lr_scale=0.1, weight_decay=0.2)
    at_backbone_lr = {id(p) for p in model.visual.parameters()} | {id(model.head.logit_scale)}
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # each once
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        for p in group["params"]:
            assert group["lr"] == pytest.approx(1e-3 * 0.1 if id(p) in at_backbone_lr else 1e-3)
            name = names[id(p)]
            no_decay = p.ndim < 2 or "position" in name or "embedding" in name
            assert group["weight_decay"] == (0.0 if no_decay or "logit_scale" in name else 0.2)
    by_name = {names[id(p)]: g for g in groups for p in g["params"]}
    assert by_name["head.logit_scale"]["name"] == "backbone_no_decay"
    assert by_name["head.logit_scale"]["weight_decay"] == 0.0
    assert by_name["visual.positional_embedding"]["weight_decay"] == 0.0
    assert by_name["temporal.frame_position"]["weight_decay"] == 0.0
    assert by_name["visual.conv1.weight"]["weight_decay"] == 0.2
    torch.optim.AdamW(groups)  # the groups are what AdamW takes


def test_param_groups_leave_out_frozen_visual(clip):
    model, _ = build(clip, freeze_backbone=True)
    groups = param_groups(model, lr=1e-3, backbone_lr_scale=0.1, weight_decay=0.2)
    assert not {id(p) for g in groups for p in g["params"]} & {
        id(p) for p in model.visual.parameters()
    }
    # The logit scale is not part of the tower: it still trains, at the backbone's rate.
    (scale_group,) = [g for g in groups if any(p is model.head.logit_scale for p in g["params"])]
    assert scale_group["params"] == [model.head.logit_scale]
    assert scale_group["name"] == "backbone_no_decay"
    assert scale_group["lr"] == pytest.approx(1e-3 * 0.1)
    assert scale_group["weight_decay"] == 0.0
    assert all(g["lr"] == 1e-3 for g in groups if g is not scale_group)


@pytest.mark.parametrize("freeze_backbone", [False, True])
def test_head_starts_at_the_clips_own_logit_scale(clip, freeze_backbone):
    with torch.no_grad():
        clip.model.logit_scale.fill_(math.log(50))
    model, _ = build(clip, freeze_backbone=freeze_backbone)
    assert model.head.logit_scale.item() == clip.model.logit_scale.item()
    assert model.head.logit_scale.exp().item() == pytest.approx(50.0, rel=1e-6)
    assert model.head.logit_scale is not clip.model.logit_scale  # a copy: the head's own
    assert model.head.logit_scale.requires_grad


def test_clip_without_a_logit_scale_gives_the_untrained_one():
    assert math.exp(clip_log_logit_scale(torch.nn.Linear(2, 2))) == pytest.approx(1 / 0.07)


def test_text_tower_is_not_kept(clip):
    model, _ = build(clip)
    text_params = {id(p) for n, p in clip.model.named_parameters() if not n.startswith("visual.")}
    assert text_params, "the tiny CLIP has a text tower"
    assert not text_params & {id(p) for p in model.parameters()}
    assert {k.split(".")[0] for k in model.state_dict()} <= {"visual", "temporal", "head"}


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(clip_model="ViT-B-16"), "ViT-B-16/none"),
        (dict(clip_pretrained="openai"), "TinyCLIP-test/openai"),
    ],
)
def test_artifact_of_another_clip_is_refused(clip, change, named):
    with pytest.raises(UserError) as info:
        class_text_for(clip, make_artifact(**change))
    message = str(info.value)
    assert ARTIFACT_PATH in message
    assert named in message and "TinyCLIP-test/none" in message
    assert "\n" not in message and message.endswith("CLIP.")  # one sentence


def test_check_artifact_matches_clip_accepts_same_clip():
    check_artifact_matches_clip(make_artifact().meta, "TinyCLIP-test", "none", ARTIFACT_PATH)


def test_embed_dim_mismatch_is_refused(clip):
    with pytest.raises(UserError, match=r"16-d .* 32 dimensions") as info:
        class_text_for(clip, make_artifact(embed_dim=16))
    assert ARTIFACT_PATH in str(info.value)


def test_video_clip_without_temporal_module(clip, clips):
    model, text = build(clip)
    bare = VideoCLIP(model.visual, model.head)
    torch.testing.assert_close(bare(clips, text)["logits"], model(clips, text)["logits"])


def test_artifact_with_inconsistent_width_is_refused(clip):
    artifact = make_artifact()
    artifact = dataclasses.replace(artifact, global_emb=artifact.global_emb[:, :16])
    with pytest.raises(UserError, match="storyboard.embed_dim=32 but holds 16-d"):
        class_text_for(clip, artifact)


def test_autocast_bf16(clip, clips):
    model, text = build(clip, temporal_layers=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(clips, text)
    assert out["logits"].dtype == torch.float32 and torch.isfinite(out["logits"]).all()
    loss_of(out).backward()


def test_heads_that_do_not_divide_the_width_are_one_sentence(clip):
    with pytest.raises(UserError, match=r"^--heads 3 must divide the embedding width of CLIP"):
        build(clip, attention_heads=3)
    assert build(clip, attention_heads=2)[0].head.cross_attention.heads == 2
