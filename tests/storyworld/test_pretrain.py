"""CLIP pretraining on a world's (frame, atomic caption) pairs: a tiny world of flat colours."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from storyboard_common.clip import encode_texts, load_clip
from storyboard_common.errors import UserError
from storyboard_common.progress import Heartbeat
from storyworld import WORLD_CLIP
from storyworld.pretrain import (
    caption_loss,
    caption_similarities,
    draw_phrasings,
    evaluate_frame_accuracy,
    load_frame_pairs,
    log_path,
    predict_captions,
    pretrain_clip,
)
from testkit.cli import REPO
from trainer.data.transforms import normalise_clips

CONFIG = WORLD_CLIP
COLOURS = {0: (220, 30, 30), 1: (30, 200, 30), 2: (30, 30, 220)}
CAPTIONS = {
    "0": "the square turns red",
    "1": "the square turns green",
    "2": "the square turns blue",
}


def write_action_video(path: Path, actions: list[int], size: int = 64, fps: int = 8) -> Path:
    """A video whose frame i is a flat colour of action `actions[i]`, with a little noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(actions) * 7 + sum(actions))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        stream.options = {"qscale": "1"}
        for action in actions:
            image = np.empty((size, size, 3), dtype=np.uint8)
            image[:] = COLOURS[action]
            noise = rng.integers(-20, 21, size=image.shape)
            image = (image.astype(np.int16) + noise).clip(0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_world(root: Path, videos: int = 6, frames: int = 16) -> Path:
    """A world root with atomic_actions.json and a `seen/` dataset (train.txt and test.txt)."""
    dataset = root / "seen"
    (root).mkdir(parents=True, exist_ok=True)
    (root / "atomic_actions.json").write_text(json.dumps(CAPTIONS))
    (dataset / "classes.csv").parent.mkdir(parents=True, exist_ok=True)
    (dataset / "classes.csv").write_text("id,name\n0,red_then_green\n1,blue_then_red\n")
    lines = []
    for v in range(videos):
        label = v % 2
        first, second = (0, 1) if label == 0 else (2, 0)
        cut = frames // 2 + (v % 3) - 1
        actions = [first] * cut + [second] * (frames - cut)
        if v % 3 == 2:  # some videos show the third action too
            actions[-3:] = [(second + 1) % 3] * 3
        rel = f"videos/class{label}/{v:03d}.mp4"
        write_action_video(dataset / rel, actions)
        (dataset / rel).with_suffix(".json").write_text(json.dumps({"frames": actions}))
        lines.append(f"{rel} {label}")
    (dataset / "train.txt").write_text("\n".join(lines[:-2]) + "\n")
    (dataset / "test.txt").write_text("\n".join(lines[-2:]) + "\n")
    return dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return root, write_world(root)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    root, dataset = world
    out = tmp_path_factory.mktemp("ckpt") / "world-clip.pt"
    path = pretrain_clip(
        dataset,
        root,
        out,
        CONFIG,
        epochs=30,
        batch_size=32,
        max_steps=30,
        device="cpu",
        show_progress=False,
    )
    return path


def test_frame_pairs_follow_the_labels(world):
    root, dataset = world
    pairs = load_frame_pairs(dataset, root, image_size=64)
    assert pairs.images.shape == (4 * 16, 3, 64, 64) and pairs.images.dtype == torch.uint8
    assert pairs.captions == [CAPTIONS[str(i)] for i in range(3)]
    means = pairs.images.float().mean(dim=(2, 3))  # [N, 3]
    assert torch.equal(means.argmax(dim=1), pairs.caption_ids)  # the colour is the action
    strided = load_frame_pairs(dataset, root, image_size=32, frame_stride=2, frame_offset=1)
    assert strided.images.shape == (4 * 8, 3, 32, 32)


def test_phrasings_are_read_checked_and_drawn(world, tmp_path):
    root, dataset = world
    assert load_frame_pairs(dataset, root, 32, frame_stride=8).phrasings == [
        [CAPTIONS[str(i)]] for i in range(3)
    ]  # no phrasings.json: the captions alone
    other = tmp_path / "world"
    shutil.copytree(root, other)
    table = {k: [v, f"{k}-a", f"{k}-b"] for k, v in CAPTIONS.items()}
    (other / "phrasings.json").write_text(json.dumps(table))
    pairs = load_frame_pairs(other / "seen", other, 32, frame_stride=8)
    assert pairs.phrasings == [table[str(i)] for i in range(3)]
    tokens = [torch.arange(len(t))[:, None].repeat(1, 4) for t in pairs.phrasings]
    generator = torch.Generator().manual_seed(0)
    drawn = torch.stack([draw_phrasings(tokens, [0, 2], generator)[:, 0] for _ in range(60)])
    assert drawn.shape == (60, 2) and set(drawn.flatten().tolist()) == {0, 1, 2}
    table["1"] = ["green", table["1"][0]]
    (other / "phrasings.json").write_text(json.dumps(table))
    with pytest.raises(UserError, match="action 1 must list its caption"):
        load_frame_pairs(other / "seen", other, 32)


def test_pretrain_clip_command_trains_once_and_keeps_the_checkpoint(world, tmp_path):
    root, _ = world
    out = tmp_path / "clip.pt"
    args = [
        sys.executable,
        "-m",
        "storyworld",
        "pretrain-clip",
        "--world",
        str(root),
        "--out",
        str(out),
        "--clip-model",
        CONFIG,
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--objective",
        "pooled+tokens",
    ]
    first = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert f"checkpoint:{out}" in "".join(first.stdout.split())  # rich may wrap the path
    record = json.loads(log_path(out).read_text())
    assert record["epochs"] == 1 and record["steps"] == 2  # 48 frames in batches of 32
    assert record["objective"] == "pooled+tokens"
    assert load_clip(CONFIG, str(out), "cpu").model is not None
    before = out.stat().st_mtime_ns
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0 and "kept" in again.stdout
    assert out.stat().st_mtime_ns == before
    assert not (root / "world.json").exists()  # the given world was used as it is


def test_caption_loss_treats_same_caption_as_positives():
    text = torch.nn.functional.normalize(torch.eye(3, 8), dim=-1)
    targets = torch.tensor([0, 0, 1, 2, 2])
    right = caption_loss(text[targets] @ text.t(), targets, torch.tensor(20.0))
    wrong = caption_loss(text[(targets + 1) % 3] @ text.t(), targets, torch.tensor(20.0))
    assert right < 0.1 < wrong


def test_token_objective_scores_are_eq10_inner_term_by_hand(trained):
    """`pooled+tokens` trains two scores: the cosine with the pooled caption (what
    `encode_texts` pools) and the mean cosine with the caption's word tokens, recomputed
    here word by word from `encode_texts`."""
    clip = load_clip(CONFIG, str(trained), "cpu")
    captions = list(CAPTIONS.values()) + ["hop"]
    images = torch.nn.functional.normalize(torch.randn(5, clip.embed_dim), dim=-1)
    with torch.no_grad():
        pooled, inner = caption_similarities(
            clip.model, clip.tokenizer(captions), images, "pooled+tokens"
        )
    assert len(caption_similarities(clip.model, clip.tokenizer(captions), images, "pooled")) == 1
    text = encode_texts(clip, captions, with_tokens=True)
    unit = text.pooled / np.linalg.norm(text.pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled.numpy(), images.numpy() @ unit.T, atol=1e-5)
    by_hand = [
        [np.mean([w @ image / np.linalg.norm(w) for w in words]) for words in text.tokens]
        for image in images.numpy()
    ]
    np.testing.assert_allclose(inner.numpy(), np.array(by_hand), atol=1e-5)
    assert [len(words) for words in text.tokens][-1] == 1  # "hop": one word token


def test_token_objective_makes_word_tokens_find_frames(world, tmp_path):
    """Trained on Eq. 10's inner term too, word tokens match frames as well as pooled
    embeddings do; the objective is recorded; an unknown one is refused."""
    root, dataset = world
    path = pretrain_clip(
        dataset,
        root,
        tmp_path / "tokens.pt",
        CONFIG,
        epochs=30,
        batch_size=32,
        max_steps=30,
        device="cpu",
        show_progress=False,
        objective="pooled+tokens",
    )
    assert json.loads(log_path(path).read_text())["objective"] == "pooled+tokens"
    accuracy = evaluate_frame_accuracy(
        path, dataset, root, CONFIG, "test.txt", device="cpu", by="word_tokens"
    )
    assert accuracy > 0.9  # chance is 1/3
    with pytest.raises(UserError, match="unknown --objective"):
        pretrain_clip(dataset, root, tmp_path / "x.pt", CONFIG, objective="eot")


def test_checkpoint_loads_through_load_clip(trained):
    assert trained.is_file()
    clip = load_clip(CONFIG, str(trained), "cpu")
    saved = torch.load(trained, weights_only=True)
    state = clip.model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)


def test_loss_decreases_and_frames_find_their_caption(world, trained):
    root, dataset = world
    record = json.loads(log_path(trained).read_text())
    losses = record["step_losses"]
    assert record["steps"] == 30 and len(losses) == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    accuracy = evaluate_frame_accuracy(trained, dataset, root, CONFIG, "test.txt", device="cpu")
    assert accuracy > 0.9  # chance is 1/3


def test_word_token_matching_is_eq10_inner_term_by_hand(world, trained):
    """`by="word_tokens"` picks, per frame, the caption with the highest mean cosine over
    its word tokens, recomputed here word by word."""
    root, dataset = world
    clip = load_clip(CONFIG, str(trained), "cpu")
    pairs = load_frame_pairs(dataset, root, 64, "test.txt", frame_stride=4)
    predicted = predict_captions(clip, pairs, by="word_tokens")
    words = encode_texts(clip, pairs.captions, with_tokens=True).tokens
    with torch.inference_mode():
        images = clip.model.encode_image(normalise_clips(pairs.images)).numpy()
    by_hand = []
    for image in images:
        image = image / np.linalg.norm(image)
        scores = [np.mean([w @ image / np.linalg.norm(w) for w in caption]) for caption in words]
        by_hand.append(int(np.argmax(scores)))
    assert predicted.tolist() == by_hand
    assert predict_captions(clip, pairs).tolist() != [] and len(predicted) == len(pairs)
    with pytest.raises(UserError, match="unknown caption features"):
        predict_captions(clip, pairs, by="eot")


def test_existing_checkpoint_is_not_retrained(world, trained):
    root, dataset = world
    before = trained.stat().st_mtime_ns
    again = pretrain_clip(dataset, root, trained, CONFIG, device="cpu", show_progress=False)
    assert again == trained and trained.stat().st_mtime_ns == before


def test_same_seed_same_weights(world, tmp_path):
    root, dataset = world
    a = pretrain_clip(
        dataset,
        root,
        tmp_path / "a.pt",
        CONFIG,
        batch_size=32,
        max_steps=2,
        device="cpu",
        show_progress=False,
    )
    b = pretrain_clip(
        dataset,
        root,
        tmp_path / "b.pt",
        CONFIG,
        batch_size=32,
        max_steps=2,
        device="cpu",
        show_progress=False,
    )
    wa, wb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_pretraining_says_epoch_loss_and_time_whenever_ten_seconds_passed(world, tmp_path):
    """`make demo` shows its CLIP pre-training alive: a line before a video is read or after
    a step once 10 s (of the clock given; here 6 s each) passed since the last line."""
    root, dataset = world
    ticks = iter(range(0, 1000, 6))
    lines: list[str] = []
    heartbeat = Heartbeat(lines.append, every=10, clock=lambda: next(ticks))
    path = pretrain_clip(
        dataset,
        root,
        tmp_path / "c.pt",
        CONFIG,
        epochs=2,
        batch_size=32,
        max_steps=4,
        device="cpu",
        show_progress=False,
        heartbeat=heartbeat,
    )
    losses = json.loads(log_path(path).read_text())["step_losses"]
    assert lines == [  # 4 videos read, then 4 steps
        "reading the frames of train.txt: video 2/4, 12s elapsed",
        "reading the frames of train.txt: video 4/4, 24s elapsed",
        f"pretrain CLIP: step 2/4, epoch 1/2 loss {losses[1]:.3f}, 36s elapsed",
        f"pretrain CLIP: step 4/4, epoch 2/2 loss {losses[3]:.3f}, 48s elapsed",
    ]
