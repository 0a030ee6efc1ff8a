import numpy as np
import pytest
import torch

from storyboard_common.clip import clip_identity, encode_texts, load_clip
from storyboard_common.errors import UserError
from storyboard_common.resources import data_path
from testkit.cli import TINY_CLIP_CONFIG

TEXTS = ["a video of a person brush hair.", "raise the brush", "jump", "pick up a heavy box slowly"]


def test_token_path_eot_equals_encode_text(tiny_clip):
    """The pooled feature is the projected EOT token of the same last-layer sequence."""
    model, tok = tiny_clip.model, tiny_clip.tokenizer
    ids = tok(TEXTS)
    captured = []
    hook = model.ln_final.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        pooled = model.encode_text(ids)
    hook.remove()
    eot = ids.argmax(-1)
    eot_projected = captured[0][torch.arange(len(TEXTS)), eot] @ model.text_projection
    torch.testing.assert_close(eot_projected, pooled)
    feats = encode_texts(tiny_clip, TEXTS, batch_size=3, with_tokens=True)
    np.testing.assert_allclose(feats.pooled, pooled.numpy(), rtol=1e-5, atol=1e-6)


def test_word_tokens_are_between_sot_and_eot(tiny_clip):
    feats = encode_texts(tiny_clip, TEXTS, batch_size=2, with_tokens=True)
    bpe = tiny_clip.tokenizer
    for text, tokens in zip(TEXTS, feats.tokens):
        assert tokens.shape == (len(bpe.encode(text)), tiny_clip.embed_dim)
    # Word tokens are the ln_final outputs at positions 1..EOT-1, projected.
    ids = bpe(TEXTS[:1])
    captured = []
    hook = tiny_clip.model.ln_final.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        tiny_clip.model.encode_text(ids)
    hook.remove()
    n = len(bpe.encode(TEXTS[0]))
    expected = (captured[0][0, 1 : 1 + n] @ tiny_clip.model.text_projection).numpy()
    np.testing.assert_allclose(feats.tokens[0], expected, rtol=1e-5, atol=1e-6)


def test_batches_do_not_change_features(tiny_clip):
    a = encode_texts(tiny_clip, TEXTS, batch_size=1).pooled
    b = encode_texts(tiny_clip, TEXTS, batch_size=256).pooled
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert encode_texts(tiny_clip, TEXTS).tokens is None


def test_local_checkpoint_round_trip(tiny_clip, tmp_path):
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), ckpt)
    loaded = load_clip(str(TINY_CLIP_CONFIG), str(ckpt), "cpu")
    np.testing.assert_allclose(
        encode_texts(loaded, TEXTS).pooled, encode_texts(tiny_clip, TEXTS).pooled, atol=1e-6
    )
    model_id, pretrained_id = clip_identity(str(TINY_CLIP_CONFIG), str(ckpt))
    assert (loaded.model_id, loaded.pretrained_id) == (model_id, pretrained_id)
    assert model_id == "TinyCLIP-test" and pretrained_id.startswith("tiny.pt@")
    # Other weights under the same file name are another identity.
    torch.save({k: v + 1 for k, v in tiny_clip.model.state_dict().items()}, ckpt)
    assert clip_identity(str(TINY_CLIP_CONFIG), str(ckpt))[1] != pretrained_id


def test_loader_errors_are_one_clear_sentence(tmp_path):
    with pytest.raises(UserError, match="unknown --clip-model 'ViT-Q-99'"):
        load_clip("ViT-Q-99", "none", "cpu")
    with pytest.raises(UserError, match="checkpoint not found: .*missing.pt"):
        load_clip(str(TINY_CLIP_CONFIG), str(tmp_path / "missing.pt"), "cpu")
    with pytest.raises(UserError, match="config file not found"):
        load_clip(str(tmp_path / "nope.json"), "none", "cpu")
    with pytest.raises(UserError, match="'openai' is neither a checkpoint file nor a pretrained"):
        load_clip(str(TINY_CLIP_CONFIG), "openai", "cpu")  # a tag of other models only


def test_a_shipped_config_by_name_or_path_is_one_clip(tiny_clip, tmp_path, monkeypatch):
    """`TinyCLIP-test`, its path in a clone and the installed file build the same CLIP and
    record the same identity, so artifacts scored either way agree."""
    monkeypatch.chdir(tmp_path)  # not the clone: the clone's path resolves to the shipped file
    names = [
        "TinyCLIP-test",
        "storyboard_common/data/clip/TinyCLIP-test.json",
        str(TINY_CLIP_CONFIG),
    ]
    for name in names:
        assert clip_identity(name, "none") == ("TinyCLIP-test", "none")
        loaded = load_clip(name, "none", "cpu")
        assert (loaded.model_id, loaded.pretrained_id, loaded.embed_dim) == (
            "TinyCLIP-test",
            "none",
            tiny_clip.embed_dim,
        )
        shapes = {k: v.shape for k, v in loaded.model.state_dict().items()}
        assert shapes == {k: v.shape for k, v in tiny_clip.model.state_dict().items()}
    with pytest.raises(
        UserError, match="a shipped config \\(StoryboardWorld-CLIP, TinyCLIP-test\\)"
    ):
        load_clip("TinyCLIP-tset", "none", "cpu")


def test_a_file_that_is_no_clip_checkpoint_is_one_sentence(tiny_clip, tmp_path):
    """A CSV, a truncated file and another architecture's weights as --clip-pretrained."""

    csv = tmp_path / "classes.csv"
    csv.write_text("id,name\n0,a\n")
    good = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:2000])
    other = tmp_path / "other.pt"
    world_clip = load_clip(str(data_path("clip", "StoryboardWorld-CLIP.json")), "none", "cpu")
    torch.save(world_clip.model.state_dict(), other)
    for path in (csv, cut):
        with pytest.raises(UserError, match="is not a PyTorch checkpoint") as caught:
            load_clip(str(TINY_CLIP_CONFIG), str(path), "cpu")
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(UserError, match="is not a checkpoint of --clip-model") as caught:
        load_clip(str(TINY_CLIP_CONFIG), str(other), "cpu")
    assert str(other) in str(caught.value) and "\n" not in str(caught.value)
