"""Training and evaluation loops: AMP, accumulation, DDP, checkpoints, exact resume.

A run directory holds `config.json`, `fewshot.csv` (few-shot runs), `metrics.jsonl`,
`checkpoints/last.pt` and `checkpoints/best.pt` (written atomically), and the evaluation
outputs `per_class_accuracy.csv` and `predictions.parquet`. Data randomness is keyed by
(seed, epoch, item), and a checkpoint records the epoch and the step inside it, so
`--resume` continues exactly where a run stopped; Ctrl-C finishes the current optimiser
step, saves `last.pt` and exits.

`cache_features` encodes a fold once with the frozen visual tower (`trainer/features.py`);
a run with `features` set reads its batches from that cache through the same loops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from storyboard_common.errors import UserError
from storyboard_common.files import artifacts_root, atomic_write_text, os_reason
from subtext_gen.artifacts import SUBTEXTS_FILE, clip_tag, read_subtexts
from subtext_gen.clip_text import LoadedClip, clip_identity, load_clip

from . import metrics
from .checkpoints import (
    CLIP_CONFIG_FILE,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    HUB_PREFIX,
    WEIGHTS_FILE,
    atomic_save,
    hub_snapshot,
    is_export,
    load_checkpoint,
    model_card,
    plain,
    read_export,
    subtext_source,
    write_export,
)
from .config import RunConfig, resume_differences
from .data.dataset import (
    ClipSpec,
    EpochSampler,
    Skipped,
    VideoClipDataset,
    make_loader,
    short_videos,
)
from .data.items import SplitList
from .data.layouts import folds, load_split, test_split
from .data.protocols import fewshot_items, load_item_list, repeat_factor, save_item_list
from .distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_min,
    all_reduce_sum,
    barrier,
    gather_objects,
    gather_with_grad,
    init_distributed,
    main_first,
)
from .features import (
    DTYPES,
    SHARD_ROWS,
    TEST,
    TRAIN,
    CacheWriter,
    FeatureCache,
    FeatureDataset,
    cache_identity,
    read_meta,
)
from .loss import storyboard_loss
from .model.aggregation import ClassText
from .model.video_clip import VideoCLIP, build_model, encode_frames, param_groups
from .report import write_report

DATA_ENV = "STORYBOARD_DATA"


# ---------------------------------------------------------------- paths and set-up


def default_root(dataset: str) -> Path:
    base = os.environ.get(DATA_ENV)
    if not base:
        raise UserError(f"pass --root (the {dataset} folder) or set {DATA_ENV}=DIR.")
    return Path(base) / dataset


def default_subtexts(dataset: str, clip_model: str, clip_pretrained: str) -> Path:
    tag = clip_tag(*clip_identity(clip_model, clip_pretrained))
    return artifacts_root() / dataset / tag / SUBTEXTS_FILE


def default_features_dir(dataset: str, fold: int | None, clip_id: tuple[str, str],
                         frames: int) -> Path:  # fmt: skip
    fold_part = f"-split{fold}" if fold is not None else ""
    return (artifacts_root() / "features"
            / f"{dataset}{fold_part}-{clip_tag(*clip_id)}-f{frames}")  # fmt: skip


def default_run_dir(cfg: RunConfig) -> Path:
    shots = f"-{cfg.shots}shot" if cfg.shots else ""
    return Path("runs") / f"{cfg.dataset}{shots}-split{cfg.split}-{cfg.aggregation}-seed{cfg.seed}"


def writable_dir(path: Path, flag: str = "--out") -> None:
    """Create `path` and prove a file can be written in it: a one-sentence UserError before
    any work if not (read-only folder, a file in the way, no space)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(
            f"{flag} {path} cannot be written ({os_reason(exc)}): pass a folder you "
            "can write to."
        ) from exc


def check_resume(cfg: RunConfig, out: Path, state: dict) -> None:
    """Refuse to resume the run in `out` with settings other than those it ran with (its
    config.json, else the checkpoint's), except those of `RESUME_MAY_CHANGE`."""
    saved = state["config"]
    path = out / "config.json"
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(path.read_text(encoding="utf-8"))
    differences = resume_differences(plain(saved), plain(dataclasses.asdict(cfg)))
    if differences:
        raise UserError(
            f"--resume: {out} was trained with other settings ({', '.join(differences)}); "
            f"resume with the flags of its config.json, or start a new run with another --out."
        )


def keep_logged_epochs(path: Path, epochs: int) -> None:
    """Drop the lines of `metrics.jsonl` for epochs after the first `epochs` (those the
    checkpoint being resumed had not completed, which the run now repeats), and lines cut
    short by a kill."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            epoch = json.loads(line).get("epoch")
        except (ValueError, AttributeError):
            continue
        if isinstance(epoch, int) and epoch <= epochs:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def check_clip_lengths(cfg: RunConfig, data: RunData) -> None:
    """Before training: refuse when every probed training (or test) video is shorter than
    `--frames` (an epoch would read no clip); warn when some are."""
    train_items = data.fewshot if data.fewshot is not None else data.train.items
    for what, items in (("training", train_items), ("test", data.test.items)):
        short, opened = short_videos(items, cfg.frames, workers=max(1, cfg.workers))
        if not short:
            continue
        item, length = short[0]
        counted = f"{len(short)} of the {opened} {what} videos probed"
        if len(short) == opened:
            raise UserError(
                f"{counted} are shorter than --frames {cfg.frames} (e.g. {item.path} has "
                f"{length} frames): lower --frames, or list the short videos with `python -m "
                f"trainer check-data --frames {cfg.frames}`."
            )
        warnings.warn(
            f"{counted} are shorter than --frames {cfg.frames} (e.g. {item.path} has {length} "
            "frames) and will be skipped; `python -m trainer check-data` lists them.",
            stacklevel=2,
        )


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def autocast(device: torch.device, amp: str):
    """bf16 or fp16 autocast on CUDA; CPU runs fp32."""
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# ---------------------------------------------------------------- data


@dataclass
class RunData:
    train: SplitList
    test: SplitList
    train_items: list  # after few-shot selection and repetition
    fewshot: list | None


def prepare_data(cfg: RunConfig, root: Path, fold: int | None) -> RunData:
    train = load_split(cfg.dataset, root, "train", fold, cfg.videos, cfg.charades_instances)
    test = load_split(cfg.dataset, root, test_split(cfg.dataset), fold, cfg.videos, False)
    items, chosen = list(train.items), None
    if cfg.fewshot_list is not None:
        chosen = load_item_list(cfg.fewshot_list, train)
    elif cfg.shots:
        chosen = fewshot_items(train, cfg.shots, cfg.seed)
    if chosen is not None:
        target = cfg.fewshot_epoch_len or len(train.items)
        items = chosen * repeat_factor(len(chosen), target)
    if not items:
        raise UserError(f"the {cfg.dataset} train split under {root} has no videos on disk.")
    return RunData(train, test, items, chosen)


def clip_datasets(
    cfg: RunConfig, train: SplitList, train_items: list, test: SplitList, size: int
) -> tuple[VideoClipDataset, VideoClipDataset]:
    """A run's training clips (of `train_items`, drawn from the `train` split) and test clips
    (every view of every test video), for a CLIP of input size `size`."""
    train_spec = ClipSpec(frames=cfg.frames, train=True, size=size)
    test_spec = ClipSpec(frames=cfg.frames, train=False, clips=cfg.eval_clips,
                         crops=cfg.eval_crops, size=size, short_side=size)  # fmt: skip
    num_classes = len(train.class_names)
    return (VideoClipDataset(train_items, num_classes, train.multi_label, train_spec, cfg.seed),
            VideoClipDataset(test.items, num_classes, test.multi_label, test_spec))  # fmt: skip


def cached_datasets(
    cfg: RunConfig, data: RunData, fold: int | None, built: Built
) -> tuple[FeatureDataset, FeatureDataset]:
    """A run's training and test sets read from the feature cache `cfg.features`, which
    must have been made for this fold, CLIP and clip settings."""
    train_set, test_set = clip_datasets(cfg, data.train, list(data.train.items), data.test,
                                        built.spec_size)  # fmt: skip
    identity = cache_identity(cfg.dataset, fold, built.clip_id, train_set, test_set)
    cache = FeatureCache(cfg.features, identity, {TRAIN: len(train_set), TEST: len(test_set)})
    position = {item: p for p, item in enumerate(data.train.items)}
    num_classes = len(data.train.class_names)
    unique = len(data.fewshot) if data.fewshot is not None else len(data.train_items)
    train = FeatureDataset(cache, TRAIN, data.train_items,
                           [position[item] for item in data.train_items], num_classes,
                           data.train.multi_label, unique)  # fmt: skip
    test = FeatureDataset(cache, TEST, data.test.items, range(len(data.test.items)),
                          num_classes, data.test.multi_label)  # fmt: skip
    return train, test


def check_classes(split: SplitList, class_names: list[str], artifact_path: Path) -> None:
    """The artifact's classes must be the dataset's, in the same order."""
    if list(split.class_names) == list(class_names):
        return
    only_data = sorted(set(split.class_names) - set(class_names))
    only_art = sorted(set(class_names) - set(split.class_names))
    detail = (
        f"only in the dataset: {only_data[:10] or 'none'}; only in the artifact: "
        f"{only_art[:10] or 'none'}"
        if only_data or only_art
        else "same names in another order"
    )
    raise UserError(
        f"{artifact_path} holds other classes than {split.dataset} ({detail}); "
        "generate and score sub-texts for this dataset."
    )


# ---------------------------------------------------------------- the steps


def train_epoch(
    model, text: ClassText, loader, optimizer, scheduler, scaler, cfg: RunConfig,
    dist_info: DistInfo, accumulation: int, start: dict, stop_flag: dict, progress, task,
) -> dict:  # fmt: skip
    """One epoch, continuing from `start` (batches done, loss sum, clip count, skipped);
    returns the same counters at the end, with `stopped` set if Ctrl-C cut it short."""
    model.train()
    device = dist_info.device
    total, count = start["loss_sum"], start["clips"]
    skipped, step = start["skipped"], start["step"]
    optimizer.zero_grad(set_to_none=True)
    batches = iter(loader)
    stopped = False
    while True:
        group = []
        for _ in range(accumulation):
            batch = next(batches, None)
            if batch is None:
                break
            group.append(batch)
        if not group:
            break
        # A micro-batch runs only where every rank has videos in it: the collectives
        # below must be entered by all ranks or none.
        live = all_reduce_min(
            torch.tensor([len(b["video_ids"]) > 0 for b in group], device=device).int()
        )
        runs = int(live.sum())
        for batch, alive in zip(group, live.tolist()):
            skipped += len(batch["skipped"])
            if not alive:
                continue
            inputs = model_inputs(batch, device)
            labels = batch["labels"].to(device, non_blocking=True)
            with autocast(device, cfg.amp):
                logits = model(inputs, text)["logits"]
            # The loss sees the global batch; each rank back-propagates its own rows, so
            # scaling by world size gives the single-process gradient after DDP's mean.
            all_logits = gather_with_grad(logits.float())
            all_labels = gather_with_grad(labels)
            loss = storyboard_loss(all_logits, all_labels, cfg.lam)
            scaler.scale(loss * dist_info.world / runs).backward()
            total += loss.item() * len(batch["video_ids"])
            count += len(batch["video_ids"])
        if runs:
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += len(group)
        progress.update(task, advance=len(group), info=f"loss {total / max(count, 1):.4f}")
        # Ctrl-C on any rank stops every rank after the same optimiser step.
        if all_reduce_max(torch.tensor(int(stop_flag["stop"]), device=device)).item():
            stopped = True
            break
    return {"step": step, "loss_sum": total, "clips": count, "skipped": skipped,
            "stopped": stopped}  # fmt: skip


def model_inputs(batch: dict, device: torch.device) -> torch.Tensor:
    """A batch's clips, or its cached frame features, on the device."""
    inputs = batch["features"] if "features" in batch else batch["frames"]
    return inputs.to(device, non_blocking=True)


@torch.inference_mode()
def predict(model, text: ClassText, loader, dist_info: DistInfo, amp: str, progress=None):
    """Per-video probabilities (views averaged), labels and ids, gathered from all ranks."""
    model.eval()
    scores, labels, ids, skipped = [], [], [], 0
    task = progress.add_task("evaluate", total=len(loader), info="") if progress else None
    for batch in loader:
        skipped += len(batch["skipped"])
        if len(batch["video_ids"]):
            with autocast(dist_info.device, amp):
                logits = model(model_inputs(batch, dist_info.device), text)["logits"]
            scores.append(logits.float().cpu())
            labels.append(batch["labels"])
            ids.extend(batch["video_ids"])
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    if dist_info.enabled:
        gathered = gather_objects((scores, labels, ids, skipped), dist_info)
        scores = [s for part in gathered for s in part[0]]
        labels = [lab for part in gathered for lab in part[1]]
        ids = [i for part in gathered for i in part[2]]
        skipped = sum(part[3] for part in gathered)
    if not ids:
        raise UserError("no test video could be read: check the data with `trainer check-data`.")
    logits = torch.cat(scores).numpy()
    label_rows = torch.cat(labels).numpy()
    first = {}
    for row, vid in enumerate(ids):  # one label row per video (views share it)
        first.setdefault(vid, row)
    video_probs, video_ids = metrics.average_views(logits, ids)  # softmax, then view mean
    video_labels = label_rows[[first[v] for v in video_ids]]
    return video_probs, video_labels, video_ids, skipped


def score_predictions(probs, labels, num_classes: int, multi_label: bool) -> dict:
    if multi_label:  # top-k: one of the k best classes is a positive
        ranked = np.argsort(-probs, axis=1)[:, :5]
        hits = np.take_along_axis(labels > 0, ranked, axis=1)
        mean_ap = metrics.mean_average_precision(probs, labels)  # NaN: no positives at all
        return {"top1": float(hits[:, :1].any(1).mean()), "top5": float(hits.any(1).mean()),
                "mean_class_acc": None, "map": None if np.isnan(mean_ap) else mean_ap,
                "n": len(probs)}  # fmt: skip
    return {
        **metrics.topk_accuracy(probs, labels, (1, 5)),
        "mean_class_acc": metrics.mean_class_accuracy(probs, labels, num_classes),
        "map": None,
        "n": len(probs),
    }


def write_eval_outputs(out: Path, probs, labels, ids, class_names, multi_label: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not multi_label:
        acc = metrics.per_class_accuracy(probs, labels, len(class_names))
        pd.DataFrame({"class_id": range(len(class_names)), "class_name": class_names,
                      "top1": acc}).to_csv(out / "per_class_accuracy.csv", index=False)  # fmt: skip
    top5 = np.argsort(-probs, axis=1)[:, :5]
    frame = pd.DataFrame(
        {
            "video_id": ids,
            "label": [list(map(int, np.flatnonzero(r))) for r in labels]
            if multi_label
            else labels.astype(int),
            "pred": probs.argmax(1).astype(int),
            "top5": [list(map(int, r)) for r in top5],
            "prob": [p.astype(np.float32) for p in probs],
        }
    )
    frame.to_parquet(out / "predictions.parquet.tmp", index=False)
    (out / "predictions.parquet.tmp").replace(out / "predictions.parquet")


# ---------------------------------------------------------------- a run


@dataclass
class Built:
    model: VideoCLIP
    text: ClassText
    spec_size: int
    clip_id: tuple[str, str]  # what artifacts record for the CLIP (`clip_identity`)
    clip_name: str  # the name open_clip builds the architecture by


def build(cfg: RunConfig, dist_info: DistInfo, subtexts: Path,
          clip: LoadedClip | None = None) -> Built:  # fmt: skip
    """The run's model over its CLIP (`cfg.clip_model` with `cfg.clip_pretrained`, unless
    `clip` is given) and the class texts of `subtexts`, on the run's device."""
    artifact = read_subtexts(subtexts)
    clip = clip or load_clip(cfg.clip_model, cfg.clip_pretrained, str(dist_info.device))
    model, text = build_model(
        clip, artifact, subtexts,
        aggregation=cfg.aggregation, temporal_layers=cfg.temporal_layers,
        attention_heads=cfg.attention_heads, tau_coarse=cfg.tau_coarse, tau_fine=cfg.tau_fine,
        frames=cfg.frames, freeze_backbone=cfg.freeze_backbone,
        grad_checkpointing=cfg.grad_checkpointing,
    )  # fmt: skip
    return Built(model.to(dist_info.device), text.to(dist_info.device), clip.image_size,
                 (clip.model_id, clip.pretrained_id), clip.model_name)  # fmt: skip


def lr_lambda(total_steps: int, warmup_steps: int):
    """Linear warm-up, then cosine decay to zero, per optimiser step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def train(cfg: RunConfig, resume: bool = False, show_progress: bool = True) -> dict:
    """Train (and evaluate) one fold; returns the best evaluation metrics."""
    dist_info = init_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    root = cfg.root or default_root(cfg.dataset)
    fold = folds(cfg.dataset, cfg.split)[0]
    out = cfg.out or default_run_dir(cfg)
    ckpt_dir = out / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    if last_path.exists() and not resume:
        raise UserError(
            f"{out} already holds a run: pass --resume to continue it or another --out."
        )
    state = None
    if resume and last_path.exists():  # (--split all: later folds start fresh)
        other = ckpt_dir / "best.pt"
        hint = (f"copy {other} over it to resume from the best epoch, or start over with "
                "another --out" if other.exists() else "start over with another --out")  # fmt: skip
        state = load_checkpoint(last_path, dist_info.device, hint)
        check_resume(cfg, out, state)
    elif resume and dist_info.is_main:
        print(f"no checkpoint in {ckpt_dir}: starting fresh", file=sys.stderr)
    if dist_info.is_main:
        writable_dir(out)
    subtexts = cfg.subtexts or default_subtexts(cfg.dataset, cfg.clip_model, cfg.clip_pretrained)
    data = prepare_data(cfg, root, fold)
    if cfg.features is None and dist_info.is_main:
        check_clip_lengths(cfg, data)
    built = build(cfg, dist_info, subtexts)
    check_classes(data.train, read_subtexts(subtexts).class_names, subtexts)
    model, text = built.model, built.text

    if cfg.features is None:
        train_set, test_set = clip_datasets(cfg, data.train, data.train_items, data.test,
                                            built.spec_size)  # fmt: skip
    else:
        train_set, test_set = cached_datasets(cfg, data, fold, built)
    num_classes = len(data.train.class_names)
    test_views = cfg.eval_clips * cfg.eval_crops
    # A cached view is a copy out of the page cache: cheaper than handing the batch over
    # from a worker process (which doubled a cached epoch in `make bench`).
    workers = cfg.workers if cfg.features is None else 0
    micro = cfg.micro_batch or max(1, cfg.batch_size // dist_info.world)
    accumulation = max(1, math.ceil(cfg.batch_size / (micro * dist_info.world)))
    clips_per_step = micro * dist_info.world
    if dist_info.is_main and cfg.batch_size > clips_per_step:
        # Accumulation sums gradients, but each step's loss only contrasts the clips of that
        # step: the paper's batch-wide contrast needs the whole batch in one step.
        warnings.warn(
            f"--batch-size {cfg.batch_size} is more than --micro-batch {micro} x "
            f"{dist_info.world} process(es): the gradient is accumulated over {accumulation} "
            "steps, but the loss's class-to-video contrast (Eq. 13, a softmax over the clips "
            f"of a step) sees {clips_per_step} clips per step, not the batch size "
            f"{cfg.batch_size}. Raise --micro-batch (or the number of processes) to contrast "
            "whole batches.",
            stacklevel=2,
        )
    sampler = EpochSampler(len(train_set), True, cfg.seed, dist_info.rank, dist_info.world)
    train_loader = make_loader(train_set, micro, sampler, workers)
    test_sampler = EpochSampler(len(test_set), False, 0, dist_info.rank, dist_info.world)
    test_loader = make_loader(test_set, max(1, micro // test_views), test_sampler, workers)

    ddp_model = model
    if dist_info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist_info.device.index] if dist_info.device.type == "cuda" else None
        )
    if cfg.compile:
        ddp_model = torch.compile(ddp_model)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.backbone_lr_scale,
                                               cfg.weight_decay), lr=cfg.lr)  # fmt: skip
    steps_per_epoch = max(1, math.ceil(len(train_loader) / accumulation))  # optimiser steps
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, max(warmup, 1)))
    scaler = torch.amp.GradScaler(
        "cuda", enabled=dist_info.device.type == "cuda" and cfg.amp == "fp16"
    )

    fresh = {"step": 0, "loss_sum": 0.0, "clips": 0, "skipped": 0}
    epoch, position, best = 0, dict(fresh), None
    layout = {"micro_batch": micro, "world": dist_info.world, "accumulation": accumulation}
    if state is not None:
        if state["layout"] != layout:
            raise UserError(
                f"{ckpt_dir / 'last.pt'} was trained with {state['layout']}, not {layout}: "
                "resume with the same --batch-size, --micro-batch and number of processes."
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), dist_info.device)
        epoch, position, best = state["epoch"], state["position"], state["best"]
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        # config.json describes the run as it began; a resume (same settings, checked
        # above) leaves it as it is.
        if state is None or not (out / "config.json").exists():
            atomic_write_text(out / "config.json",
                              json.dumps(plain(dataclasses.asdict(cfg)), indent=2) + "\n")
        keep_logged_epochs(out / "metrics.jsonl", epoch)
        if data.fewshot is not None:
            save_item_list(data.fewshot, out / "fewshot.csv")

    stop = {"stop": False}
    previous = signal.signal(signal.SIGINT, lambda *_: stop.update(stop=True))
    log = open(out / "metrics.jsonl", "a", encoding="utf-8") if dist_info.is_main else None  # noqa: SIM115

    def save(name: str) -> None:
        if dist_info.is_main:
            atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                         "torch_rng": torch.get_rng_state(), "layout": layout,
                         "cuda_rng": torch.cuda.get_rng_state(dist_info.device)
                         if dist_info.device.type == "cuda" else None,
                         "epoch": epoch, "position": position,
                         "best": best, "config": plain(dataclasses.asdict(cfg))},
                        ckpt_dir / f"{name}.pt")  # fmt: skip

    try:
        with progress_bar(show_progress and dist_info.is_main) as progress:
            while epoch < cfg.epochs:
                done = position["step"]
                sampler.set_epoch(epoch, start=done * micro)  # batches -> this rank's items
                task = progress.add_task(
                    f"epoch {epoch + 1}/{cfg.epochs}",
                    total=done + len(train_loader),
                    completed=done,
                    info="",
                )
                started = time.perf_counter()
                position = train_epoch(
                    ddp_model, text, train_loader, optimizer, scheduler, scaler, cfg, dist_info,
                    accumulation, position, stop, progress, task)  # fmt: skip
                progress.remove_task(task)
                if position.pop("stopped"):
                    save("last")
                    raise KeyboardInterrupt
                skipped = int(
                    all_reduce_sum(torch.tensor(position["skipped"], device=dist_info.device))
                )
                clips = int(
                    all_reduce_sum(torch.tensor(position["clips"], device=dist_info.device))
                )
                if clips == 0:  # never a loss of 0.0 for an epoch that trained nothing
                    raise UserError(
                        f"epoch {epoch + 1} read no training clip: all {skipped} videos were "
                        f"skipped (unreadable, or shorter than --frames {cfg.frames}); check "
                        "them with `python -m trainer check-data`."
                    )
                loss = position["loss_sum"] / max(position["clips"], 1)
                line = {"epoch": epoch + 1, "train_loss": loss, "skipped": skipped,
                        "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
                if log:
                    log.write(json.dumps(line) + "\n")
                    log.flush()
                epoch, position = epoch + 1, dict(fresh)
                if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                    probs, labels, ids, _ = predict(model, text, test_loader, dist_info,
                                                    cfg.amp, progress)  # fmt: skip
                    result = score_predictions(probs, labels, num_classes, data.test.multi_label)
                    key = "map" if data.test.multi_label else "top1"
                    if log:
                        log.write(json.dumps({"epoch": epoch, **result}) + "\n")
                        log.flush()
                    if best is None or result[key] > best[key]:
                        best = {"epoch": epoch, **result}
                        save("best")
                        if dist_info.is_main:
                            write_eval_outputs(out, probs, labels, ids, data.test.class_names,
                                               data.test.multi_label)  # fmt: skip
                save("last")
    finally:
        signal.signal(signal.SIGINT, previous)
        if log:
            log.close()
    if dist_info.is_main:
        write_report(out)
    return best or {}


# ---------------------------------------------------------------- the feature cache


class _Keyed(torch.utils.data.Dataset):
    """(key, sample) pairs, so that encoded rows can be matched to the (view, item) keys."""

    def __init__(self, dataset: VideoClipDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return key, self.dataset[key]


def _encode_split(
    writer: CacheWriter, split: str, dataset: VideoClipDataset, views: int, visual,
    cfg: RunConfig, dist_info: DistInfo, progress,
) -> tuple[int, dict[int, dict]]:  # fmt: skip
    """Encode this rank's share of the views of one split that the cache lacks; -> (rows
    encoded, unreadable items by position)."""
    pending = writer.pending(split, len(dataset), views)
    # A training key (v, p) is the clip of view v; a test key gives every view of item p.
    keys = ([(v, p) for p, left in pending.items() for v in left] if split == TRAIN
            else [(0, p) for p in pending])  # fmt: skip
    keys = keys[dist_info.rank :: dist_info.world]
    batch_size = cfg.batch_size if split == TRAIN else max(1, cfg.batch_size // views)
    loader = make_loader(_Keyed(dataset), batch_size, keys, cfg.workers, collate=list)
    task = progress.add_task(f"encode {split}", total=len(keys), info="")
    encoded, skipped = 0, {}
    for pairs in loader:
        rows, clips = [], []
        for (epoch, p), sample in pairs:
            if isinstance(sample, Skipped):
                skipped[p] = {"item": p, "video_id": sample.video_id, "reason": sample.reason}
                continue
            for row, view in enumerate([epoch] if split == TRAIN else range(views)):
                if view in pending[p]:
                    rows.append({"item": p, "video_id": sample["video_id"], "view": view,
                                 "frame_indices": sample["frame_indices"][row].tolist(),
                                 "labels": list(dataset.items[p].labels)})  # fmt: skip
                    clips.append(sample["frames"][row])
        if clips:
            with torch.inference_mode(), autocast(dist_info.device, cfg.amp):
                features = encode_frames(visual, torch.stack(clips).to(dist_info.device))
            writer.add(split, rows, features.float().cpu().numpy())
            encoded += len(rows)
        progress.update(task, advance=len(pairs), info=f"{len(skipped)} unreadable")
    progress.remove_task(task)
    return encoded, skipped


def cache_features(
    cfg: RunConfig, out: Path | None = None, views: int | None = None, dtype: str = "float16",
    shard_rows: int = SHARD_ROWS, show_progress: bool = True,
) -> dict:  # fmt: skip
    """Encode one fold with the frozen visual tower into a feature cache (`out`, default
    `artifacts/features/<dataset>[-split<fold>]-<clip tag>-f<frames>`): `views` training
    views of each video (default `cfg.epochs`) and every evaluation view. Resumes a cache
    left unfinished; refuses one made with other settings. Under torchrun each rank encodes
    its share (`trainer/features.py`). -> {out, encoded (rows per split, all ranks),
    skipped (per split), bytes, seconds (encoding and merging, after set-up)}."""
    if cfg.split == "all":
        raise UserError("cache-features caches one fold: pass --split 1, 2 or 3.")
    views = cfg.epochs if views is None else views
    if views < 1:
        raise UserError("--views must be at least 1.")
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be {' or '.join(DTYPES)}, not {dtype!r}.")
    dist_info = init_distributed(cfg.device)
    root = cfg.root or default_root(cfg.dataset)
    fold = folds(cfg.dataset, cfg.split)[0]
    out = Path(out or default_features_dir(cfg.dataset, fold,
                                           clip_identity(cfg.clip_model, cfg.clip_pretrained),
                                           cfg.frames))  # fmt: skip
    writable_dir(out)
    clip = load_clip(cfg.clip_model, cfg.clip_pretrained, str(dist_info.device))
    clip_id = (clip.model_id, clip.pretrained_id)
    train = load_split(cfg.dataset, root, "train", fold, cfg.videos, cfg.charades_instances)
    test = load_split(cfg.dataset, root, test_split(cfg.dataset), fold, cfg.videos, False)
    train_set, test_set = clip_datasets(cfg, train, list(train.items), test, clip.image_size)
    meta = {**cache_identity(cfg.dataset, fold, clip_id, train_set, test_set), "views": views,
            "seed": cfg.seed, "dtype": dtype, "feature_dim": clip.embed_dim}  # fmt: skip
    writer = main_first(lambda: CacheWriter(out, meta, shard_rows, dist_info.rank,
                                            dist_info.world), dist_info)  # fmt: skip
    started = time.perf_counter()
    encoded, skipped = {}, {}
    with progress_bar(show_progress and dist_info.is_main) as progress:
        for split, dataset, split_views in ((TRAIN, train_set, views),
                                            (TEST, test_set, test_set.spec.views)):  # fmt: skip
            encoded[split], skipped[split] = _encode_split(writer, split, dataset, split_views,
                                                           clip.model.visual, cfg, dist_info,
                                                           progress)  # fmt: skip
    writer.flush()
    ranks = gather_objects((encoded, skipped), dist_info)  # also waits for every flush
    encoded = {split: sum(part[0][split] for part in ranks) for split in (TRAIN, TEST)}
    unreadable = {split: {p: entry for part in ranks for p, entry in part[1][split].items()}
                  for split in (TRAIN, TEST)}  # fmt: skip
    skipped = {split: [unreadable[split][p] for p in sorted(unreadable[split])]
               for split in (TRAIN, TEST)}  # fmt: skip
    if dist_info.is_main:
        writer.finish(skipped)
    barrier()
    return {"out": out, "encoded": encoded, "skipped": skipped,
            "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
            "seconds": time.perf_counter() - started}  # fmt: skip


@dataclass
class LoadedRun:
    cfg: RunConfig  # the run's settings, with the target dataset
    trained_on: dict  # the run's own settings, as saved
    built: Built
    dist_info: DistInfo
    subtexts: Path
    class_names: list[str]
    checkpoint: dict  # which checkpoint: {"source", "epoch", "best" (its metrics)}


CHECKPOINTS = ("best", "last")


def _run_checkpoint(run_dir: Path, checkpoint: str) -> tuple[Path, dict]:
    """The path and state of a run directory's best (else last) or last checkpoint."""
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"the checkpoint to load is best or last, not {checkpoint!r}.")
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    path = path if path.exists() else run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        raise UserError(
            f"no checkpoint in {run_dir / 'checkpoints'}: not a run directory (nor a model "
            "folder from `trainer export`, nor hf-hub:ORG/REPO)."
        )
    if path.name == "best.pt" and (run_dir / "checkpoints" / "last.pt").exists():
        hint = "the run's last.pt may still load (`eval --last`)"
    else:
        hint = "resume the run (`run --resume`) or train it again"
    return path, load_checkpoint(path, "cpu", hint)


def load_run(
    source: Path | str, dataset: str | None = None, subtexts: Path | None = None,
    device: str = "auto", checkpoint: str = "best", **overrides,
) -> LoadedRun:  # fmt: skip
    """A trained model with a dataset's class texts (the model's own dataset unless
    `dataset` names another, which then needs `subtexts`). `source` is a run directory (its
    best, else last checkpoint; `checkpoint="last"`: its last), a model folder from
    `export_run`, or `hf-hub:ORG/REPO` naming one on the Hugging Face Hub."""
    if str(source).startswith(HUB_PREFIX):
        return _load_export(hub_snapshot(str(source)), str(source), dataset, subtexts, device,
                            checkpoint, overrides)  # fmt: skip
    source = Path(source)
    if is_export(source):
        return _load_export(source, str(source), dataset, subtexts, device, checkpoint,
                            overrides)  # fmt: skip
    path, state = _run_checkpoint(source, checkpoint)
    saved = state["config"]
    dataset = dataset or saved["dataset"]
    if subtexts is None and dataset == saved["dataset"] and saved.get("subtexts"):
        subtexts = Path(saved["subtexts"])
    cfg = RunConfig.from_saved({**saved, "dataset": dataset, "device": device, **overrides})
    dist_info = init_distributed(device)
    subtexts = Path(subtexts or default_subtexts(dataset, cfg.clip_model, cfg.clip_pretrained))
    built = build(cfg, dist_info, subtexts)
    _load_weights(built.model, state["model"], path)
    which = {"source": str(path), "epoch": state["epoch"], "best": state["best"]}
    return LoadedRun(cfg, plain(saved), built, dist_info, subtexts,
                     read_subtexts(subtexts).class_names, which)  # fmt: skip


def _load_weights(model: VideoCLIP, weights: dict, path) -> None:
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or missing:
        raise UserError(
            f"{path} does not fit the model built for it ({(missing + unexpected)[:3]})."
        )
    model.eval()


def _load_export(
    folder: Path, label: str, dataset: str | None, subtexts: Path | None, device: str,
    checkpoint: str, overrides: dict,
) -> LoadedRun:  # fmt: skip
    """An exported model folder: the architecture from its own files, the weights from
    model.safetensors; nothing of the machine it was trained on is needed."""
    if checkpoint != "best":
        raise UserError(f"{label} is an exported model, which holds one checkpoint: drop --last.")
    config, weights = read_export(folder)
    saved = config["training"]
    dataset = dataset or saved["dataset"]
    if subtexts is None:
        if dataset != saved["dataset"]:
            raise UserError(
                f"{label} was trained on {saved['dataset']}: evaluating {dataset} takes "
                f"--subtexts, {dataset}'s subtexts.parquet scored with this model's CLIP "
                f"({config['clip']['model_id']}, {config['clip']['pretrained_id']})."
            )
        subtexts = folder / SUBTEXTS_FILE
    cfg = RunConfig.from_saved({**saved, "dataset": dataset, "device": device, **overrides})
    dist_info = init_distributed(device)
    clip = load_clip(str(folder / config["clip"]["config_file"]), "none", str(dist_info.device))
    # Built without weights (they are in model.safetensors), known as the CLIP it was.
    clip = dataclasses.replace(clip, model_id=config["clip"]["model_id"],
                               pretrained_id=config["clip"]["pretrained_id"])  # fmt: skip
    built = build(cfg, dist_info, Path(subtexts), clip)
    _load_weights(built.model, weights, folder / WEIGHTS_FILE)
    which = {"source": label, "epoch": config["epoch"], "best": config["metrics"]}
    return LoadedRun(cfg, saved, built, dist_info, Path(subtexts),
                     read_subtexts(subtexts).class_names, which)  # fmt: skip


def export_run(run_dir: Path, out: Path, checkpoint: str = "best") -> Path:
    """Write a run's checkpoint as a self-contained model folder (`trainer/checkpoints.py`):
    safetensors weights of the whole model, its config, the CLIP's architecture, the class
    texts and a model card. -> `out`."""
    import open_clip

    loaded = load_run(run_dir, device="cpu", checkpoint=checkpoint)
    clip_config = open_clip.get_model_config(loaded.built.clip_name)
    if clip_config is None:
        raise UserError(
            f"the architecture of CLIP {loaded.cfg.clip_model} is not an open_clip config this "
            "machine knows; export from a run whose --clip-model is an open_clip name or a "
            "model-config JSON."
        )
    cfg, (model_id, pretrained_id) = loaded.cfg, loaded.built.clip_id
    config = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
        "architecture": {"aggregation": cfg.aggregation, "temporal_layers": cfg.temporal_layers,
                         "attention_heads": cfg.attention_heads, "tau_coarse": cfg.tau_coarse,
                         "tau_fine": cfg.tau_fine, "frames": cfg.frames,
                         "image_size": loaded.built.spec_size,
                         "freeze_backbone": cfg.freeze_backbone},
        "clip": {"model_id": model_id, "pretrained_id": pretrained_id,
                 "config_file": CLIP_CONFIG_FILE},
        "evaluation": {"clips": cfg.eval_clips, "crops": cfg.eval_crops},
        "dataset": cfg.dataset, "classes": loaded.class_names,
        "checkpoint": Path(loaded.checkpoint["source"]).stem, "epoch": loaded.checkpoint["epoch"],
        "metrics": loaded.checkpoint["best"],
        "subtexts": subtext_source(loaded.subtexts),
        "training": loaded.trained_on,
    }  # fmt: skip
    return write_export(out, loaded.built.model.state_dict(), config, clip_config,
                        loaded.subtexts, model_card(config))


def evaluate_checkpoint(
    run_dir: Path, dataset: str, root: Path | None, subtexts: Path | None = None,
    zero_shot: str | None = None, split: str | None = None, videos: Path | None = None,
    device: str = "auto", workers: int = 4, show_progress: bool = True,
    checkpoint: str = "best", subsets: Sequence[Path] | None = None,
    features: Path | None = None,
) -> dict:  # fmt: skip
    """Evaluate a run's best (else last) checkpoint, or its last one with
    `checkpoint="last"`, on a dataset's test split(s): from the videos, or for a run with a
    frozen visual tower from the test views of a feature cache (`features`, one fold: the
    default `split`), which give the same metrics.

    `zero_shot="full"`: the test splits (folds 1-3, or `split`) and their mean;
    `zero_shot="half"`: 10 seeded halves of the label set, mean and standard deviation;
    `zero_shot="subsets"`: each file of `subsets` (class names of the dataset) alone: its
    classes' test videos against its classes' texts; mean and standard deviation, and each
    file's result under "subsets".
    """
    from .data.protocols import (
        class_positions,
        half_class_splits,
        read_subset_file,
        restrict_classes,
        subset_class_ids,
    )

    subsets = [Path(p) for p in subsets or ()]
    if zero_shot == "subsets" and not subsets:
        raise UserError("--zero-shot subsets needs --subsets FILE (class names), once per subset.")
    if subsets and zero_shot != "subsets":
        raise UserError("--subsets FILE goes with --zero-shot subsets.")
    subset_names = [(path, read_subset_file(path)) for path in subsets]  # before the model
    loaded = load_run(run_dir, dataset, subtexts, device, checkpoint, root=root, videos=videos,
                      workers=workers)  # fmt: skip
    cfg, built, dist_info, subtexts = loaded.cfg, loaded.built, loaded.dist_info, loaded.subtexts
    if features is not None:
        cached_fold = feature_cache_fold(features, run_dir, loaded.trained_on)
        split = split or ("all" if cached_fold is None else str(cached_fold))
    if split is None:  # on the training dataset, other folds' test lists hold train videos
        split = loaded.trained_on["split"] if dataset == loaded.trained_on["dataset"] and not (
            zero_shot) else "all"  # fmt: skip
    if features is not None and len(folds(dataset, split)) > 1:
        raise UserError(f"--features {features} holds one fold ({cached_fold}); pass --split "
                        f"{cached_fold} or evaluate the folds from the videos.")  # fmt: skip
    root = root or default_root(dataset)
    spec = ClipSpec(frames=cfg.frames, train=False, clips=cfg.eval_clips, crops=cfg.eval_crops,
                    size=built.spec_size, short_side=built.spec_size)  # fmt: skip
    artifact_classes = loaded.class_names
    # (file, class ids) of each user subset; the artifact's classes are the dataset's
    # (check_classes below), so names are checked before any video folder is read.
    chosen = [(path, subset_class_ids(path, names, artifact_classes, dataset))
              for path, names in subset_names]  # fmt: skip
    results, per_subset = [], []
    with progress_bar(show_progress and dist_info.is_main) as progress:
        for fold in folds(dataset, split):
            test = load_split(dataset, root, test_split(dataset), fold, videos, False)
            check_classes(test, artifact_classes, subtexts)
            cache = None
            if features is not None:
                whole = VideoClipDataset(test.items, len(test.class_names), test.multi_label, spec)
                identity = cache_identity(dataset, fold, built.clip_id, None, whole)
                cache = FeatureCache(features, identity, {TEST: len(whole)})
            groups = [(None, None)]  # (subset file, class ids): None, None is every class
            if zero_shot == "half":
                halves = half_class_splits(len(test.class_names), 10, cfg.seed)
                groups = [(None, half) for half in halves]
            elif zero_shot == "subsets":
                groups = chosen
            for path, class_ids in groups:
                if class_ids is None:
                    split_list, positions = test, range(len(test.items))
                else:
                    split_list = restrict_classes(test, class_ids)
                    positions = class_positions(test, class_ids)
                if path is not None and not split_list.items:
                    raise UserError(
                        f"--subsets {path}: none of its classes has a video in {dataset} "
                        f"{test.split} on disk."
                    )
                text = (built.text if class_ids is None
                        else built.text.subset(torch.as_tensor(class_ids)))  # fmt: skip
                classes, multi = len(split_list.class_names), split_list.multi_label
                if cache is None:
                    data = VideoClipDataset(split_list.items, classes, multi, spec)
                else:
                    data = FeatureDataset(cache, TEST, split_list.items, positions, classes, multi)
                loader = make_loader(data, 4, EpochSampler(len(data), False, 0, dist_info.rank,
                                     dist_info.world), 0 if cache else workers)  # fmt: skip
                probs, labels, ids, _ = predict(built.model, text.to(dist_info.device), loader,
                                                dist_info, cfg.amp, progress)  # fmt: skip
                results.append(score_predictions(probs, labels, len(split_list.class_names),
                                                 split_list.multi_label))  # fmt: skip
                if path is not None:
                    where = {} if fold is None else {"fold": fold}
                    per_subset.append({"file": str(path), **where, "classes": len(class_ids),
                                       **results[-1]})  # fmt: skip
    summary = summarise(results)
    return {**summary, "subsets": per_subset} if zero_shot == "subsets" else summary


def feature_cache_fold(features: Path, run_dir: Path, trained_on: dict) -> int | None:
    """The fold a feature cache holds, after checking that the run can read it: a cache
    holds the frozen tower's features, so the run must not have trained its tower."""
    if not trained_on.get("freeze_backbone"):
        raise UserError(
            f"--features: {run_dir} trained its visual tower, and {features} holds the frozen "
            "tower's features; evaluate this run from the videos."
        )
    return read_meta(features)["fold"]


def summarise(results: list[dict]) -> dict:
    """Mean over folds or halves (and the standard deviation where there are several)."""
    if len(results) == 1:
        return results[0]
    out: dict = {"n": int(sum(r["n"] for r in results)), "runs": len(results)}
    for key in ("top1", "top5", "mean_class_acc", "map"):
        values = [r[key] for r in results if r[key] is not None]
        out[key] = float(np.mean(values)) if values else None
        if values:
            out[f"{key}_std"] = float(np.std(values))
    return out
