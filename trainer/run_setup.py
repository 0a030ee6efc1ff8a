"""What a run trains with, built once before its first epoch (`set_up`): its data, model,
loaders, optimiser, schedule and loss scaler (`TrainingSetup`), and how its global batch
splits into micro-batches over processes (`batch_layout`); the warnings of settings that
train other than a user may expect.
"""

from __future__ import annotations

import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from storyboard_common.errors import UserError

from .cache.dataset import cached_datasets
from .config import RunConfig
from .data.dataset import EpochSampler, loader_shm_bytes, loader_workers, make_loader, shm_shortfall
from .distributed import DistInfo, local_processes, on_main, wait_for_all
from .model.aggregation import ClassText
from .model.video_clip import VideoCLIP
from .precision import grad_scaler
from .run_data import (
    RunData,
    check_classes,
    check_clip_lengths,
    check_decode_device,
    clip_datasets,
    prepare_data,
)
from .run_models import build
from .schedule import make_optimizer, make_scheduler
from .subtexts import TrainedTexts


@dataclass
class TrainingSetup:
    """What a run trains with, built once before its first epoch."""

    data: RunData
    model: VideoCLIP  # the weights (what checkpoints hold)
    trained_model: torch.nn.Module  # what steps run: the model, under DDP and compiled as set
    text: ClassText
    sampler: EpochSampler
    train_loader: torch.utils.data.DataLoader
    test_loader: torch.utils.data.DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    micro: int  # clips per micro-batch on one rank
    accumulation: int  # micro-batches per optimiser step
    steps_per_epoch: int  # optimiser steps
    layout: dict  # how the global batch is split, which a resumed run keeps (its data order)
    model_args: dict  # the model's record (`RunModel.model_args`), which checkpoints store
    texts: dict  # the sub-text artifact's identity, which checkpoints store

    def optimizer_steps(self, micro_batches: int) -> int:
        """The optimiser steps that `micro_batches` micro-batches make (the last one may be
        short)."""
        return -(-micro_batches // self.accumulation)


def warn_of_settings(cfg: RunConfig, dist_info: DistInfo) -> None:
    """Warn (main rank) of a warm-up longer than the run."""
    if dist_info.is_main and cfg.warmup_epochs > cfg.epochs:
        warnings.warn(
            f"--warmup-epochs {cfg.warmup_epochs:g} is more than --epochs {cfg.epochs}: the "
            f"learning rate rises for the whole run and ends at about "
            f"{cfg.epochs / cfg.warmup_epochs:.0%} of --lr {cfg.lr:g}, never reaching its peak; "
            "set --warmup-epochs below --epochs (e.g. a quarter of it).",
            stacklevel=3,
        )


def set_up(
    cfg: RunConfig, dist_info: DistInfo, fold: int | None, trained: TrainedTexts | None = None
) -> TrainingSetup:
    """The run's data, model, loaders, optimiser and schedule (in this order: the seeded
    random state is drawn from in it). `trained`: the texts a resumed run trained with."""
    data = prepare_data(cfg, cfg.root, fold)
    train_items = data.fewshot if data.fewshot is not None else data.train.items
    encoded = cfg.features is None and check_decode_device(
        cfg.decode_device, dist_info.device, [*train_items, *data.test.items]
    )
    if cfg.features is None:  # the others wait without a collective's timeout
        on_main(lambda: check_clip_lengths(cfg, data), dist_info)
    run_model = build(cfg, dist_info, cfg.subtexts, trained=trained)
    check_classes(data.train, run_model.class_names, cfg.subtexts)
    if cfg.features is None:
        train_set, test_set = clip_datasets(
            cfg, data.train, data.train_items, data.test, run_model.image_size, encoded
        )
    else:
        train_set, test_set = cached_datasets(cfg, data, fold, run_model)
    test_views = cfg.eval_clips * cfg.eval_crops
    # A cached view is a copy out of the page cache: cheaper than handing the batch over
    # from a worker process (which doubled a cached epoch in `make bench`).
    workers = loader_workers(cfg.workers) if cfg.features is None else 0
    micro, accumulation = batch_layout(cfg.batch_size, cfg.micro_batch, dist_info.world)
    _warn_of_accumulation(cfg, dist_info, micro, accumulation)
    sampler = EpochSampler(len(train_set), True, cfg.seed, dist_info.rank, dist_info.world)
    train_loader = make_loader(train_set, micro, sampler, workers, cfg.prefetch)
    test_sampler = EpochSampler(len(test_set), False, 0, dist_info.rank, dist_info.world)
    test_batch = max(1, micro // test_views)
    test_loader = make_loader(test_set, test_batch, test_sampler, workers, cfg.prefetch)
    clips = max(micro, test_batch * test_views)
    _warn_of_shm(cfg, dist_info, workers, clips, run_model.image_size)

    model = run_model.model
    trained_model = model
    # Each rank's set-up takes its own time: all are done before DDP's first broadcast,
    # which would count the wait against --dist-timeout.
    wait_for_all(dist_info)
    if dist_info.enabled:
        trained_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist_info.device.index] if dist_info.device.type == "cuda" else None
        )
    if cfg.compile:
        trained_model = torch.compile(trained_model)
    optimizer = make_optimizer(model, cfg.lr, cfg.backbone_lr_scale, cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_loader) / accumulation))  # optimiser steps
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = make_scheduler(optimizer, steps_per_epoch * cfg.epochs, max(warmup, 1))
    return TrainingSetup(
        data,
        model,
        trained_model,
        run_model.text,
        sampler,
        train_loader,
        test_loader,
        optimizer,
        scheduler,
        grad_scaler(dist_info.device, cfg.amp),
        micro,
        accumulation,
        steps_per_epoch,
        {"micro_batch": micro, "world": dist_info.world, "accumulation": accumulation},
        run_model.model_args,
        run_model.texts,
    )


def batch_layout(batch_size: int, micro_batch: int | None, world: int) -> tuple[int, int]:
    """(clips per micro-batch on one process, micro-batches per optimiser step) that make
    exactly `batch_size` clips an optimiser step over `world` processes; a batch they cannot
    make is refused in one sentence naming the sizes that work."""
    micro = micro_batch or batch_size // world
    per_round = micro * world  # clips of one micro-batch on every process
    if micro and batch_size % per_round == 0:
        return micro, batch_size // per_round
    unit = world if micro_batch is None else per_round  # what a batch must be a multiple of
    below, above = batch_size // unit * unit, (batch_size // unit + 1) * unit
    sizes = f"{below} or {above}" if below else f"{above}"
    if micro_batch is None:
        raise UserError(
            f"--batch-size {batch_size} does not split evenly over {world} processes: use "
            f"--batch-size {sizes} (a multiple of {world})."
        )
    divisors = [d for d in range(micro_batch, 0, -1) if batch_size % (d * world) == 0]
    other_micro = f", or --micro-batch {divisors[0]}" if divisors else ""
    raise UserError(
        f"--batch-size {batch_size} is not a whole number of --micro-batch {micro_batch} x "
        f"{world} processes ({per_round} clips): use --batch-size {sizes}{other_micro}."
    )


def _warn_of_accumulation(
    cfg: RunConfig, dist_info: DistInfo, micro: int, accumulation: int
) -> None:
    """Warn (main rank) when the batch is accumulated over steps: the loss then contrasts
    fewer clips than the batch size."""
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
            stacklevel=4,
        )


def _warn_of_shm(cfg: RunConfig, dist_info: DistInfo, workers: int, clips: int, size: int) -> None:
    """Warn (main rank of a CUDA run) when /dev/shm is smaller than what this machine's
    loader workers may hold in it (`loader_shm_bytes`): Docker gives 64 MB."""
    shm = Path("/dev/shm")
    if not (dist_info.is_main and dist_info.device.type == "cuda" and workers and shm.is_dir()):
        return
    processes = local_processes()
    needed = loader_shm_bytes(workers, cfg.prefetch, clips, cfg.frames, size, processes)
    warning = shm_shortfall(needed, shutil.disk_usage(shm).total)
    if warning:
        warnings.warn(warning, stacklevel=3)
