"""The training loop: AMP, gradient accumulation, DDP, checkpoints, exact resume.

A run directory holds `config.json`, `environment.json` (one entry per start),
`fewshot.csv` (few-shot runs), `metrics.jsonl`, `steps.jsonl` (`--log-every`),
`tensorboard/` and `wandb/` (`--report-to`), `checkpoints/last.pt` and
`checkpoints/best.pt` (written atomically), and the evaluation outputs
`per_class_accuracy.csv` and `predictions.parquet`. Data randomness is keyed by
(seed, epoch, item), and a checkpoint records the epoch and the step inside it, so
`--resume` continues exactly where a run stopped; Ctrl-C finishes the current optimiser
step, saves `last.pt` and exits. `train_step` is the one optimiser step, which the GPU
check and the step benchmark time too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_save, atomic_write_json, atomic_write_text
from storyboard_common.progress import progress_bar

from .cache.dataset import cached_datasets
from .checkpoints import check_finite_weights, json_values, load_checkpoint
from .config import (
    INPUTS,
    RunConfig,
    absolute_paths,
    check_recorded_inputs,
    input_paths,
    resume_differences,
    setting_differences,
)
from .data.dataset import EpochSampler, loader_shm_bytes, loader_workers, make_loader, shm_shortfall
from .data.layouts import folds, has_folds
from .data.protocols import save_item_list
from .distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_min,
    all_reduce_sum,
    exchange_counts,
    gather_objects,
    gather_with_grad,
    init_distributed,
    local_processes,
    main_first,
    on_main,
    wait_for_all,
)
from .environment import record_environment
from .evaluation import main_scores, model_inputs, predict, summarise, write_eval_outputs
from .loss import storyboard_loss
from .model.aggregation import ClassText
from .model.video_clip import VideoCLIP
from .paths import default_root, default_run_dir, default_subtexts, run_folder
from .precision import autocast, grad_scaler, set_tf32, tf32_applies
from .report import write_report
from .run_data import (
    RunData,
    check_classes,
    check_clip_lengths,
    check_decode_device,
    clip_datasets,
    prepare_data,
)
from .run_log import STEPS_FILE, LogSettings, Reporters, StepLog, check_reporters
from .run_models import build
from .schedule import make_optimizer, make_scheduler
from .settings import flag_name
from .subtexts import TrainedTexts, recorded_texts


def _read_json(path: Path) -> dict | None:
    """A JSON file's value; None when it is absent or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def recorded_config(cfg: RunConfig) -> RunConfig:
    """The settings a run records: the default dataset root, sub-text artifact and run
    directory filled in, and every path absolute, so that `eval`, `predict`, `export` and
    `--resume` read the same files from any folder."""
    return absolute_paths(
        dataclasses.replace(
            cfg,
            root=cfg.root or default_root(cfg.dataset),
            subtexts=cfg.subtexts
            or default_subtexts(cfg.dataset, cfg.clip_model, cfg.clip_pretrained),
            out=cfg.out or default_run_dir(cfg),
        )
    )


def check_resume(cfg: RunConfig, out: Path, state: dict) -> dict:
    """Refuse to resume the run in `out` with settings other than those it was trained with
    (the record of its checkpoint `state`, which no one edits), except those of
    `RESUME_MAY_CHANGE` and inputs recorded at a path that no longer exists, given now where
    they are; refuse a config.json that says otherwise (edited since) or is damaged. -> its
    config.json as the run now records it (the same, but for such moved inputs and for the
    relative paths and unset defaults of older runs, read from this folder)."""
    config_json = out / "config.json"
    last = out / "checkpoints" / "last.pt"
    trained = _recorded_settings(json_values(state["config"]), f"--resume: {last} is damaged")
    saved = trained
    if config_json.exists():
        saved = json_values(_read_json(config_json))
        damaged = (
            f"--resume: {config_json} is damaged (not the run's settings as JSON); restore it, "
            "or delete it to resume with the settings its checkpoint holds"
        )
        edited = [
            (flag_name(name), old, new)
            for name, old, new in setting_differences(trained, _recorded_settings(saved, damaged))
            if name not in INPUTS and name != "out"
        ]
        if edited:
            says = ", ".join(f"{flag} {new}" for flag, _, new in edited)
            was = ", ".join(f"{flag} {old}" for flag, old, _ in edited)
            raise UserError(
                f"--resume: {config_json} was edited since the run began: it says {says}, but "
                f"the run was trained with {was} (its checkpoint {last} records it); restore "
                "config.json, or delete it to resume with the settings its checkpoint holds."
            )
    current = json_values(dataclasses.asdict(cfg))
    recorded = dict(trained)
    gone = {name: path for name, path in input_paths(recorded).items() if not Path(path).exists()}
    check_recorded_inputs({name: path for name, path in gone.items() if current[name] == path})
    recorded.update({name: current[name] for name in gone})
    differences = resume_differences(recorded, current)
    if differences:
        raise UserError(
            f"--resume: {out} was trained with other settings ({', '.join(differences)}); "
            f"resume with the flags of its config.json, or start a new run with another --out."
        )
    paths = [*INPUTS, "out"]
    return {**saved, **{name: recorded[name] for name in paths if name in recorded}}


def _recorded_settings(saved, damaged: str) -> dict:
    """A run's saved settings (config.json or a checkpoint's) as a run records them now
    (`recorded_config`), the keys it saved only; UserError `damaged` when they are not a
    run's settings."""
    try:
        if not isinstance(saved, dict):
            raise TypeError(saved)
        recorded = json_values(dataclasses.asdict(recorded_config(RunConfig.from_saved(saved))))
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(damaged + ".") from exc
    return {name: value for name, value in recorded.items() if name in saved}


def keep_logged(path: Path, key: str, last: int) -> None:
    """Drop the lines of a JSON-lines log (`metrics.jsonl` by "epoch", `steps.jsonl` by
    "global_step") whose `key` is after `last` (what the checkpoint being resumed had not
    completed, which the run now repeats), and lines cut short by a kill."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            value = json.loads(line).get(key)
        except (ValueError, AttributeError):
            continue
        if isinstance(value, int) and value <= last:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


class LossTally:
    """The training loss summed over clips, kept on the device: a step adds to it without
    reading anything back (a read is a host-device synchronisation, made at check steps),
    and the first non-finite loss is kept with its step. float64, so that when it is read
    never changes the sum (a resumed run adds exactly as an uninterrupted one).

    With fp16's loss scaler (`skip_non_finite`) a non-finite loss is an overflow whose
    step the scaler skips: it is left out of the sums and is no divergence."""

    def __init__(self, device: torch.device, loss_sum: float, clips: float, skip_non_finite: bool):
        self.sums = torch.tensor([loss_sum, clips], dtype=torch.float64, device=device)
        self.first_bad_step = torch.zeros((), dtype=torch.long, device=device)
        self.first_bad_loss = torch.zeros((), dtype=torch.float64, device=device)
        self.skip_non_finite = skip_non_finite

    def add(self, loss: torch.Tensor, clips: int, step: int) -> None:
        """Optimiser step `step` (of the epoch, from 1) computed `loss` over `clips` clips."""
        loss = loss.detach().double()
        finite = torch.isfinite(loss)
        if self.skip_non_finite:
            counted = finite.double() * clips
            self.sums += torch.stack([torch.where(finite, loss, 0.0) * clips, counted])
            return
        self.sums += torch.stack([loss * clips, torch.full_like(loss, clips)])
        first = ~finite & (self.first_bad_step == 0)
        self.first_bad_step = torch.where(first, step, self.first_bad_step)
        self.first_bad_loss = torch.where(first, loss, self.first_bad_loss)

    def read(self) -> tuple[float, float, Divergence | None]:
        """(loss sum, clips it sums over, the first non-finite loss) read back at once."""
        loss_sum, clips, step, loss = torch.cat(
            [self.sums, torch.stack([self.first_bad_step.double(), self.first_bad_loss])]
        ).tolist()
        return loss_sum, clips, Divergence(int(step), loss) if step else None


def accumulating(model: torch.nn.Module, last: bool):
    """DDP's `no_sync` around every micro-batch of a step but its last: gradients add up
    locally and are all-reduced once per optimiser step."""
    ddp = getattr(model, "_orig_mod", model)  # under torch.compile
    if last or not isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()


@dataclass(frozen=True)
class StepDone:
    """What one optimiser step did on this rank, counted on the host."""

    clips: int  # clips trained on
    skipped: int  # videos skipped (unreadable, or too short)


def train_step(
    model,
    text: ClassText,
    group: list[dict],
    optimizer,
    scaler,
    dist_info: DistInfo,
    amp: str,
    lam: float,
    tally: LossTally,
    step: int,
) -> StepDone:
    """Optimiser step `step` over the micro-batches `group` (gradient accumulation): forward
    under autocast, the loss of Eq. 13-15 over every rank's clips, backward, step; the loss
    goes into `tally`. Nothing is read back from the device but every rank's clip counts,
    once (none with one process); the gradient is all-reduced once. A non-finite loss is
    found when `tally` is read."""
    device = dist_info.device
    counts = exchange_counts([len(b["video_ids"]) for b in group], dist_info)  # [rank][micro]
    # A micro-batch runs only where every rank has videos in it: the collectives below
    # must be entered by all ranks or none.
    live = [j for j in range(len(group)) if min(rank[j] for rank in counts) > 0]
    clips = 0
    for position, j in enumerate(live):
        batch, sizes = group[j], [rank[j] for rank in counts]
        with accumulating(model, last=position == len(live) - 1):
            inputs = model_inputs(batch, device)
            labels = batch["labels"].to(device, non_blocking=True)
            with autocast(device, amp):
                logits = model(inputs, text)["logits"]
            # The loss sees the global batch; each rank back-propagates its own rows, so
            # scaling by world size gives the single-process gradient after DDP's mean.
            all_logits = gather_with_grad(logits.float(), sizes)
            all_labels = gather_with_grad(labels, sizes)
            loss = storyboard_loss(all_logits, all_labels, lam)
            scaler.scale(loss * dist_info.world / len(live)).backward()
        tally.add(loss, sizes[dist_info.rank], step)
        clips += sizes[dist_info.rank]
    if live:
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return StepDone(clips, sum(len(b["skipped"]) for b in group))


@dataclass
class EpochPosition:
    """How far the current epoch has gone: what a checkpoint records to resume inside it."""

    step: int = 0  # micro-batches done
    loss_sum: float = 0.0  # the training loss summed over its clips
    clips: int = 0  # clips trained on
    skipped: int = 0  # videos skipped (unreadable, or too short)
    loss_clips: float | None = None  # clips `loss_sum` sums over (fp16 leaves overflows out)

    def __post_init__(self) -> None:
        if self.loss_clips is None:  # checkpoints before fp16 skipped overflowed steps
            self.loss_clips = float(self.clips)

    @property
    def loss(self) -> float:
        """The mean training loss so far (NaN before any finite one)."""
        return self.loss_sum / self.loss_clips if self.loss_clips else math.nan


@dataclass
class Divergence:
    """Where training stopped being finite: the optimiser step of the epoch (from 1) and
    its loss (None: the loss was finite but the weights were not)."""

    step: int
    loss: float | None


@dataclass
class TrainingState:
    """Where a run stands: the epochs done, the position inside the next one, the best
    evaluation so far (with its epoch), and whether Ctrl-C asked it to stop."""

    epoch: int = 0
    position: EpochPosition = field(default_factory=EpochPosition)
    best: dict | None = None
    stop_requested: bool = False  # set by SIGINT: stop after the current optimiser step


@dataclass
class EpochEnd:
    """How `train_epoch` ended: run through, stopped by Ctrl-C (on any rank), or at a
    non-finite loss (that step not taken)."""

    stopped: bool = False
    diverged: Divergence | None = None


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


def train_epoch(
    setup: TrainingSetup,
    state: TrainingState,
    cfg: RunConfig,
    dist_info: DistInfo,
    progress,
    task,
    step_log: StepLog,
) -> EpochEnd:
    """One epoch, continuing from `state.position`, which it advances step by step. The
    loss is read back from the device only at check steps (`StepLog.checks`) and at the
    epoch's end, and there the epoch stops at a non-finite loss (naming the step it
    appeared at; the steps since were taken, and nothing of this epoch is saved) or after
    Ctrl-C reached any rank (one process stops at the step it came in). Each optimiser step
    is counted in `step_log`."""
    setup.trained_model.train()
    position = state.position
    tally = LossTally(
        dist_info.device, position.loss_sum, position.loss_clips, setup.scaler.is_enabled()
    )
    optimizer = setup.optimizer
    optimizer.zero_grad(set_to_none=True)
    batches = iter(setup.train_loader)
    while True:
        fetching = time.perf_counter()
        group = list(itertools.islice(batches, setup.accumulation))
        waited = time.perf_counter() - fetching
        step = setup.optimizer_steps(position.step) + (1 if group else 0)
        if not group:
            # the last step was a check step, or its line is not due: no line here
            return _read_back(tally, state, dist_info, step_log, step, None)
        done = train_step(
            setup.trained_model,
            setup.text,
            group,
            optimizer,
            setup.scaler,
            dist_info,
            cfg.amp,
            cfg.lam,
            tally,
            step,
        )
        position.clips += done.clips
        position.skipped += done.skipped
        lr = head_lr(optimizer)  # this step's, before the schedule moves on
        setup.scheduler.step()
        position.step += len(group)
        step_log.step(done.clips, waited)
        progress.update(task, advance=len(group))
        if step_log.checks(step) or (state.stop_requested and not dist_info.enabled):
            end = _read_back(tally, state, dist_info, step_log, step, lr)
            progress.update(task, info=f"loss {position.loss:.4f}")
            if end.stopped or end.diverged:
                return end


def _read_back(
    tally: LossTally,
    state: TrainingState,
    dist_info: DistInfo,
    step_log: StepLog,
    step: int,
    lr: float | None,
) -> EpochEnd:
    """A check step: the loss sums into `state.position`, the step line (with the step's
    `lr`; None: none), and whether any rank saw a non-finite loss or Ctrl-C (one
    collective)."""
    position = state.position
    position.loss_sum, position.loss_clips, diverged = tally.read()
    if lr is not None:
        step_log.line(step, position.loss_sum, position.loss_clips, lr)
    bad, stop = int(diverged is not None), int(state.stop_requested)
    if dist_info.enabled:
        flags = all_reduce_max(torch.tensor([bad, stop], device=dist_info.device))
        bad, stop = flags.tolist()
    if bad:  # a rank that saw none names this check's step
        return EpochEnd(diverged=diverged or Divergence(step, math.nan))
    return EpochEnd(stopped=bool(stop))


def head_lr(optimizer) -> float:
    """The learning rate of the new modules (`--lr`; the backbone's is scaled from it)."""
    groups = optimizer.param_groups
    return next((g["lr"] for g in groups if g.get("name", "").startswith("new")), groups[0]["lr"])


def weights_finite(model, dist_info: DistInfo) -> bool:
    """Whether every weight is finite on every rank (a finite loss can still step the
    weights to infinity, which no checkpoint may keep)."""
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all().int()
    if dist_info.enabled:
        finite = all_reduce_min(finite.to(dist_info.device))
    return bool(finite.item())


def divergence(cfg: RunConfig, epoch: int, diverged: Divergence, saved: bool) -> UserError:
    """The one sentence for a run stopped at a non-finite loss (or weights)."""
    what = (
        "the weights stopped being finite"
        if diverged.loss is None
        else f"the loss became {diverged.loss}"
    )
    kept = (
        f"{cfg.out / 'checkpoints'} keeps the last good ones"
        if saved
        else "no checkpoint had been written"
    )
    return UserError(
        f"training diverged at epoch {epoch}, step {diverged.step} ({what}), so the run "
        f"stopped without saving it ({kept}); lower --lr (now {cfg.lr:g}) and start again "
        "with another --out."
    )


def train(
    cfg: RunConfig,
    resume: bool = False,
    show_progress: bool = True,
    log_settings: LogSettings = LogSettings(),
) -> dict:
    """Train (and evaluate) one fold; returns the best evaluation metrics. The run's folder
    is held by this run alone (`run_folder`) from before anything is written to its end.
    `log_settings`: step lines and reporters (`run_log`)."""
    cfg = recorded_config(cfg)
    check_reporters(log_settings.report_to, cfg.out)
    dist_info = init_distributed(cfg.device, cfg.dist_timeout)
    batch_layout(cfg.batch_size, cfg.micro_batch, dist_info.world)  # before anything is written
    if dist_info.device.type == "cuda":  # a process-wide switch: set either way
        set_tf32(tf32_applies(dist_info.device, cfg.amp, cfg.tf32))
    with contextlib.ExitStack() as held:

        def hold_folder() -> None:  # only the main rank writes; its refusal stops every rank
            if dist_info.is_main:
                held.enter_context(run_folder(cfg.out))

        main_first(hold_folder, dist_info)
        return _train(cfg, dist_info, resume, show_progress, log_settings)


def train_folds(
    cfg: RunConfig,
    resume: bool = False,
    show_progress: bool = True,
    log_settings: LogSettings = LogSettings(),
) -> dict:
    """`train` on the fold `cfg.split`; with --split all on a dataset of three folds, each
    fold in its own folder (`fold1`...) and the mean of their metrics (`summarise`)."""
    folders = run_folders(cfg)
    if len(folders) == 1:
        return train(cfg, resume, show_progress, log_settings)
    results = [
        train(
            dataclasses.replace(cfg, split=str(k), out=folder),
            resume,
            show_progress,
            log_settings,
        )
        for k, folder in enumerate(folders, start=1)
    ]
    return summarise(results)


def run_folders(cfg: RunConfig) -> list[Path]:
    """The run folders `train_folds` writes: `--out` (or the default run folder), or with
    --split all on a dataset of three folds the folders `fold1`... in it."""
    base = cfg.out or default_run_dir(cfg)
    if cfg.split == "all" and has_folds(cfg.dataset):
        return [base / f"fold{k}" for k in (1, 2, 3)]
    return [base]


def _train(
    cfg: RunConfig,
    dist_info: DistInfo,
    resume: bool,
    show_progress: bool,
    log_settings: LogSettings,
) -> dict:
    """`train` in the held run folder: setup, resume, the epochs, the report."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    fold = folds(cfg.dataset, cfg.split)[0]
    checkpoint = _checkpoint_to_resume(cfg, dist_info, resume)
    resumed = checkpoint is not None
    settings = json_values(dataclasses.asdict(cfg))  # as JSON values: config.json, checkpoints
    # config.json: the run as it began
    recorded = settings if checkpoint is None else check_resume(cfg, cfg.out, checkpoint)
    _warn_of_settings(cfg, dist_info)
    trained = None
    if checkpoint is not None:  # the texts it trained with, which --subtexts must still hold
        instead = "put that artifact back to resume, or start a new run with another --out"
        trained = recorded_texts(checkpoint.get("subtexts"), f"the run in {cfg.out}", instead)
    setup = _set_up(cfg, dist_info, fold, trained)
    state = TrainingState() if checkpoint is None else _resume(setup, checkpoint, cfg, dist_info)
    del checkpoint  # restored: its tensors (the optimiser's are twice the weights) are freed
    check_same_position(state, dist_info, cfg.out)
    done_steps = state.epoch * setup.steps_per_epoch + setup.optimizer_steps(state.position.step)
    if dist_info.is_main:
        _prepare_run_folder(cfg.out, recorded, setup.data, state, done_steps, dist_info, resumed)
    _run_epochs(
        cfg, dist_info, setup, state, settings, recorded, done_steps, show_progress, log_settings
    )
    if dist_info.is_main:
        write_report(cfg.out)
    return state.best or {}


def _checkpoint_to_resume(cfg: RunConfig, dist_info: DistInfo, resume: bool) -> dict | None:
    """The state of the run's last.pt when `resume` continues it, in CPU memory (`_resume`
    copies it to the device, and the caller drops it); None for a fresh start (with --split
    all, later folds start fresh). A run folder that already holds a run is refused without
    --resume."""
    ckpt_dir = cfg.out / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    if last_path.exists() and not resume:
        raise UserError(
            f"{cfg.out} already holds a run: pass --resume to continue it or another --out."
        )
    if not resume:
        return None
    if not last_path.exists():
        if dist_info.is_main:
            print(f"no checkpoint in {ckpt_dir}: starting fresh", file=sys.stderr)
        return None
    other = ckpt_dir / "best.pt"
    hint = (
        f"copy {other} over it to resume from the best epoch, or start over with another --out"
        if other.exists()
        else "start over with another --out"
    )
    return load_checkpoint(last_path, "cpu", hint)


def _warn_of_settings(cfg: RunConfig, dist_info: DistInfo) -> None:
    """Warn (main rank) of a warm-up longer than the run."""
    if dist_info.is_main and cfg.warmup_epochs > cfg.epochs:
        warnings.warn(
            f"--warmup-epochs {cfg.warmup_epochs:g} is more than --epochs {cfg.epochs}: the "
            f"learning rate rises for the whole run and ends at about "
            f"{cfg.epochs / cfg.warmup_epochs:.0%} of --lr {cfg.lr:g}, never reaching its peak; "
            "set --warmup-epochs below --epochs (e.g. a quarter of it).",
            stacklevel=3,
        )


def _set_up(
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


def _resume(
    setup: TrainingSetup, checkpoint: dict, cfg: RunConfig, dist_info: DistInfo
) -> TrainingState:
    """Load last.pt's weights, optimiser, schedule, scaler and random state into `setup`;
    -> where the run stopped. A checkpoint of another batch layout is refused."""
    if checkpoint["layout"] != setup.layout:
        raise UserError(
            f"{cfg.out / 'checkpoints' / 'last.pt'} was trained with {checkpoint['layout']}, "
            f"not {setup.layout}: resume with the same --batch-size, --micro-batch and number "
            "of processes."
        )
    hint = "copy best.pt over it to resume from the best epoch, or start over with another --out"
    check_finite_weights(checkpoint["model"], cfg.out / "checkpoints" / "last.pt", hint)
    setup.model.load_state_dict(checkpoint["model"])
    setup.optimizer.load_state_dict(checkpoint["optimizer"])
    setup.scheduler.load_state_dict(checkpoint["scheduler"])
    setup.scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["torch_rng"].cpu())
    if checkpoint.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(checkpoint["cuda_rng"].cpu(), dist_info.device)
    return TrainingState(
        checkpoint["epoch"], EpochPosition(**checkpoint["position"]), checkpoint["best"]
    )


def check_same_position(state: TrainingState, dist_info: DistInfo, out: Path) -> None:
    """Refuse, on every rank, a run whose ranks stand at different epochs or steps: each
    rank reads its own `out`/checkpoints/last.pt, so they differ when `out` is not one
    shared folder (a fresh start counts as epoch 0, step 0)."""
    here = (state.epoch, state.position.step)
    positions = gather_objects(here, dist_info)
    if len(set(positions)) > 1:
        shown = ", ".join(f"rank {r}: epoch {e} step {s}" for r, (e, s) in enumerate(positions))
        raise UserError(
            f"the processes resumed at different points ({shown}): they read different "
            f"{out / 'checkpoints' / 'last.pt'} files, so --out must be one folder on a "
            "filesystem every machine shares."
        )


def _prepare_run_folder(
    out: Path,
    recorded: dict,
    data: RunData,
    state: TrainingState,
    done_steps: int,
    dist_info: DistInfo,
    resumed: bool,
) -> None:
    """(Main rank) config.json, environment.json and the few-shot list; the logs cut back
    to what the checkpoint being resumed had done."""
    # A resume (same settings, checked above) rewrites config.json only to record where
    # moved inputs are now, and older runs' relative paths as absolute ones.
    if _read_json(out / "config.json") != recorded:
        atomic_write_json(out / "config.json", recorded)
    record_environment(out, dist_info, resumed=resumed)
    keep_logged(out / "metrics.jsonl", "epoch", state.epoch)
    keep_logged(out / STEPS_FILE, "global_step", done_steps)
    if data.fewshot is not None:
        save_item_list(data.fewshot, out / "fewshot.csv")


@dataclass
class EpochLogs:
    """Where each epoch's lines go (main rank; None elsewhere): metrics.jsonl and the
    reporters (`--report-to`)."""

    metrics: TextIO | None
    reporters: Reporters | None

    def write(self, line: dict, scalars: dict, global_step: int) -> None:
        if self.metrics:
            self.metrics.write(json.dumps(line) + "\n")
            self.metrics.flush()
        if self.reporters:
            self.reporters.scalars(scalars, global_step)


def _run_epochs(
    cfg: RunConfig,
    dist_info: DistInfo,
    setup: TrainingSetup,
    state: TrainingState,
    settings: dict,
    recorded: dict,
    done_steps: int,
    show_progress: bool,
    log_settings: LogSettings,
) -> None:
    """The epochs from where `state` stands, each trained, logged, evaluated every
    --eval-every epochs (and the last) and saved as last.pt; Ctrl-C saves last.pt where the
    epoch stopped and raises KeyboardInterrupt. `settings`: what checkpoints record;
    `recorded`: config.json, which the reporters record."""
    previous = signal.signal(signal.SIGINT, lambda *_: setattr(state, "stop_requested", True))
    is_main = dist_info.is_main
    metrics = open(cfg.out / "metrics.jsonl", "a", encoding="utf-8") if is_main else None  # noqa: SIM115
    steps_file = None
    if is_main and log_settings.every:
        steps_file = open(cfg.out / STEPS_FILE, "a", encoding="utf-8")  # noqa: SIM115
    reporters = None
    ok = False
    try:
        if is_main and log_settings.report_to:
            reporters = Reporters(log_settings.report_to, cfg.out, recorded, done_steps)
        logs = EpochLogs(metrics, reporters)
        with progress_bar(show_progress and is_main) as progress:
            step_log = StepLog(
                log_settings.every,
                dist_info,
                setup.steps_per_epoch,
                cfg.epochs,
                steps_file,
                reporters,
                progress,
            )
            while state.epoch < cfg.epochs:
                _train_logged_epoch(
                    cfg, dist_info, setup, state, settings, logs, progress, step_log
                )
                if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
                    _evaluate(cfg, dist_info, setup, state, settings, logs, progress)
                _save(setup, state, settings, dist_info, cfg.out / "checkpoints" / "last.pt")
        ok = True
    finally:
        signal.signal(signal.SIGINT, previous)
        for file in (metrics, steps_file):
            if file:
                file.close()
        if reporters:
            reporters.close(ok)


def _train_logged_epoch(
    cfg: RunConfig,
    dist_info: DistInfo,
    setup: TrainingSetup,
    state: TrainingState,
    settings: dict,
    logs: EpochLogs,
    progress,
    step_log: StepLog,
) -> None:
    """Train the epoch `state` is in (from its position) and log its line; `state` then
    stands at the next epoch's start. An epoch that diverged, trained no clip or was
    stopped by Ctrl-C (last.pt saved) raises instead."""
    done = state.position.step
    setup.sampler.set_epoch(state.epoch, start=done * setup.micro)  # batches -> rank's items
    task = progress.add_task(
        f"epoch {state.epoch + 1}/{cfg.epochs}",
        total=done + len(setup.train_loader),
        completed=done,
        info="",
    )
    started = time.perf_counter()
    step_log.start_epoch(state.epoch, state.position.loss_sum, state.position.loss_clips)
    end = train_epoch(setup, state, cfg, dist_info, progress, task, step_log)
    progress.remove_task(task)
    position = state.position
    diverged = end.diverged
    if diverged is None and not weights_finite(setup.model, dist_info):
        diverged = Divergence(setup.optimizer_steps(position.step), None)
    if diverged is not None:  # nothing of it saved: the checkpoints stay good
        last_saved = (cfg.out / "checkpoints" / "last.pt").exists()
        raise divergence(cfg, state.epoch + 1, diverged, last_saved)
    if end.stopped:
        _save(setup, state, settings, dist_info, cfg.out / "checkpoints" / "last.pt")
        raise KeyboardInterrupt
    # one collective and one read-back for both counts
    counts = torch.tensor([position.skipped, position.clips], device=dist_info.device)
    skipped, clips = all_reduce_sum(counts).tolist()
    if clips == 0:  # never a loss of 0.0 for an epoch that trained nothing
        raise UserError(
            f"epoch {state.epoch + 1} read no training clip: all {skipped} videos were "
            f"skipped (unreadable, or shorter than --frames {cfg.frames}); check "
            "them with `python -m trainer check-data`."
        )
    loss = position.loss
    seconds = round(time.perf_counter() - started, 2)
    logs.write(
        {"epoch": state.epoch + 1, "train_loss": loss, "skipped": skipped, "seconds": seconds},
        {"epoch/train_loss": loss, "epoch/seconds": seconds},
        (state.epoch + 1) * setup.steps_per_epoch,
    )
    state.epoch, state.position = state.epoch + 1, EpochPosition()


def _evaluate(
    cfg: RunConfig,
    dist_info: DistInfo,
    setup: TrainingSetup,
    state: TrainingState,
    settings: dict,
    logs: EpochLogs,
    progress,
) -> None:
    """Evaluate after `state.epoch` epochs and log it; a new best (top-1, or mAP where
    multi-label) is saved as best.pt with its evaluation outputs."""
    test = setup.data.test
    predictions = predict(setup.model, setup.text, setup.test_loader, dist_info, cfg.amp, progress)
    num_classes = len(setup.data.train.class_names)
    result = main_scores(predictions, num_classes, test.multi_label, dist_info)
    global_step = state.epoch * setup.steps_per_epoch
    logs.write(
        {"epoch": state.epoch, **result}, {f"eval/{k}": v for k, v in result.items()}, global_step
    )
    key = "map" if test.multi_label else "top1"
    if state.best is None or result[key] > state.best[key]:
        state.best = {"epoch": state.epoch, **result}
        _save(setup, state, settings, dist_info, cfg.out / "checkpoints" / "best.pt")
        if predictions is not None:  # the main rank's
            probs, labels, ids, _ = predictions
            write_eval_outputs(cfg.out, probs, labels, ids, test.class_names, test.multi_label)


def _save(
    setup: TrainingSetup, state: TrainingState, settings: dict, dist_info: DistInfo, path: Path
) -> None:
    """(Main rank) the checkpoint `path`: weights, optimiser, schedule, scaler, random state
    and `state`, with the run's `settings`; enough to resume exactly."""
    if not dist_info.is_main:
        return
    cuda = dist_info.device.type == "cuda"
    atomic_save(
        {
            "model": setup.model.state_dict(),
            "optimizer": setup.optimizer.state_dict(),
            "scheduler": setup.scheduler.state_dict(),
            "scaler": setup.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "layout": setup.layout,
            "cuda_rng": torch.cuda.get_rng_state(dist_info.device) if cuda else None,
            "epoch": state.epoch,
            "position": dataclasses.asdict(state.position),
            "best": state.best,
            "config": settings,
            "model_args": setup.model_args,
            "subtexts": setup.texts,
        },
        path,
    )
