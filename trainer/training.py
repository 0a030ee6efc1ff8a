"""The training loop: AMP, gradient accumulation, DDP, check steps, evaluation cadence.

`train` holds a run's folder, builds what it trains with (`run_setup`), resumes it where its
checkpoint stopped (`resuming`) and hands it to a `Trainer`, the loop as one object: its
`run` trains the epochs left, its `train_epoch` takes each optimiser step from the loader
through `train_step` (forward, the loss, backward, the optimiser) to the schedule, and
reads the loss back from the device only at check steps. Ctrl-C finishes the current
optimiser step, saves `last.pt` and exits. `train_step` is the one optimiser step, which
the GPU check and the step benchmark time too.

A run directory holds `config.json`, `environment.json` (one entry per start),
`fewshot.csv` (few-shot runs), `metrics.jsonl`, `steps.jsonl` (`--log-every`),
`tensorboard/` and `wandb/` (`--report-to`), `checkpoints/last.pt` and
`checkpoints/best.pt` (written atomically; `resuming`), and the evaluation outputs
`per_class_accuracy.csv` and `predictions.parquet`. Data randomness is keyed by
(seed, epoch, item), and a checkpoint records the epoch and the step inside it, so
`--resume` continues exactly where a run stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from storyboard_common.errors import UserError
from storyboard_common.progress import progress_bar

from .checkpoints import json_values
from .config import RunConfig, resolved_config, run_dir
from .data.layouts import folds, has_folds
from .distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_min,
    all_reduce_sum,
    exchange_counts,
    gather_with_grad,
    init_distributed,
    main_first,
)
from .evaluation import main_scores, model_inputs, predict, summarise, write_eval_outputs
from .loss import storyboard_loss
from .model.aggregation import ClassText
from .paths import run_folder
from .precision import autocast, set_tf32, tf32_applies
from .report import write_report
from .resuming import (
    EpochPosition,
    TrainingState,
    check_resume,
    check_same_position,
    checkpoint_to_resume,
    prepare_run_folder,
    restore,
    save_checkpoint,
)
from .run_log import STEPS_FILE, LogSettings, Reporters, StepLog, check_reporters
from .run_setup import TrainingSetup, batch_layout, set_up, warn_of_settings
from .subtexts import recorded_texts


def train(
    cfg: RunConfig,
    resume: bool = False,
    show_progress: bool = True,
    log_settings: LogSettings = LogSettings(),
) -> dict:
    """Train (and evaluate) one fold; returns the best evaluation metrics. The run's folder
    is held by this run alone (`run_folder`) from before anything is written to its end.
    `log_settings`: step lines and reporters (`run_log`). Its defaults are resolved here,
    once (`resolved_config`): everything after reads the resolved settings."""
    cfg = resolved_config(cfg)
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
    base = run_dir(cfg)
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
    checkpoint = checkpoint_to_resume(cfg, dist_info, resume)
    resumed = checkpoint is not None
    settings = json_values(dataclasses.asdict(cfg))  # as JSON values: config.json, checkpoints
    # config.json: the run as it began
    recorded = settings if checkpoint is None else check_resume(cfg, cfg.out, checkpoint)
    warn_of_settings(cfg, dist_info)
    trained = None
    if checkpoint is not None:  # the texts it trained with, which --subtexts must still hold
        instead = "put that artifact back to resume, or start a new run with another --out"
        trained = recorded_texts(checkpoint.get("subtexts"), f"the run in {cfg.out}", instead)
    setup = set_up(cfg, dist_info, fold, trained)
    state = TrainingState() if checkpoint is None else restore(setup, checkpoint, cfg, dist_info)
    del checkpoint  # restored: its tensors (the optimiser's are twice the weights) are freed
    check_same_position(state, dist_info, cfg.out)
    done_steps = state.epoch * setup.steps_per_epoch + setup.optimizer_steps(state.position.step)
    if dist_info.is_main:
        prepare_run_folder(cfg.out, recorded, setup.data, state, done_steps, dist_info, resumed)
    trainer = Trainer(cfg, dist_info, setup, state, settings)
    trainer.run(recorded, done_steps, show_progress, log_settings)
    if dist_info.is_main:
        write_report(cfg.out)
    return state.best or {}


class Trainer:
    """One fold's training loop as one object: what it trains with (`setup`: the model,
    optimiser, schedule, scaler, loaders), where it stands (`state`), what its checkpoints
    record (`settings`) and, while `run` runs, where it logs (`logs`, `progress`,
    `step_log`) and the current epoch's loss (`tally`). Read top to bottom: `run` ->
    `train_logged_epoch` -> `train_epoch` -> `train_step`, then `evaluate` and `save`."""

    def __init__(
        self,
        cfg: RunConfig,
        dist_info: DistInfo,
        setup: TrainingSetup,
        state: TrainingState,
        settings: dict,
    ):
        self.cfg = cfg
        self.dist_info = dist_info
        self.setup = setup
        self.state = state
        self.settings = settings  # the run's settings as JSON values, which checkpoints record
        self.logs = EpochLogs(None, None)
        self.progress = None  # the progress bar (`progress_bar`) while `run` runs
        self.step_log: StepLog | None = None
        self.tally: LossTally | None = None

    def run(
        self, recorded: dict, done_steps: int, show_progress: bool, log_settings: LogSettings
    ) -> None:
        """The epochs from where `state` stands, each trained, logged, evaluated every
        --eval-every epochs (and the last) and saved as last.pt; Ctrl-C saves last.pt where
        the epoch stopped and raises KeyboardInterrupt. `recorded`: config.json, which the
        reporters record; `done_steps`: the optimiser steps the run had taken."""
        cfg, state, is_main = self.cfg, self.state, self.dist_info.is_main
        previous = signal.signal(signal.SIGINT, lambda *_: setattr(state, "stop_requested", True))
        metrics = open(cfg.out / "metrics.jsonl", "a", encoding="utf-8") if is_main else None  # noqa: SIM115
        steps_file = None
        if is_main and log_settings.every:
            steps_file = open(cfg.out / STEPS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        reporters = None
        ok = False
        try:
            if is_main and log_settings.report_to:
                reporters = Reporters(log_settings.report_to, cfg.out, recorded, done_steps)
            self.logs = EpochLogs(metrics, reporters)
            with progress_bar(show_progress and is_main) as progress:
                self.progress = progress
                self.step_log = StepLog(
                    log_settings.every,
                    self.dist_info,
                    self.setup.steps_per_epoch,
                    cfg.epochs,
                    steps_file,
                    reporters,
                    progress,
                )
                while state.epoch < cfg.epochs:
                    self.train_logged_epoch()
                    if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
                        self.evaluate()
                    self.save("last.pt")
            ok = True
        finally:
            signal.signal(signal.SIGINT, previous)
            for file in (metrics, steps_file):
                if file:
                    file.close()
            if reporters:
                reporters.close(ok)

    def train_logged_epoch(self) -> None:
        """Train the epoch `state` is in (from its position) and log its line; `state` then
        stands at the next epoch's start. An epoch that diverged, trained no clip or was
        stopped by Ctrl-C (last.pt saved) raises instead."""
        cfg, setup, state, progress = self.cfg, self.setup, self.state, self.progress
        done = state.position.step
        setup.sampler.set_epoch(state.epoch, start=done * setup.micro)  # batches -> rank's items
        task = progress.add_task(
            f"epoch {state.epoch + 1}/{cfg.epochs}",
            total=done + len(setup.train_loader),
            completed=done,
            info="",
        )
        started = time.perf_counter()
        self.step_log.start_epoch(state.epoch, state.position.loss_sum, state.position.loss_clips)
        end = self.train_epoch(task)
        progress.remove_task(task)
        position = state.position
        diverged = end.diverged
        if diverged is None and not weights_finite(setup.model, self.dist_info):
            diverged = Divergence(setup.optimizer_steps(position.step), None)
        if diverged is not None:  # nothing of it saved: the checkpoints stay good
            last_saved = (cfg.out / "checkpoints" / "last.pt").exists()
            raise divergence(cfg, state.epoch + 1, diverged, last_saved)
        if end.stopped:
            self.save("last.pt")
            raise KeyboardInterrupt
        # one collective and one read-back for both counts
        counts = torch.tensor([position.skipped, position.clips], device=self.dist_info.device)
        skipped, clips = all_reduce_sum(counts).tolist()
        if clips == 0:  # never a loss of 0.0 for an epoch that trained nothing
            raise UserError(
                f"epoch {state.epoch + 1} read no training clip: all {skipped} videos were "
                f"skipped (unreadable, or shorter than --frames {cfg.frames}); check "
                "them with `python -m trainer check-data`."
            )
        loss = position.loss
        seconds = round(time.perf_counter() - started, 2)
        self.logs.write(
            {"epoch": state.epoch + 1, "train_loss": loss, "skipped": skipped, "seconds": seconds},
            {"epoch/train_loss": loss, "epoch/seconds": seconds},
            (state.epoch + 1) * setup.steps_per_epoch,
        )
        state.epoch, state.position = state.epoch + 1, EpochPosition()

    def train_epoch(self, task) -> EpochEnd:
        """One epoch, continuing from `state.position`, which it advances step by step
        (`task`: its progress bar). The loss is read back from the device only at check
        steps (`StepLog.checks`) and at the epoch's end, and there the epoch stops at a
        non-finite loss (naming the step it appeared at; the steps since were taken, and
        nothing of this epoch is saved) or after Ctrl-C reached any rank (one process stops
        at the step it came in). Each optimiser step is counted in `step_log`."""
        cfg, setup, dist_info, state = self.cfg, self.setup, self.dist_info, self.state
        setup.trained_model.train()
        position = state.position
        self.tally = LossTally(
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
                return self.read_back(step, None)
            done = train_step(
                setup.trained_model,
                setup.text,
                group,
                optimizer,
                setup.scaler,
                dist_info,
                cfg.amp,
                cfg.lam,
                self.tally,
                step,
            )
            position.clips += done.clips
            position.skipped += done.skipped
            lr = head_lr(optimizer)  # this step's, before the schedule moves on
            setup.scheduler.step()
            position.step += len(group)
            self.step_log.step(done.clips, waited)
            self.progress.update(task, advance=len(group))
            if self.step_log.checks(step) or (state.stop_requested and not dist_info.enabled):
                end = self.read_back(step, lr)
                self.progress.update(task, info=f"loss {position.loss:.4f}")
                if end.stopped or end.diverged:
                    return end

    def read_back(self, step: int, lr: float | None) -> EpochEnd:
        """A check step: the loss sums into `state.position`, the step line (with the step's
        `lr`; None: none), and whether any rank saw a non-finite loss or Ctrl-C (one
        collective)."""
        position, dist_info = self.state.position, self.dist_info
        position.loss_sum, position.loss_clips, diverged = self.tally.read()
        if lr is not None:
            self.step_log.line(step, position.loss_sum, position.loss_clips, lr)
        bad, stop = int(diverged is not None), int(self.state.stop_requested)
        if dist_info.enabled:
            flags = all_reduce_max(torch.tensor([bad, stop], device=dist_info.device))
            bad, stop = flags.tolist()
        if bad:  # a rank that saw none names this check's step
            return EpochEnd(diverged=diverged or Divergence(step, math.nan))
        return EpochEnd(stopped=bool(stop))

    def evaluate(self) -> None:
        """Evaluate after `state.epoch` epochs and log it; a new best (top-1, or mAP where
        multi-label) is saved as best.pt with its evaluation outputs."""
        cfg, setup, state = self.cfg, self.setup, self.state
        test = setup.data.test
        predictions = predict(
            setup.model, setup.text, setup.test_loader, self.dist_info, cfg.amp, self.progress
        )
        num_classes = len(setup.data.train.class_names)
        result = main_scores(predictions, num_classes, test.multi_label, self.dist_info)
        global_step = state.epoch * setup.steps_per_epoch
        self.logs.write(
            {"epoch": state.epoch, **result},
            {f"eval/{k}": v for k, v in result.items()},
            global_step,
        )
        key = "map" if test.multi_label else "top1"
        if state.best is None or result[key] > state.best[key]:
            state.best = {"epoch": state.epoch, **result}
            self.save("best.pt")
            if predictions is not None:  # the main rank's
                probs, labels, ids, _ = predictions
                write_eval_outputs(cfg.out, probs, labels, ids, test.class_names, test.multi_label)

    def save(self, name: str) -> None:
        """(Main rank) the checkpoint `name` (last.pt, best.pt) of the run's folder."""
        path = self.cfg.out / "checkpoints" / name
        save_checkpoint(self.setup, self.state, self.settings, self.dist_info, path)


@dataclass
class Divergence:
    """Where training stopped being finite: the optimiser step of the epoch (from 1) and
    its loss (None: the loss was finite but the weights were not)."""

    step: int
    loss: float | None


@dataclass
class EpochEnd:
    """How `train_epoch` ended: run through, stopped by Ctrl-C (on any rank), or at a
    non-finite loss (that step not taken)."""

    stopped: bool = False
    diverged: Divergence | None = None


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
