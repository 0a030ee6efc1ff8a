"""`make gpu-check`: one prepared script for a GPU machine (under 8 minutes, no network,
no weights), one JSON report, one sentence per failure.

Part "steps": a few real training steps of the full video model. The setting is BIKE's
for ViT-B/16: 8 frames, batch 32 on one device. The model is built by the trainer's own
`build_model` from an open_clip ViT-B-16 with random weights (nothing is downloaded) and a
synthetic sub-text artifact (400 classes x 4 sub-texts), with the `coarse+fine` head, the
`k400` preset's 6 temporal layers and a trainable backbone; each step is the trainer's own
`trainer.training.train_step` (autocast, `storyboard_loss`, AdamW over `param_groups`), so
a change to the trainer's step reaches this check. Every configuration (bf16 autocast or
fp32, gradient checkpointing on or off) starts from the same weights and trains on the
same random clips, and reports clips/s, peak memory, its losses, and how often the visual
tower's blocks ran per step (twice where checkpointing recomputes them in backward, once
where it is off): the check that checkpointing is on.

The other parts (`bench.gpu_pipeline`) run the real CLI end to end on a synthetic dataset:
the loader from video copies and frame folders at the default workers (clips/s, data-wait
share), bf16 and fp16, `--compile`, evaluation, Ctrl-C and `--resume`, `cache-features`
and a run from it, `--decode-device`, and with two GPUs or more `torchrun` runs of `run`
and `cache-features`.

`python -m bench.gpu_check` writes `bench/gpu-check-<card>.json` and exits 0 when every
part that ran passed (the steps' part: every loss finite, checkpointing active exactly
where asked and leaving the first loss unchanged, bf16 with checkpointing peaking at most
9 GiB, BIKE's figure for this setting); 1 otherwise, one sentence per failure; 2 without
CUDA. `--device cpu --tiny` runs every part on the CPU with the tiny CLIP, in seconds: the
tests' way in.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import math
import platform
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from storyboard_common.clip import LoadedClip, load_clip
from storyboard_common.files import atomic_write_json
from storyboard_common.subtexts import SubtextArtifact
from testkit.cli import TINY_CLIP_CONFIG
from trainer.config import resolve_config
from trainer.distributed import DistInfo
from trainer.model.args import ModelArgs
from trainer.model.video_clip import build_model
from trainer.precision import grad_scaler
from trainer.schedule import make_optimizer
from trainer.settings import RunConfig
from trainer.subtexts import artifact_class_text
from trainer.training import LossTally, train_step

from .gpu_pipeline import (
    GPU,
    PARTS,
    TINY,
    TOTAL_BUDGET_S,
    Pipeline,
    cores,
    default_ranks,
    part_record,
    run_parts,
)
from .synthetic import synthetic_artifact

BENCH_DIR = Path(__file__).resolve().parent
GIB = 2**30
NO_CUDA = (
    "make gpu-check needs a CUDA device; torch sees none (torch.cuda.is_available() is False)."
)
SYNTHETIC_ARTIFACT = "synthetic sub-texts (bench.gpu_check)"
# The setting BIKE reports 9 GB for (ViT-B/16, 8 frames, batch 32, checkpointing on); the
# target applies to that setting only, read as GiB of peak allocated tensor memory.
TARGET_SETTING = {"model": "ViT-B-16", "frames": 8, "batch": 32}
TARGET_PEAK_GIB = 9.0
# Checkpointing recomputes the forward pass from the same weights and inputs, so the first
# loss (before any update) must match; the tolerance only allows for kernel-level noise.
FIRST_LOSS_RTOL = 1e-3


@dataclass(frozen=True)
class StepConfig:
    amp: str  # as the trainer's --amp takes it: "bf16" (autocast) or "none" (fp32)
    grad_checkpointing: bool

    @property
    def name(self) -> str:
        precision = "bf16 autocast" if self.amp == "bf16" else "fp32"
        return f"{precision}, checkpointing {'on' if self.grad_checkpointing else 'off'}"


TARGET_CONFIG = StepConfig("bf16", True)
FP32_CONFIGS = (StepConfig("none", True), StepConfig("none", False))
GPU_CONFIGS = (TARGET_CONFIG, StepConfig("bf16", False), *FP32_CONFIGS)
# The step check on the CPU's tiny setting (--device cpu --tiny): the tiny CLIP in fp32.
TINY_STEPS = dict(batch=2, frames=2, steps=2, warmup=1, classes=5, temporal_layers=1)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    """Free what an earlier configuration left on the card (also after an OOM), so that each
    peak is its own configuration's."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


class BlockCalls:
    """Counts forward calls of the visual tower's transformer blocks (open_clip ViTs): one a
    step without checkpointing, two with it (the recomputation in backward calls them again)."""

    def __init__(self, visual: torch.nn.Module):
        self.blocks = list(getattr(getattr(visual, "transformer", None), "resblocks", ()))
        self.calls = 0
        self._handles = [b.register_forward_pre_hook(self._count) for b in self.blocks]

    def _count(self, *_) -> None:
        self.calls += 1

    def per_step(self, steps: int) -> float | None:
        return self.calls / (steps * len(self.blocks)) if self.blocks else None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass(frozen=True)
class CheckInputs:
    """What every configuration trains on: the same CLIP weights (on the CPU), text, clips,
    labels and number of steps (the first `warmup` untimed)."""

    clip: LoadedClip
    artifact: SubtextArtifact
    clips: torch.Tensor
    labels: torch.Tensor
    device: torch.device
    steps: int
    warmup: int
    temporal_layers: int
    seed: int


def _train_steps(inputs: CheckInputs, config: StepConfig, record: dict) -> None:
    """`steps` optimiser steps of the trainer's `train_step`; fills `record`
    as it goes, so an OOM still leaves the losses and the peak reached before it."""
    device, steps, warmup = inputs.device, inputs.steps, inputs.warmup
    recipe = RunConfig()  # the trainer's defaults: lr, backbone scale, weight decay, lambda
    torch.manual_seed(inputs.seed)  # the same head and temporal init in every configuration
    # build_model shares the CLIP's visual tower: a copy per configuration keeps every one
    # starting from the same weights. The copy's text tower stays on the CPU and is dropped.
    own_clip = dataclasses.replace(inputs.clip, model=copy.deepcopy(inputs.clip.model))
    clip_id = (own_clip.model_id, own_clip.pretrained_id)
    text = artifact_class_text(inputs.artifact, SYNTHETIC_ARTIFACT, clip_id, own_clip.embed_dim)
    settings = RunConfig(
        aggregation="coarse+fine",
        temporal_layers=inputs.temporal_layers,
        frames=inputs.clips.shape[1],
        grad_checkpointing=config.grad_checkpointing,
    )
    model = build_model(own_clip, ModelArgs.of_run(settings, own_clip))
    del own_clip
    model.to(device).train()
    text = text.to(device)
    clips, labels = inputs.clips.to(device), inputs.labels.to(device)
    optimizer = make_optimizer(model, recipe.lr, recipe.backbone_lr_scale, recipe.weight_decay)
    scaler = grad_scaler(device, config.amp)
    batch = {
        "frames": clips,
        "labels": labels,
        "video_ids": [str(i) for i in range(len(clips))],
        "skipped": [],
    }
    one_process = DistInfo(rank=0, world=1, local_rank=0, device=device)
    block_calls = BlockCalls(model.visual)
    # A tally per step, read after the timed steps: the trainer reads none back between them.
    tallies = [LossTally(device, 0.0, 0.0, scaler.is_enabled()) for _ in range(steps)]
    done = 0  # steps that ran: an out-of-memory step leaves the losses before it
    try:
        for step, tally in enumerate(tallies):
            if step == warmup:
                _sync(device)
                start = time.perf_counter()
            train_step(
                model, text, [batch], optimizer, scaler, one_process, config.amp, recipe.lam,
                tally, step + 1,
            )  # fmt: skip
            done += 1
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        block_calls.remove()
        for tally in tallies[:done]:  # a step fp16 skipped has no loss: NaN, which `failures` names
            loss_sum, counted, diverged = tally.read()
            record["losses"].append(
                diverged.loss if diverged else loss_sum / counted if counted else math.nan
            )
    timed = steps - warmup
    record.update(
        status="ok",
        clips_per_second=len(clips) * timed / seconds,
        seconds_per_step=seconds / timed,
        block_forwards_per_step=block_calls.per_step(steps),
    )


def _run_config(inputs: CheckInputs, config: StepConfig) -> dict:
    device = inputs.device
    _release(device)
    record: dict = {
        "config": config.name,
        "amp": config.amp,
        "grad_checkpointing": config.grad_checkpointing,
        "status": "incomplete",  # "ok" once every step ran, "OOM" if memory ran out
        "error": None,
        "losses": [],
        "clips_per_second": None,
        "seconds_per_step": None,
        "block_forwards_per_step": None,
        "memory_before_gib": None,
        "peak_allocated_gib": None,
        "peak_reserved_gib": None,
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        record["memory_before_gib"] = torch.cuda.memory_allocated(device) / GIB
    try:
        _train_steps(inputs, config, record)
    except torch.cuda.OutOfMemoryError as exc:
        record.update(status="OOM", error=str(exc).splitlines()[0] if str(exc) else "OOM")
    if device.type == "cuda":  # after an OOM: the peak reached before it
        record["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        record["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
    record["losses_finite"] = bool(record["losses"]) and all(
        math.isfinite(x) for x in record["losses"]
    )
    return record


def run_check(
    model: str = "ViT-B-16",
    device: str | torch.device = "cuda",
    *,
    batch: int = 32,
    frames: int = 8,
    steps: int = 6,
    warmup: int = 2,
    classes: int = 400,
    temporal_layers: int = resolve_config("k400", {}).temporal_layers,
    configs: Sequence[StepConfig] = GPU_CONFIGS,
    seed: int = 0,
) -> dict:
    """Train `steps` steps (the first `warmup` untimed) in every configuration; -> the
    settings and one record per configuration (see `_run_config`). `model` is any name or
    JSON config `--clip-model` takes; weights are random. bf16 needs CUDA, as in the trainer."""
    device = torch.device(device)
    if not 0 <= warmup < steps:
        raise ValueError(f"need 0 <= warmup < steps, got warmup={warmup}, steps={steps}.")
    for config in configs:
        if config.amp != "none" and device.type != "cuda":
            raise ValueError(f"{config.name} needs CUDA: the trainer's autocast is CUDA-only.")
    torch.manual_seed(seed)  # the random CLIP weights, so that a rerun repeats the losses
    # Loaded on the CPU so that the device holds only what the trainer keeps there.
    clip = load_clip(model, "none", "cpu")
    artifact = synthetic_artifact(clip, classes, seed=seed)
    size = clip.image_size
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randint(
        0, 256, (batch, frames, 3, size, size), dtype=torch.uint8, generator=generator
    )
    labels = torch.randint(0, classes, (batch,), generator=generator)
    inputs = CheckInputs(
        clip, artifact, clips, labels, device, steps, warmup, temporal_layers, seed
    )
    results = [_run_config(inputs, config) for config in configs]
    return {
        "device": device_name(device),
        "device_memory_gib": torch.cuda.get_device_properties(device).total_memory / GIB
        if device.type == "cuda"
        else None,
        "torch": torch.__version__,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "settings": {
            "model": clip.model_id,
            "weights": "random",
            "batch": batch,
            "frames": frames,
            "image_size": size,
            "classes": classes,
            "subtexts": artifact.meta.n_subtexts,
            "aggregation": "coarse+fine",
            "temporal_layers": temporal_layers,
            "steps": steps,
            "warmup_steps": warmup,
            "seed": seed,
        },
        "results": results,
    }


def memory_target(result: dict) -> dict | None:
    """The 9 GiB check, for BIKE's setting only; None for other settings or configs."""
    settings = result["settings"]
    if any(settings[key] != value for key, value in TARGET_SETTING.items()):
        return None
    record = next((r for r in result["results"] if r["config"] == TARGET_CONFIG.name), None)
    if record is None or record["peak_allocated_gib"] is None:
        return None
    peak = record["peak_allocated_gib"]
    return {
        "config": TARGET_CONFIG.name,
        "peak_allocated_gib": peak,
        "limit_gib": TARGET_PEAK_GIB,
        "met": record["status"] == "ok" and peak <= TARGET_PEAK_GIB,
    }


def failures(result: dict) -> list[str]:
    """One sentence per failed check; empty when all pass."""
    problems = []
    records = result["results"]
    for r in records:
        if r["status"] == "ok" and not r["losses_finite"]:
            problems.append(f"{r['config']}: a loss is not finite ({r['losses']}).")
        expected = 2 if r["grad_checkpointing"] else 1
        calls = r["block_forwards_per_step"]
        if calls is not None and calls != expected:
            problems.append(
                f"{r['config']}: the visual tower's blocks ran {calls:g} times a step, not "
                f"{expected}: gradient checkpointing is not doing what it was asked."
            )
    for amp in sorted({r["amp"] for r in records}):
        pair = {r["grad_checkpointing"]: r for r in records if r["amp"] == amp and r["losses"]}
        if len(pair) == 2:
            on, off = pair[True]["losses"][0], pair[False]["losses"][0]
            if not math.isclose(on, off, rel_tol=FIRST_LOSS_RTOL):
                problems.append(
                    f"{pair[True]['config']} gives a first loss of {on:.6g}, checkpointing "
                    f"off {off:.6g}: checkpointing must not change the forward pass."
                )
    target = memory_target(result)
    if target is not None and not target["met"]:
        record = next(r for r in records if r["config"] == target["config"])
        what = (
            "ran out of memory"
            if record["status"] == "OOM"
            else f"peaked at {target['peak_allocated_gib']:.2f} GiB"
        )
        problems.append(
            f"{target['config']} {what}; the target is at most {TARGET_PEAK_GIB:g} GiB "
            "(BIKE, ViT-B/16, 8 frames, batch 32)."
        )
    return problems


def default_output(result: dict) -> Path:
    """bench/gpu-check-<card>.json, with the setting in the name when it is not BIKE's."""
    name = result["device"]
    settings = result["settings"]
    if any(settings[key] != value for key, value in TARGET_SETTING.items()):
        name += f"-{settings['model']}-{settings['frames']}f-b{settings['batch']}"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return BENCH_DIR / f"gpu-check-{slug}.json"


def _gib(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def print_report(result: dict, console: Console) -> None:
    s = result["settings"]
    console.print(
        f"make gpu-check on {result['device']}, torch {result['torch']}: {s['model']} "
        f"({s['weights']} weights), {s['frames']} frames, batch {s['batch']}, {s['classes']} "
        f"classes x {s['subtexts']} sub-texts, {s['aggregation']}, {s['temporal_layers']} "
        f"temporal layers; {s['steps']} steps, the first {s['warmup_steps']} untimed"
    )
    # Peak GiB: allocated tensors, the target's measure (JSON has the allocator's reserve too).
    table = Table()
    for column in (
        "precision",
        "checkpointing",
        "status",
        "clips/s",
        "peak GiB",
        "blocks/step",
        "finite",
        "loss first -> last",
    ):
        table.add_column(column, no_wrap=True)
    for r in result["results"]:
        calls = r["block_forwards_per_step"]
        losses = r["losses"]
        table.add_row(
            "bf16" if r["amp"] == "bf16" else "fp32",
            "on" if r["grad_checkpointing"] else "off",
            r["status"],
            "" if r["clips_per_second"] is None else f"{r['clips_per_second']:.1f}",
            _gib(r["peak_allocated_gib"]),
            "" if calls is None else f"{calls:g}",
            "yes" if r["losses_finite"] else "NO",
            f"{losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "",
        )
    console.print(table)
    target = result.get("target")
    if target is not None:
        met = "met" if target["met"] else "NOT met"
        console.print(
            f"target: {target['config']} peaks at {target['peak_allocated_gib']:.2f} GiB "
            f"allocated (<= {target['limit_gib']:g} GiB): {met}"
        )


def print_parts(parts: list[dict], console: Console) -> None:
    table = Table()
    for column in ("part", "status", "s", "clips/s", "data wait", "workers", "why"):
        table.add_column(column, no_wrap=column != "why")
    for r in parts:
        figures = r["figures"]
        rate, wait = figures.get("clips_per_s"), figures.get("data_wait")
        table.add_row(
            r["part"],
            r["status"],
            f"{r['seconds']:.0f}",
            "" if rate is None else f"{rate:.1f}",
            "" if wait is None else f"{wait:.0%}",
            str(figures.get("workers", "")),
            "; ".join(r["failures"]) or r["skipped_because"] or "",
        )
    console.print(table)


STEPS_COVERS = "train_step of the full model: bf16 and fp32, checkpointing on and off, memory"


def steps_part(args: argparse.Namespace, device: torch.device) -> tuple[dict, dict]:
    """The step check as a part -> (its result, its record as `run_parts` writes them)."""
    started = time.perf_counter()
    if args.tiny:
        result = run_check(str(TINY_CLIP_CONFIG), device, configs=FP32_CONFIGS, **TINY_STEPS)
    else:
        result = run_check(
            args.model,
            device,
            batch=args.batch,
            frames=args.frames,
            steps=args.steps,
            warmup=args.warmup,
            classes=args.classes,
            configs=GPU_CONFIGS if device.type == "cuda" else FP32_CONFIGS,
            seed=args.seed,
        )
    _release(device)  # the runs that follow are other processes on the same card
    result["target"] = memory_target(result)
    problems = failures(result)
    record = part_record("steps", STEPS_COVERS)
    record.update(
        status="fail" if problems else "pass",
        seconds=time.perf_counter() - started,
        figures={"configurations": len(result["results"])},
        failures=problems,
    )
    return result, record


def _parser() -> argparse.ArgumentParser:
    """The flags of `python -m bench.gpu_check`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_check",
        description="make gpu-check: training steps of the video model (clips/s, peak memory, "
        "bf16 and fp32, gradient checkpointing on and off) and the trainer's CLI end to end "
        f"on a synthetic dataset, within {TOTAL_BUDGET_S} s on one GPU machine.",
    )
    parser.add_argument("--model", default="ViT-B-16", help="open_clip name or JSON config")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of timing")
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny CLIP and a handful of tiny clips (tests)"
    )
    parser.add_argument(
        "--only",
        help="comma-separated parts to run (and the parts they need): steps, "
        + ", ".join(part.name for part in PARTS),
    )
    parser.add_argument(
        "--ranks", type=int, help="torchrun processes (default: 2 with two GPUs or more, else none)"
    )
    parser.add_argument(
        "--work", type=Path, help="folder for the dataset and runs (default: temporary)"
    )
    parser.add_argument("--out", type=Path, help="JSON file (default bench/gpu-check-<card>.json)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check's parts and write the report -> the exit code (0: every part passed,
    1: a failure, 2: a mistake in the flags or no CUDA)."""
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if not 0 <= args.warmup < args.steps:
        print(f"--warmup ({args.warmup}) must be below --steps ({args.steps}).", file=sys.stderr)
        return 2
    names = {"steps", *(part.name for part in PARTS)}
    only = None if args.only is None else [n.strip() for n in args.only.split(",")]
    if only is not None and not set(only) <= names:
        unknown = ", ".join(sorted(set(only) - names))
        print(
            f"--only: no part {unknown}; the parts are {', '.join(sorted(names))}.", file=sys.stderr
        )
        return 2
    # Wide enough for the table's one-line rows when the output is piped (rich assumes 80).
    console = Console(width=max(Console().width, 110))
    started = time.perf_counter()
    if only is None or "steps" in only:
        with console.status("gpu-check: training steps"):
            result, steps_record = steps_part(args, device)
    else:
        result = {"device": device_name(device), "results": [], "target": None}
        steps_record = part_record("steps", STEPS_COVERS, "not asked for (--only)")
    ranks = args.ranks if args.ranks is not None else default_ranks(device.type)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        pipeline = Pipeline(device.type, TINY if args.tiny else GPU, work, ranks)
        with console.status("gpu-check: the trainer end to end"):
            parts = run_parts(pipeline, PARTS, time.perf_counter() - started, only)
    result["parts"] = [steps_record, *parts]
    result.update(
        device_count=torch.cuda.device_count() if device.type == "cuda" else 0,
        cores=cores(),
        setting="tiny" if args.tiny else "gpu",
        budget_s=TOTAL_BUDGET_S,
        seconds=time.perf_counter() - started,
    )
    result["failures"] = [
        f"{r['part']}: {problem}" for r in result["parts"] for problem in r["failures"]
    ]
    out = args.out or default_output(result)
    atomic_write_json(out, result)
    if result["results"]:
        print_report(result, console)
    print_parts(result["parts"], console)
    console.print(f"written: {out} ({result['seconds']:.0f} s)")
    for problem in result["failures"]:
        print(f"gpu-check failed: {problem}", file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
