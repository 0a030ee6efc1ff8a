"""Pretrain a small CLIP on a synthetic world's frames and their atomic-action captions.

`make demo` has no pretrained weights to start from, so the storyboard model would look
at frames through a random visual tower. The synthetic world labels every frame with the
atomic action it shows (`videos/<class>/<id>.json` = `{"frames": [action id, ...]}`) and
names each action in `<world>/atomic_actions.json`, which is exactly the (image, caption)
data CLIP is trained on. `pretrain_clip` trains the model of a small open_clip config on
these pairs and saves a plain `state_dict` that `load_clip(config, PATH)` (the CLI's
`--clip-pretrained PATH`) loads like any other checkpoint.

Many frames in a batch share a caption, so the standard CLIP loss (the i-th image's only
positive is the i-th text) would push identical captions apart. Here the text side is the
set of distinct captions: image -> text is a cross entropy over the captions (a classifier),
and text -> image, for each caption in the batch, averages the log-likelihood of all the
images that show it.

Two objectives (`OBJECTIVES`). `pooled` is CLIP's own: it trains only the pooled (EOT)
caption embedding, as web CLIPs are trained. Eq. 8 and 10, though, compare frames with the
captions' *word tokens*, which such an objective never asks to mean anything. `pooled+tokens`
averages that loss with the same loss on Eq. 10's inner term (a frame's mean cosine with
the caption's word tokens, `subtext_frame_similarity`), so the word tokens carry the
caption's meaning: the reading of a CLIP under which the paper's frame weights work.

When the world also writes `phrasings.json` (per action: its caption, then the words class
names use for it, e.g. "hop" for "the square jumps"), every step shows each action under one
of its phrasings, drawn at random, so the text tower learns the class names' vocabulary as a
web-trained CLIP knows the words of "ride bike". Evaluation always uses the captions.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from storyboard_common.clip import LoadedClip, encode_texts, load_clip, token_states
from storyboard_common.device import resolve_device
from storyboard_common.errors import UserError
from storyboard_common.files import atomic_save, atomic_write_json
from storyboard_common.progress import Heartbeat, progress_bar
from storyboard_common.subtexts import pad_tokens
from trainer.data.transforms import normalise_clips
from trainer.data.video import open_video, read_frames
from trainer.model.aggregation import subtext_frame_similarity
from trainer.schedule import make_optimizer, make_scheduler

from . import WORLD_CLIP

MAX_TEXT_PER_STEP = 256  # more captions than this: each step encodes only the batch's own
OBJECTIVES = ("pooled", "pooled+tokens")


@dataclass
class FramePairs:
    """Frames with the caption of the atomic action each shows.

    images: uint8 [N, 3, S, S]; caption_ids: long [N], indices into `captions`;
    video_ids: long [N], the row of the video in the split file each frame comes from;
    phrasings[k]: the ways caption k may be written (the caption first).
    """

    images: torch.Tensor
    caption_ids: torch.Tensor
    video_ids: torch.Tensor
    captions: list[str]
    phrasings: list[list[str]]

    def __len__(self) -> int:
        return int(self.caption_ids.numel())


def load_atomic_captions(world_root: Path) -> list[str]:
    """`atomic_actions.json` ({"0": caption, ...}) as a list indexed by action id."""
    path = Path(world_root) / "atomic_actions.json"
    if not path.is_file():
        raise UserError(f"no atomic_actions.json in the world root {world_root}.")
    table = json.loads(path.read_text())
    ids = sorted(int(k) for k in table)
    if ids != list(range(len(ids))):
        raise UserError(f"{path}: action ids must be 0..{len(ids) - 1}, got {ids[:10]}...")
    return [str(table[str(i)]) for i in ids]


def load_phrasings(world_root: Path, captions: list[str]) -> list[list[str]]:
    """`phrasings.json` ({"0": [caption, ...], ...}) by action id; the captions alone when the
    world has no such file."""
    path = Path(world_root) / "phrasings.json"
    if not path.is_file():
        return [[caption] for caption in captions]
    table = json.loads(path.read_text())
    phrasings = [list(table.get(str(i), [])) for i in range(len(captions))]
    for i, (caption, texts) in enumerate(zip(captions, phrasings)):
        if not texts or texts[0] != caption:
            raise UserError(f"{path}: action {i} must list its caption {caption!r} first.")
    return phrasings


def _split_videos(world_dataset: Path, split: str) -> list[Path]:
    path = Path(world_dataset) / split
    if not path.is_file():
        raise UserError(f"no split file {path}.")
    videos = []
    for line in path.read_text().splitlines():
        if line.strip():
            videos.append(Path(world_dataset) / line.split()[0])
    if not videos:
        raise UserError(f"{path} lists no videos.")
    return videos


def load_frame_pairs(
    world_dataset: Path,
    world_root: Path,
    image_size: int,
    split: str = "train.txt",
    frame_stride: int = 1,
    frame_offset: int = 0,
    heartbeat: Heartbeat | None = None,
) -> FramePairs:
    """Every `frame_stride`-th frame (from `frame_offset`) of the split's videos, resized to
    image_size x image_size, with its atomic-action caption; each video is decoded once.
    `heartbeat` beats after each video."""
    captions = load_atomic_captions(world_root)
    images, caption_ids, video_ids = [], [], []
    videos = _split_videos(world_dataset, split)
    for row, video in enumerate(videos):
        if heartbeat is not None:
            heartbeat.beat(f"reading the frames of {split}: video {row + 1}/{len(videos)}")
        labels_path = video.with_suffix(".json")
        if not labels_path.is_file():
            raise UserError(f"no per-frame labels {labels_path} beside {video}.")
        labels = json.loads(labels_path.read_text())["frames"]
        reader, info = open_video(video)
        count = min(info.num_frames, len(labels))
        indices = list(range(frame_offset, count, frame_stride))
        if not indices:
            continue
        frames = read_frames(reader, indices).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
        del reader
        if tuple(frames.shape[-2:]) != (image_size, image_size):
            frames = TF.resize(frames, [image_size, image_size], antialias=True)
        ids = torch.tensor([int(labels[i]) for i in indices], dtype=torch.long)
        if ids.min() < 0 or ids.max() >= len(captions):
            raise UserError(f"{labels_path}: action id outside 0..{len(captions) - 1}.")
        images.append(frames.contiguous())
        caption_ids.append(ids)
        video_ids.append(torch.full((len(indices),), row, dtype=torch.long))
    if not images:
        raise UserError(f"no frames in the videos of {Path(world_dataset) / split}.")
    return FramePairs(
        images=torch.cat(images),
        caption_ids=torch.cat(caption_ids),
        video_ids=torch.cat(video_ids),
        captions=captions,
        phrasings=load_phrasings(world_root, captions),
    )


def caption_loss(
    similarity: torch.Tensor, targets: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric CLIP loss with K distinct captions and same-caption images as positives.

    similarity [B, K] (image-caption cosines, or any score of that range), targets [B] in
    0..K-1. image -> text: cross entropy over the K captions. text -> image: for each caption
    that some image in the batch shows, the KL divergence from the uniform distribution over
    its positives to its softmax over the batch's images (the cross entropy minus
    log(positives), so 0 is reachable); averaged over those captions.
    """
    logits = logit_scale * similarity  # [B, K]
    image_to_text = F.cross_entropy(logits, targets)
    log_probs = logits.t().log_softmax(dim=1)  # [K, B], over images
    positives = F.one_hot(targets, similarity.shape[1]).t().float()  # [K, B]
    counts = positives.sum(dim=1)
    present = counts > 0
    cross_entropy = -(log_probs * positives).sum(dim=1)[present] / counts[present]
    per_caption = cross_entropy - counts[present].log()
    return (image_to_text + per_caption.mean()) / 2


def caption_similarities(
    model: torch.nn.Module, ids: torch.Tensor, image_features: torch.Tensor, objective: str
) -> list[torch.Tensor]:
    """What `objective` trains, each [B, K] for unit image features [B, D] and caption token
    ids [K, context]: the cosine with the pooled caption embedding, and for `pooled+tokens`
    also Eq. 10's inner term (the mean cosine with the caption's word tokens)."""
    states, eot = token_states(model, ids)
    pooled = F.normalize(states[torch.arange(len(ids), device=eot.device), eot], dim=-1)
    similarities = [image_features @ pooled.t()]
    if objective == "pooled+tokens":
        positions = torch.arange(states.shape[1], device=states.device)
        words = (positions >= 1) & (positions < eot[:, None])  # strictly between SOT and EOT
        inner = subtext_frame_similarity(image_features[None], states[None], words[None])
        similarities.append(inner[0, 0].t())
    return similarities


def random_shift_scale(
    images: torch.Tensor, generator: torch.Generator, shift: float = 0.125, scale: float = 0.1
) -> torch.Tensor:
    """Each image moved by up to `shift` of its size and zoomed by up to 1 +- `scale`
    (border pixels repeat): position and size vary, what an action looks like does not.
    No flips and no colour changes: "left" and "red" are in the captions."""
    count = images.shape[0]
    zoom = 1 + (torch.rand(count, generator=generator) * 2 - 1) * scale
    offset = (torch.rand(count, 2, generator=generator) * 2 - 1) * shift * 2
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = offset
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def draw_phrasings(
    phrasing_tokens: list[torch.Tensor], rows: list[int], generator: torch.Generator
) -> torch.Tensor:
    """One phrasing per caption row, drawn at random: tokens [len(rows), context]."""
    return torch.stack(
        [
            phrasing_tokens[k][
                int(torch.randint(len(phrasing_tokens[k]), (1,), generator=generator))
            ]
            for k in rows
        ]
    )


def log_path(out: Path) -> Path:
    """The JSON beside a checkpoint that records how it was trained (and its losses)."""
    return Path(out).with_suffix(".json")


def pretrain_clip(
    world_dataset: Path,
    world_root: Path,
    out: Path,
    clip_model: str = WORLD_CLIP,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    show_progress: bool = True,
    *,
    split: str = "train.txt",
    frame_stride: int = 1,
    augment: bool = False,
    weight_decay: float = 0.05,
    warmup_steps: int = 10,
    max_steps: int | None = None,
    force: bool = False,
    objective: str = "pooled",
    heartbeat: Heartbeat | None = None,
) -> Path:
    """Train `clip_model` (random init) on the split's (frame, atomic caption) pairs; save
    its `state_dict` to `out` atomically and return `out`.

    An existing `out` is returned as is, without training, unless `force`. The run is
    deterministic for a seed (on CPU). `<out stem>.json` records the settings, the mean
    loss of each epoch and the training time. `max_steps` cuts the run short (tests).
    `heartbeat` beats while the frames are read and after every step (epoch, loss), for
    logs without the bar.

    Long because it hands its settings to the loop and writes them to the record, one a
    line, in one straight sequence: read the frames, train, save.
    """
    if objective not in OBJECTIVES:
        raise UserError(f"unknown --objective {objective!r}; choose {' or '.join(OBJECTIVES)}.")
    out = Path(out)
    if out.is_file() and not force:
        return out
    torch.manual_seed(seed)
    torch_device = resolve_device(device)
    clip = load_clip(clip_model, "none", str(torch_device))
    model = clip.model.train().requires_grad_(True)
    started = time.perf_counter()
    pairs = load_frame_pairs(
        world_dataset, world_root, clip.image_size, split, frame_stride, heartbeat=heartbeat
    )
    load_seconds = time.perf_counter() - started
    train_started = time.perf_counter()
    step_losses, epoch_losses = _train_clip(
        clip,
        pairs,
        torch_device,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        augment=augment,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        max_steps=max_steps,
        objective=objective,
        show_progress=show_progress,
        heartbeat=heartbeat,
    )
    train_seconds = time.perf_counter() - train_started

    model.eval().requires_grad_(False)
    atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out)
    record = {
        "clip_model": clip.model_id,
        "world_dataset": str(world_dataset),
        "split": split,
        "frames": len(pairs),
        "captions": len(pairs.captions),
        "phrasings": sum(len(texts) for texts in pairs.phrasings),
        "frame_stride": frame_stride,
        "augment": augment,
        "objective": objective,
        "epochs": epochs,
        "steps": len(step_losses),
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device": str(torch_device),
        "load_seconds": round(load_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "epoch_losses": epoch_losses,
        "step_losses": step_losses,
    }
    atomic_write_json(log_path(out), record)
    return out


def _train_clip(
    clip: LoadedClip,
    pairs: FramePairs,
    torch_device: torch.device,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    augment: bool,
    weight_decay: float,
    warmup_steps: int,
    max_steps: int | None,
    objective: str,
    show_progress: bool,
    heartbeat: Heartbeat | None,
) -> tuple[list[float], list[float]]:
    """Train `clip`'s model in place on the (frame, caption) `pairs` -> (every step's loss,
    each epoch's mean loss)."""
    model = clip.model
    phrasing_tokens = [clip.tokenizer(texts).to(torch_device) for texts in pairs.phrasings]

    total = max(1, math.ceil(len(pairs) / batch_size)) * epochs
    if max_steps is not None:
        total = min(total, max_steps)
    # CLIP's own AdamW settings; no decay on biases, norms, embeddings and the logit scale.
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay, betas=(0.9, 0.98), eps=1e-6)
    scheduler = make_scheduler(optimizer, total, min(warmup_steps, max(1, total // 5)))
    generator = torch.Generator().manual_seed(seed)

    def step(rows: torch.Tensor) -> float:
        """One optimiser step on the frames `rows` -> its loss."""
        loss = _caption_batch_loss(
            model, pairs, phrasing_tokens, rows, generator, torch_device, augment, objective
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return float(loss.detach())

    return _train_epochs(
        step, len(pairs), epochs, total, batch_size, generator, show_progress, heartbeat
    )


def _train_epochs(
    step: Callable[[torch.Tensor], float],
    frames: int,
    epochs: int,
    total: int,
    batch_size: int,
    generator: torch.Generator,
    show_progress: bool,
    heartbeat: Heartbeat | None = None,
) -> tuple[list[float], list[float]]:
    """`step` over shuffled batches of the `frames` rows, epoch after epoch, for at most
    `total` steps -> (every step's loss, each epoch's mean loss); `heartbeat` beats after
    each step."""
    step_losses: list[float] = []
    epoch_losses: list[float] = []
    with progress_bar(show_progress) as progress:
        task = progress.add_task("pretrain CLIP", total=total, info="")
        for epoch in range(epochs):
            if len(step_losses) >= total:
                break
            order = torch.randperm(frames, generator=generator)
            losses = []
            for start in range(0, frames, batch_size):
                if len(step_losses) >= total:
                    break
                losses.append(step(order[start : start + batch_size]))
                step_losses.append(losses[-1])
                info = f"epoch {epoch + 1}/{epochs} loss {losses[-1]:.3f}"
                progress.update(task, advance=1, info=info)
                if heartbeat is not None:
                    heartbeat.beat(f"pretrain CLIP: step {len(step_losses)}/{total}, {info}")
            if losses:
                epoch_losses.append(sum(losses) / len(losses))
    return step_losses, epoch_losses


def _caption_batch_loss(
    model: torch.nn.Module,
    pairs: FramePairs,
    phrasing_tokens: list[torch.Tensor],
    rows: torch.Tensor,
    generator: torch.Generator,
    device: torch.device,
    augment: bool,
    objective: str,
) -> torch.Tensor:
    """The loss of the frames `rows` against the captions (each under a phrasing drawn at
    random): every caption, or only the batch's own when there are more than
    `MAX_TEXT_PER_STEP`; averaged over the objective's similarities."""
    images = normalise_clips(pairs.images[rows].to(device))
    if augment:
        images = random_shift_scale(images, generator)
    targets = pairs.caption_ids[rows].to(device)
    if len(pairs.captions) <= MAX_TEXT_PER_STEP:
        text_rows = torch.arange(len(pairs.captions), device=device)
    else:  # only the batch's own captions, renumbered
        text_rows, targets = torch.unique(targets, return_inverse=True)
    tokens = draw_phrasings(phrasing_tokens, text_rows.tolist(), generator)
    image_features = F.normalize(model.encode_image(images), dim=-1)
    scale = model.logit_scale.exp()
    similarities = caption_similarities(model, tokens, image_features, objective)
    return torch.stack([caption_loss(sim, targets, scale) for sim in similarities]).mean()


# What frames are matched against: the pooled (EOT) caption embedding CLIP is trained on,
# or the mean of the caption's word tokens, which is what Eq. 10 weights frames with.
CAPTION_FEATURES = ("pooled", "word_tokens")


def evaluate_frame_accuracy(
    checkpoint: Path | str,
    world_dataset: Path,
    world_root: Path,
    clip_model: str = WORLD_CLIP,
    split: str = "train.txt",
    frame_stride: int = 1,
    frame_offset: int = 0,
    device: str = "auto",
    batch_size: int = 256,
    by: str = "pooled",
) -> float:
    """The fraction of the split's frames whose nearest caption (among all the world's
    atomic actions, compared `by` one of CAPTION_FEATURES) is the one of the action they
    show, with `checkpoint` loaded through `load_clip` as `--clip-pretrained` would load it."""
    return frame_accuracies(
        checkpoint,
        world_dataset,
        world_root,
        clip_model,
        split,
        frame_stride,
        frame_offset,
        device,
        batch_size,
        (by,),
    )[by]


def frame_accuracies(
    checkpoint: Path | str,
    world_dataset: Path,
    world_root: Path,
    clip_model: str = WORLD_CLIP,
    split: str = "train.txt",
    frame_stride: int = 1,
    frame_offset: int = 0,
    device: str = "auto",
    batch_size: int = 256,
    by: Sequence[str] = CAPTION_FEATURES,
    heartbeat: Heartbeat | None = None,
) -> dict[str, float]:
    """`evaluate_frame_accuracy` for several caption features at once: the CLIP is loaded,
    the videos decoded and the frames encoded once (`heartbeat` beats after each video).
    -> {features: accuracy}."""
    clip = load_clip(clip_model, str(checkpoint), device)
    pairs = load_frame_pairs(
        world_dataset, world_root, clip.image_size, split, frame_stride, frame_offset, heartbeat
    )
    nearest = nearest_captions(clip, pairs, by, batch_size)
    return {b: float((ids == pairs.caption_ids).float().mean()) for b, ids in nearest.items()}


def predict_captions(
    clip: LoadedClip, pairs: FramePairs, by: str = "pooled", batch_size: int = 256
) -> torch.Tensor:
    """The nearest caption id of every frame, long [N]: by cosine with the pooled caption
    embeddings, or by Eq. 10's inner term (mean cosine with the caption's word tokens)."""
    return nearest_captions(clip, pairs, (by,), batch_size)[by]


@torch.inference_mode()
def encode_frames(clip: LoadedClip, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Unit image embeddings [N, D] (float32, on the CLIP's device) of uint8 frames
    [N, 3, S, S] at the CLIP's image size."""
    parts = []
    for start in range(0, len(images), batch_size):
        batch = normalise_clips(images[start : start + batch_size].to(clip.device))
        parts.append(F.normalize(clip.model.encode_image(batch).float(), dim=-1))
    return torch.cat(parts)


@torch.inference_mode()
def nearest_captions(
    clip: LoadedClip, pairs: FramePairs, by: Sequence[str], batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """`predict_captions` for each of the caption features `by`, every frame encoded once."""
    unknown = [b for b in by if b not in CAPTION_FEATURES]
    if unknown:
        raise UserError(
            f"unknown caption features {unknown[0]!r}; choose {' or '.join(CAPTION_FEATURES)}."
        )
    text = encode_texts(clip, pairs.captions, with_tokens="word_tokens" in by)
    pooled = F.normalize(torch.from_numpy(text.pooled), dim=-1).to(clip.device)
    if "word_tokens" in by:
        tokens, mask = pad_tokens(text.tokens, clip.embed_dim)
        tokens = torch.from_numpy(tokens)[None].to(clip.device)
        mask = torch.from_numpy(mask)[None].to(clip.device)
    predicted: dict[str, list[torch.Tensor]] = {b: [] for b in by}
    for start in range(0, len(pairs), batch_size):
        image = encode_frames(clip, pairs.images[start : start + batch_size])
        for b in by:
            if b == "pooled":
                similarity = image @ pooled.t()  # [n, K]
            else:  # frames as one clip [1, n, D] against K "sub-texts" -> [1, 1, K, n]
                similarity = subtext_frame_similarity(image[None], tokens, mask)[0, 0].t()
            predicted[b].append(similarity.argmax(dim=1).cpu())
    return {b: torch.cat(ids) for b, ids in predicted.items()}


__all__: Sequence[str] = (
    "FramePairs",
    "caption_loss",
    "encode_frames",
    "evaluate_frame_accuracy",
    "frame_accuracies",
    "load_atomic_captions",
    "load_frame_pairs",
    "nearest_captions",
    "predict_captions",
    "pretrain_clip",
)
