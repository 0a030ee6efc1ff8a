"""Training-step throughput per aggregation mode (the trainer's own `train_step`: forward,
loss, backward, AdamW step), and the head's share of a step."""

from __future__ import annotations

import copy
import time

import torch

from storyboard_common.clip import load_clip
from trainer.distributed import DistInfo
from trainer.loss import storyboard_loss
from trainer.model.aggregation import AGGREGATIONS, StoryboardHead
from trainer.model.video_clip import VideoCLIP
from trainer.precision import grad_scaler
from trainer.schedule import make_optimizer
from trainer.subtexts import artifact_class_text
from trainer.training import LossTally, train_step

from .synthetic import synthetic_artifact


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def bench_steps(batch: int = 2, frames: int = 8, classes: int = 51, repeats: int = 3) -> dict:
    """One training step (`train_step`) of ViT-B/16 (random weights) on the same batch for
    every mode, and the head's forward-backward alone."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    clip = load_clip("ViT-B-16", "none", str(device))
    artifact = synthetic_artifact(clip, classes)
    clip_id = (clip.model_id, clip.pretrained_id)
    text = artifact_class_text(artifact, "synthetic sub-texts", clip_id, clip.embed_dim).to(device)
    clips = torch.randint(0, 256, (batch, frames, 3, 224, 224), dtype=torch.uint8, device=device)
    labels = torch.arange(batch, device=device) % classes
    scaler, one_process = grad_scaler(device, "none"), DistInfo(0, 1, 0, device)
    out: dict = {}
    step_seconds, head_seconds = {}, {}
    for mode in AGGREGATIONS:
        head = StoryboardHead(clip.embed_dim, mode).to(device)
        model = VideoCLIP(copy.deepcopy(clip.model.visual).requires_grad_(True), head).to(device)

        optimizer = make_optimizer(model, 1e-5)
        inputs = {
            "frames": clips,
            "labels": labels,
            "video_ids": [str(i) for i in range(batch)],
            "skipped": [],
        }

        tally = LossTally(device, 0.0, 0.0, skip_non_finite=False)

        def step(model=model, optimizer=optimizer, inputs=inputs, tally=tally):
            train_step(  # the trainer's own step
                model, text, [inputs], optimizer, scaler, one_process, "none", 1.0, tally, 1
            )

        step_seconds[mode] = _time(step, repeats)
        features = torch.randn(batch, frames, clip.embed_dim, device=device, requires_grad=True)

        def head_step(head=head, features=features):
            head.zero_grad(set_to_none=True)
            storyboard_loss(head(features, text)["logits"], labels).backward()

        head_seconds[mode] = _time(head_step, repeats)
        out[f"head_share_{mode}"] = head_seconds[mode] / step_seconds[mode]
        out[f"step_clips_per_second_{mode}"] = batch / step_seconds[mode]
    # The backbone is the same in every mode, so the added cost is the head's; whole-step
    # timings on a CPU vary by several percent between runs, more than the head costs.
    added = head_seconds["coarse+fine"] - head_seconds["mean"]
    out["step_overhead_coarse_fine_vs_mean"] = added / step_seconds["mean"]
    whole = step_seconds["coarse+fine"] / step_seconds["mean"] - 1
    out["step_overhead_measured_whole_step"] = whole
    out["steps_setup"] = (
        f"ViT-B-16 (random weights), {frames} frames, batch {batch}, "
        f"{classes} classes x 4 sub-texts, fp32 on {device}"
    )
    return out
