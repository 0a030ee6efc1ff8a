"""The pipeline parts of `make gpu-check`: the real CLI end to end on a synthetic dataset.

Each part runs `python -m trainer ...` in subprocesses (as a user would) on a list dataset
this module writes: Kinetics-like H.264 clips (textured, panning, grain: `testkit.videos`)
at a short side of 256, copied to a few hundred names over 4 classes, with sub-texts scored
by the run's CLIP (random weights, saved as a checkpoint: nothing is downloaded). A part
returns its figures or raises `PartFailed` with one sentence; a part that fails does not
stop the others, but a part that needs another's output (the frame folders, the eager
run it is compared with) is skipped, saying why. Every part has a time budget on the GPU
(`Part.budget_s`), and the parts together stay within `TOTAL_BUDGET_S`: a part that would
start with less than its budget left is skipped, saying so.

The same code runs on the CPU (`device="cpu"`, `TINY`: the tiny CLIP, a handful of small
clips), which is how the tests exercise it; there `--amp` and `--decode-device` name the
code paths a GPU takes, computed on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from storyboard_common.clip import load_clip
from testkit.cli import TINY_CLIP_CONFIG, flag_args, module_command, module_env, run_module
from testkit.list_dataset import write_list_dataset
from testkit.torchrun import torchrun_trainer
from testkit.videos import write_kinetics_like
from trainer.data.dataset import loader_workers

# The whole check (step check and pipeline) stays under 8 minutes on one GPU machine.
TOTAL_BUDGET_S = 470
# The step check: 4 configurations x 6 steps of ViT-B/16 at batch 32, each building and
# moving its own model (~5 s) and stepping (~0.1-0.5 s a step): ~30 s, estimated.
STEPS_BUDGET_S = 45
CLASSES = ["pan left", "pan right", "zoom in", "zoom out"]
TINTS = [(1.0, 1.0, 1.0)] * len(CLASSES)  # unused: the clips are copies of textured sources


@dataclass(frozen=True)
class Sizes:
    """The synthetic dataset and the runs on it."""

    model: str  # --clip-model
    frames: int
    batch: int
    train_per_class: int
    test_per_class: int
    sources: int  # distinct source clips, copied round-robin to every video name
    source_size: tuple[int, int]  # height, width
    source_seconds: int  # at 30 fps
    views: int  # cache-features training views
    budgeted: bool  # hold each part to its GPU budget (not on the CPU's tiny setting)
    # Runs compared with the eager bf16 run agree in their first loss to this (relative):
    # bf16 kernels (compiled or not, split over ranks) differ in their rounding.
    loss_rtol: float

    @property
    def classes(self) -> int:
        return len(CLASSES)


# ViT-B/16 at 8 frames, batch 32: BIKE's setting. 384 training clips are 12 optimiser steps
# an epoch, enough for a loader rate past the workers' start (the first step of an epoch
# is left out); 16 distinct 3-second sources keep writing them to seconds.
GPU = Sizes("ViT-B-16", 8, 32, 96, 8, 16, (256, 340), 3, 2, True, 2e-2)
# The tiny CLIP, 2 frames, 6 training clips of 64x48: the same parts in seconds on a CPU.
TINY = Sizes(str(TINY_CLIP_CONFIG), 2, 2, 3, 1, 2, (48, 64), 1, 2, False, 1e-5)
TINY_TIMEOUT_S = 300  # a subprocess on the CPU (shared cores), budgets off


class PartFailed(Exception):
    """A part's check did not hold: one sentence saying what."""


@dataclass
class Pipeline:
    """What the parts share: the device, the sizes, the work folder, and what earlier parts
    made (dataset roots by name, run folders by part)."""

    device: str  # "cuda" or "cpu"
    sizes: Sizes
    work: Path
    ranks: int  # processes of the torchrun parts; below 2 they are skipped
    world: dict = field(default_factory=dict)
    roots: dict[str, Path] = field(default_factory=dict)
    runs: dict[str, Path] = field(default_factory=dict)
    timeout: float = TINY_TIMEOUT_S  # of the part now running

    def trainer(self, *args) -> subprocess.CompletedProcess:
        """`python -m trainer ARGS`; a non-zero exit fails the part with its last line."""
        done = run_module("trainer", *args, timeout=self.timeout)
        _check_exit(done, f"python -m trainer {args[0]}")
        return done

    def run_flags(self, root: str, out: Path, epochs: int) -> dict:
        """`run`'s flags on the synthetic dataset's `root` ("videos", "frames") into `out`, a
        step line every optimiser step, the result as JSON; the loader's workers at their
        default."""
        s = self.sizes
        return {
            "dataset": "list",
            "root": self.roots[root],
            "subtexts": self.world["subtexts"],
            "clip_model": s.model,
            "clip_pretrained": self.world["ckpt"],
            "frames": s.frames,
            "batch_size": s.batch,
            "epochs": epochs,
            "warmup_epochs": 0,
            "device": self.device,
            "seed": 0,
            "log_every": 1,
            "out": out,
            "json": True,
        }

    def run_args(self, root: str, out: Path, epochs: int, *extra) -> list:
        return ["run", *flag_args(self.run_flags(root, out, epochs)), *extra]

    def train(self, name: str, root: str, epochs: int, *extra) -> dict:
        """A `run` (part `name`) checked and summarised: `run_figures`."""
        out = self.work / name
        done = self.trainer(*self.run_args(root, out, epochs, *extra))
        self.runs[name] = out
        return run_figures(out, _json_line(done.stdout), self.test_videos)

    @property
    def train_videos(self) -> int:
        return self.sizes.classes * self.sizes.train_per_class

    @property
    def test_videos(self) -> int:
        return self.sizes.classes * self.sizes.test_per_class


def _check_exit(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        raise PartFailed(f"`{what}` exited with {done.returncode}: {lines[-1]}")


def _json_line(stdout: str) -> dict:
    """The last JSON object a `--json` command printed."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise PartFailed(f"no JSON result on stdout (it ends: {stdout[-200:]!r}).")
    return json.loads(lines[-1])


def _lines(path: Path) -> list[dict]:
    """The complete lines of a JSON-lines file (another process may be writing it)."""
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines(keepends=True) if x.endswith("\n")]


def steady_rates(steps: Sequence[dict]) -> dict:
    """Clips/s and the share of time spent waiting for data over `--log-every 1` step lines
    (steps.jsonl) of equal batches, leaving out each epoch's first step (it starts the
    loader's workers): a step's time is its batch over its clips/s, and both rates are
    totals over the total time. -> {clips_per_s, data_wait, steps}; None where no step is
    left."""
    kept = [x for x in steps if x["step"] > 1]
    if not kept:
        return {"clips_per_s": None, "data_wait": None, "steps": 0}
    seconds = [1.0 / x["clips_per_s"] for x in kept]  # per clip of the (equal) batch
    total = sum(seconds)
    return {
        "clips_per_s": len(kept) / total,
        "data_wait": sum(x["data_wait"] * t for x, t in zip(kept, seconds, strict=True)) / total,
        "steps": len(kept),
    }


def run_figures(out: Path, result: dict, test_videos: int) -> dict:
    """A finished run's figures (its steady loader rates, first and last step loss, the
    workers it used, its evaluation), failing the part on a non-finite loss or an
    evaluation that did not see every test video."""
    steps = _lines(out / "steps.jsonl")
    if not steps:
        raise PartFailed(f"{out / 'steps.jsonl'} holds no step lines.")
    losses = [x["loss"] for x in steps]
    if not all(math.isfinite(x) for x in losses):
        raise PartFailed(f"a step's loss is not finite ({losses}).")
    if result.get("n") != test_videos or not 0 <= result.get("top1", -1) <= 1:
        raise PartFailed(
            f"the evaluation saw {result.get('n')} of {test_videos} test videos "
            f"(top-1 {result.get('top1')})."
        )
    config = json.loads((out / "config.json").read_text())
    return {
        **steady_rates(steps),
        # None: the default, the cores of this one-process run (`loader_workers`)
        "workers": config.get("workers") or loader_workers(None),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "top1": result["top1"],
        "evaluated": result["n"],
    }


def _agree(name: str, value: float, reference: float, rtol: float, what: str) -> None:
    if not math.isclose(value, reference, rel_tol=rtol):
        raise PartFailed(
            f"{name}'s first loss is {value:.6g}, the eager bf16 run's {reference:.6g}: "
            f"more than {rtol:g} apart, {what}."
        )


def _drop_checkpoints(out: Path) -> None:
    """Free the disk a finished part's checkpoints hold (ViT-B/16: ~1.3 GB each)."""
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


# The parts, in the order they run.


def part_dataset(p: Pipeline) -> dict:
    s = p.sizes
    sources = p.work / "sources"
    sources.mkdir(parents=True)
    paths = [
        write_kinetics_like(sources / f"s{i}.mp4", i, s.source_size, s.source_seconds)
        for i in range(s.sources)
    ]
    per_class = s.train_per_class + s.test_per_class

    def copy(path: Path, c: int, i: int) -> None:
        shutil.copyfile(paths[(c * per_class + i) % len(paths)], path)

    torch.manual_seed(0)
    clip = load_clip(s.model, "none", "cpu")
    p.world = write_list_dataset(
        p.work / "raw", clip, s.model, CLASSES, TINTS, s.train_per_class, s.test_per_class, copy
    )
    p.roots["raw"] = p.world["root"]
    return {
        "train_videos": p.train_videos,
        "test_videos": p.test_videos,
        "source_clips": s.sources,
        "source_size": f"{s.source_size[1]}x{s.source_size[0]}",
        "source_frames": 30 * s.source_seconds,
        "source_bytes": sum(path.stat().st_size for path in paths),
    }


def _prepare(p: Pipeline, name: str, *to) -> dict:
    out = p.work / name
    done = p.trainer(
        "prepare-videos", "--dataset", "list", "--root", p.roots["raw"], "--out", out, "--json", *to
    )
    summary = _json_line(done.stdout)
    expected = p.train_videos + p.test_videos
    if summary["prepared"] != expected or summary["unreadable"] or summary["mismatched"]:
        raise PartFailed(
            f"prepared {summary['prepared']} of {expected} videos "
            f"(unreadable {summary['unreadable'][:3]}, mismatched {summary['mismatched'][:3]})."
        )
    p.roots[name] = out
    return {"bytes_ratio": summary["bytes_after"] / summary["bytes_before"]}


def part_prepare_videos(p: Pipeline) -> dict:
    return _prepare(p, "videos")


def part_prepare_frames(p: Pipeline) -> dict:
    return _prepare(p, "frames", "--to", "frames")


def part_loader_videos(p: Pipeline) -> dict:
    """bf16 (the default --amp), 2 epochs from the video copies, evaluated after each: the
    loader's rate, and the straight run the resume part is compared with."""
    return p.train("loader_videos", "videos", 2)


def part_loader_frames(p: Pipeline) -> dict:
    figures = p.train("loader_frames", "frames", 1)
    _drop_checkpoints(p.runs["loader_frames"])
    return figures


def part_decode_device(p: Pipeline) -> dict:
    figures = p.train("decode_device", "frames", 1, "--decode-device", p.device)
    _drop_checkpoints(p.runs["decode_device"])
    return figures


def part_fp16(p: Pipeline) -> dict:
    figures = p.train("fp16", "videos", 1, "--amp", "fp16")
    _drop_checkpoints(p.runs["fp16"])
    return figures


def part_compile(p: Pipeline) -> dict:
    figures = p.train("compile", "videos", 1, "--compile")
    _drop_checkpoints(p.runs["compile"])
    eager = _lines(p.runs["loader_videos"] / "steps.jsonl")[0]["loss"]
    _agree("the compiled run", figures["first_loss"], eager, p.sizes.loss_rtol, "same clips")
    return {**figures, "eager_first_loss": eager}


def part_resume(p: Pipeline) -> dict:
    """The straight 2-epoch run against one stopped by Ctrl-C (SIGINT) once its first epoch
    is logged, then resumed with --resume: the same per-epoch training losses."""
    out = p.work / "resume"
    args = p.run_args("videos", out, 2)
    started = time.monotonic()
    process = subprocess.Popen(
        module_command("trainer", *args),
        env=module_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # the resumed run's exit and output are the ones checked
    )
    metrics = out / "metrics.jsonl"
    while process.poll() is None and time.monotonic() - started < p.timeout:
        if any("train_loss" in x for x in _lines(metrics)):
            process.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    try:
        process.wait(timeout=max(p.timeout - (time.monotonic() - started), 1))
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    trained = [x for x in _lines(metrics) if "train_loss" in x]
    if len(trained) >= 2 or not (out / "checkpoints" / "last.pt").exists():
        raise PartFailed(
            f"the run was not stopped inside its second epoch (exit {process.returncode}, "
            f"{len(trained)} epochs trained): nothing to resume."
        )
    p.timeout -= time.monotonic() - started
    p.trainer(*args, "--resume")
    p.runs["resume"] = out
    straight = _train_losses(p.runs["loader_videos"])
    resumed = _train_losses(out)
    if len(resumed) != len(straight) or not all(
        math.isclose(a, b, rel_tol=p.sizes.loss_rtol)
        for a, b in zip(straight, resumed, strict=True)
    ):
        raise PartFailed(
            f"the resumed run's epoch losses {resumed} differ from the straight run's {straight}."
        )
    _drop_checkpoints(out)
    return {"straight_epoch_losses": straight, "resumed_epoch_losses": resumed}


def _train_losses(out: Path) -> list[float]:
    return [x["train_loss"] for x in _lines(out / "metrics.jsonl") if "train_loss" in x]


def _cache_flags(p: Pipeline, out: Path) -> dict:
    s = p.sizes
    return {
        "dataset": "list",
        "root": p.roots["videos"],
        "clip_model": s.model,
        "clip_pretrained": p.world["ckpt"],
        "frames": s.frames,
        "views": s.views,
        "batch_size": s.batch,
        "device": p.device,
        "out": out,
        "json": True,
    }


def _check_cache(p: Pipeline, summary: dict) -> dict:
    expected = {"train": p.train_videos * p.sizes.views, "test": p.test_videos}
    encoded = {split: summary["encoded"].get(split) for split in expected}
    if encoded != expected:
        raise PartFailed(f"the cache holds {encoded} views, not {expected}.")
    return {
        "views_encoded": encoded,
        "cache_seconds": summary["seconds"],
        "bytes": summary["bytes"],
    }


def part_cache_features(p: Pipeline) -> dict:
    """`cache-features` from the video copies, then a frozen run from the cache."""
    cache = p.work / "cache"
    done = p.trainer("cache-features", *flag_args(_cache_flags(p, cache)))
    figures = _check_cache(p, _json_line(done.stdout))
    p.roots["cache"] = cache
    run = p.train("features", "videos", 2, "--freeze-backbone", "--features", cache)
    _drop_checkpoints(p.runs["features"])
    return {**figures, "run_from_features": run}


def part_torchrun_run(p: Pipeline) -> dict:
    """`run` by `torchrun` ranks (NCCL on GPUs) with the eager run's global batch."""
    out = p.work / "torchrun_run"
    flags = p.run_flags("videos", out, 1)
    done = torchrun_trainer(p.ranks, "run", flags, timeout=p.timeout)
    _check_exit(done, f"torchrun --nproc_per_node {p.ranks} -m trainer run")
    figures = run_figures(out, _json_line(done.stdout), p.test_videos)
    _drop_checkpoints(out)
    eager = _lines(p.runs["loader_videos"] / "steps.jsonl")[0]["loss"]
    _agree(f"the {p.ranks}-rank run", figures["first_loss"], eager, p.sizes.loss_rtol, "same batch")
    return {**figures, "ranks": p.ranks, "eager_first_loss": eager}


def part_torchrun_cache(p: Pipeline) -> dict:
    """`cache-features` by `torchrun` ranks: the views the one-process cache holds."""
    flags = _cache_flags(p, p.work / "torchrun_cache")
    done = torchrun_trainer(p.ranks, "cache-features", flags, timeout=p.timeout)
    _check_exit(done, f"torchrun --nproc_per_node {p.ranks} -m trainer cache-features")
    return {**_check_cache(p, _json_line(done.stdout)), "ranks": p.ranks}


@dataclass(frozen=True)
class Part:
    name: str
    covers: str  # what the report says it checks
    run: Callable[[Pipeline], dict]
    budget_s: int  # on one H100 or H200 (ViT-B/16, 16 cores), with room to spare
    needs: tuple[str, ...] = ()  # parts whose outputs it uses
    ranks: bool = False  # a torchrun part: two or more GPUs


# Budgets on one H100 or H200 (16 cores), estimated, not yet measured: a `python -m trainer`
# start with ViT-B/16 (imports, a 0.6 GB checkpoint, CUDA) ~10 s; an epoch of 384 clips at
# the loader's ~15 clips/s per core from video copies ~2-3 s; checkpoints of ~1.3 GB ~2 s
# each; re-encoding or extracting 416 3-second clips on 16 cores ~10-15 s; inductor
# compiling ViT-B/16's training and evaluation graphs ~60-80 s. Each budget is about twice
# the estimate, the compile's less; with the step check's `STEPS_BUDGET_S` the parts of one
# GPU fit `TOTAL_BUDGET_S`, and the torchrun parts run in what they leave (a part that
# would start with less than its budget left is skipped, saying so).
PARTS = (
    Part("dataset", "the synthetic list dataset, its sub-texts and CLIP", part_dataset, 30),
    Part("prepare_videos", "prepare-videos (video copies)", part_prepare_videos, 30, ("dataset",)),
    Part(
        "loader_videos",
        "run from video copies, bf16, 2 epochs with evaluation: loader rate",
        part_loader_videos,
        45,
        ("prepare_videos",),
    ),
    Part("fp16", "run --amp fp16", part_fp16, 30, ("prepare_videos",)),
    Part("resume", "Ctrl-C and --resume", part_resume, 50, ("loader_videos",)),
    Part(
        "cache_features",
        "cache-features, then run --features",
        part_cache_features,
        45,
        ("prepare_videos",),
    ),
    Part("prepare_frames", "prepare-videos --to frames", part_prepare_frames, 30, ("dataset",)),
    Part("loader_frames", "run from frame folders", part_loader_frames, 30, ("prepare_frames",)),
    Part(
        "decode_device",
        "run from frame folders --decode-device (JPEG decode on the device)",
        part_decode_device,
        30,
        ("prepare_frames",),
    ),
    Part("compile", "run --compile", part_compile, 100, ("loader_videos",)),
    Part("torchrun_run", "torchrun run (NCCL)", part_torchrun_run, 40, ("loader_videos",), True),
    Part(
        "torchrun_cache",
        "torchrun cache-features",
        part_torchrun_cache,
        35,
        ("cache_features",),
        True,
    ),
)


def part_record(name: str, covers: str, skipped_because: str | None = None) -> dict:
    """A part's record as the report holds it, before it runs: skipped, no figures."""
    return {
        "part": name,
        "covers": covers,
        "status": "skipped",
        "seconds": 0.0,
        "figures": {},
        "failures": [],
        "skipped_because": skipped_because,
    }


def run_parts(
    pipeline: Pipeline,
    parts: Sequence[Part] = PARTS,
    spent_s: float = 0.0,
    only: Sequence[str] | None = None,
) -> list[dict]:
    """Each part in turn -> one record each: name, covers, status ("pass", "fail" or
    "skipped"), seconds, figures, failures (one sentence each) or why it was skipped. `spent_s`:
    the budget the step check already used; `only`: the parts to run (their needs too)."""
    records: list[dict] = []
    status: dict[str, str] = {}
    wanted = _with_needs(parts, only)
    for part in parts:
        record = part_record(part.name, part.covers)
        records.append(record)
        left = TOTAL_BUDGET_S - spent_s
        unmet = [n for n in part.needs if status.get(n) != "pass"]
        if part.name not in wanted:
            record["skipped_because"] = "not asked for (--only)"
        elif part.ranks and pipeline.ranks < 2:
            record["skipped_because"] = (
                f"needs 2 or more {'GPUs' if pipeline.device == 'cuda' else 'ranks'}; "
                f"{pipeline.ranks} here"
            )
        elif unmet:
            record["skipped_because"] = f"needs {', '.join(unmet)}, which did not pass"
        elif pipeline.sizes.budgeted and left < part.budget_s:
            record["skipped_because"] = (
                f"{left:.0f} s of the {TOTAL_BUDGET_S} s budget left, it needs {part.budget_s}"
            )
        else:
            limit = min(part.budget_s, left) if pipeline.sizes.budgeted else TINY_TIMEOUT_S
            pipeline.timeout = limit
            started = time.perf_counter()
            try:
                record["figures"] = part.run(pipeline)
                record["status"] = "pass"
            except PartFailed as exc:
                record.update(status="fail", failures=[str(exc)])
            except subprocess.TimeoutExpired:
                record.update(status="fail", failures=[f"ran past its {limit:.0f} s limit."])
            except Exception as exc:  # a part's crash is its failure, not the check's
                record.update(status="fail", failures=[f"{type(exc).__name__}: {exc}"])
            record["seconds"] = time.perf_counter() - started
            spent_s += record["seconds"]
        status[part.name] = record["status"]
    return records


def _with_needs(parts: Sequence[Part], only: Sequence[str] | None) -> set[str]:
    by_name = {part.name: part for part in parts}
    if only is None:
        return set(by_name)
    wanted, todo = set(), list(only)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(by_name[name].needs if name in by_name else ())  # "steps": gpu_check's
    return wanted


def default_ranks(device: str) -> int:
    """The torchrun parts' processes: 2 where there are two GPUs or more, else 1 (skipped)."""
    return 2 if device == "cuda" and torch.cuda.device_count() >= 2 else 1


def cores() -> int:
    return len(os.sched_getaffinity(0))
