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
import json
import math
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_write_json, atomic_write_text

from .cache.dataset import cached_datasets
from .checkpoints import atomic_save, load_checkpoint, plain
from .config import (
    INPUTS,
    RunConfig,
    absolute_paths,
    check_recorded_inputs,
    input_paths,
    resume_differences,
)
from .data.dataset import EpochSampler, make_loader
from .data.layouts import folds
from .data.protocols import save_item_list
from .distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_min,
    all_reduce_sum,
    gather_with_grad,
    init_distributed,
    main_first,
)
from .environment import record_environment
from .evaluation import model_inputs, predict, score_predictions, write_eval_outputs
from .loss import storyboard_loss
from .model.aggregation import ClassText
from .paths import default_root, default_run_dir, default_subtexts, run_folder
from .precision import autocast, grad_scaler
from .progress import progress_bar
from .report import write_report
from .run_data import check_classes, check_clip_lengths, clip_datasets, prepare_data
from .run_log import STEPS_FILE, LogSettings, Reporters, StepLog, check_reporters
from .runs import build
from .schedule import make_optimizer, make_scheduler


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
    """Refuse to resume the run in `out` with settings other than those it ran with (its
    config.json, else the checkpoint's), except those of `RESUME_MAY_CHANGE` and inputs
    recorded at a path that no longer exists, given now where they are. -> config.json as
    the run now records it (the same, but for such moved inputs and for the relative paths
    and unset defaults of older runs, read from this folder)."""
    config_json = out / "config.json"
    saved = plain(_read_json(config_json) if config_json.exists() else state["config"])
    damaged = UserError(
        f"--resume: {config_json} is damaged (not the run's settings as JSON); restore it, or "
        "delete it to resume with the settings its checkpoint holds."
    )
    if not isinstance(saved, dict):
        raise damaged
    current = plain(dataclasses.asdict(cfg))
    try:
        recorded = plain(dataclasses.asdict(recorded_config(RunConfig.from_saved(saved))))
    except (TypeError, ValueError, AttributeError) as exc:
        raise damaged from exc
    recorded = {name: value for name, value in recorded.items() if name in saved}
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


class NonFiniteLoss(ArithmeticError):
    """A training step's loss was NaN or infinite (on some rank); the step was not taken."""

    def __init__(self, loss: float):
        super().__init__(f"the loss is {loss}")
        self.loss = loss


def train_step(
    model,
    text: ClassText,
    group: list[dict],
    optimizer,
    scaler,
    dist_info: DistInfo,
    amp: str,
    lam: float,
) -> tuple[list[tuple[float, int]], int]:
    """One optimiser step over the micro-batches `group` (gradient accumulation): forward
    under autocast, the loss of Eq. 13-15 over every rank's clips, backward, step. ->
    (per micro-batch that ran, its loss summed over its clips and its clip count; videos
    skipped). A non-finite loss on any rank is `NonFiniteLoss` on every rank, the step not
    taken: the weights stay those of the last good step."""
    device = dist_info.device
    # A micro-batch runs only where every rank has videos in it: the collectives below
    # must be entered by all ranks or none.
    live = [int(len(b["video_ids"]) > 0) for b in group]
    if dist_info.enabled:  # one process needs no collective (nor its device round trip)
        live = all_reduce_min(torch.tensor(live, device=device)).tolist()
    runs = sum(live)
    losses, skipped = [], 0
    for batch, alive in zip(group, live):
        skipped += len(batch["skipped"])
        if not alive:
            continue
        inputs = model_inputs(batch, device)
        labels = batch["labels"].to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(inputs, text)["logits"]
        # The loss sees the global batch; each rank back-propagates its own rows, so
        # scaling by world size gives the single-process gradient after DDP's mean.
        all_logits = gather_with_grad(logits.float())
        all_labels = gather_with_grad(labels)
        loss = storyboard_loss(all_logits, all_labels, lam)
        scaler.scale(loss * dist_info.world / runs).backward()
        losses.append((loss.item() * len(batch["video_ids"]), len(batch["video_ids"])))
    finite = int(all(math.isfinite(loss_sum) for loss_sum, _ in losses))
    if dist_info.enabled:  # every rank steps, or none does
        finite = int(all_reduce_min(torch.tensor(finite, device=device)).item())
    if not finite:
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(next((x for x, _ in losses if not math.isfinite(x)), math.nan))
    if runs:
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return losses, skipped


def train_epoch(
    model,
    text: ClassText,
    loader,
    optimizer,
    scheduler,
    scaler,
    cfg: RunConfig,
    dist_info: DistInfo,
    accumulation: int,
    start: dict,
    stop_flag: dict,
    progress,
    task,
    step_log: StepLog,
) -> dict:
    """One epoch, continuing from `start` (batches done, loss sum, clip count, skipped);
    returns the same counters at the end, with `stopped` set if Ctrl-C cut it short and
    `diverged` (the optimiser step of the epoch, from 1, and its loss) if a loss was not
    finite: the epoch stops there, that step not taken. Each optimiser step is counted in
    `step_log`."""
    model.train()
    device = dist_info.device
    total, count = start["loss_sum"], start["clips"]
    skipped, step = start["skipped"], start["step"]
    optimizer.zero_grad(set_to_none=True)
    batches = iter(loader)
    stopped, diverged = False, None
    while True:
        fetching = time.perf_counter()
        group = []
        for _ in range(accumulation):
            batch = next(batches, None)
            if batch is None:
                break
            group.append(batch)
        if not group:
            break
        waited = time.perf_counter() - fetching
        try:
            losses, missed = train_step(
                model, text, group, optimizer, scaler, dist_info, cfg.amp, cfg.lam
            )
        except NonFiniteLoss as exc:
            diverged = {"step": step // accumulation + 1, "loss": exc.loss}
            break
        for loss_sum, clips in losses:  # in order, as a running sum
            total, count = total + loss_sum, count + clips
        skipped += missed
        lr = head_lr(optimizer)  # this step's, before the schedule moves on
        scheduler.step()
        step += len(group)
        step_log.step(-(-step // accumulation), losses, waited, lr)
        progress.update(task, advance=len(group), info=f"loss {total / max(count, 1):.4f}")
        # Ctrl-C on any rank stops every rank after the same optimiser step.
        stop = int(stop_flag["stop"])
        if dist_info.enabled:
            stop = int(all_reduce_max(torch.tensor(stop, device=device)).item())
        if stop:
            stopped = True
            break
    return {
        "step": step,
        "loss_sum": total,
        "clips": count,
        "skipped": skipped,
        "stopped": stopped,
        "diverged": diverged,
    }


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


def divergence(cfg: RunConfig, epoch: int, diverged: dict, saved: bool) -> UserError:
    """The one sentence for a run stopped at a non-finite loss (or weights)."""
    what = (
        "the weights stopped being finite"
        if diverged["loss"] is None
        else f"the loss became {diverged['loss']}"
    )
    kept = (
        f"{cfg.out / 'checkpoints'} keeps the last good ones"
        if saved
        else "no checkpoint had been written"
    )
    return UserError(
        f"training diverged at epoch {epoch}, step {diverged['step']} ({what}), so the run "
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
    check_reporters(log_settings.report_to)
    cfg = recorded_config(cfg)
    dist_info = init_distributed(cfg.device)
    with contextlib.ExitStack() as held:

        def hold_folder() -> None:  # only the main rank writes; its refusal stops every rank
            if dist_info.is_main:
                held.enter_context(run_folder(cfg.out))

        main_first(hold_folder, dist_info)
        return _train(cfg, dist_info, resume, show_progress, log_settings)


def _train(
    cfg: RunConfig,
    dist_info: DistInfo,
    resume: bool,
    show_progress: bool,
    log_settings: LogSettings,
) -> dict:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    root, out, subtexts = cfg.root, cfg.out, cfg.subtexts
    fold = folds(cfg.dataset, cfg.split)[0]
    ckpt_dir = out / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    if last_path.exists() and not resume:
        raise UserError(
            f"{out} already holds a run: pass --resume to continue it or another --out."
        )
    state = None
    settings = plain(dataclasses.asdict(cfg))  # as JSON values: config.json and checkpoints
    recorded = settings  # config.json: the run as it began
    if resume and last_path.exists():  # (--split all: later folds start fresh)
        other = ckpt_dir / "best.pt"
        hint = (
            f"copy {other} over it to resume from the best epoch, or start over with another --out"
            if other.exists()
            else "start over with another --out"
        )
        state = load_checkpoint(last_path, dist_info.device, hint)
        recorded = check_resume(cfg, out, state)
    elif resume and dist_info.is_main:
        print(f"no checkpoint in {ckpt_dir}: starting fresh", file=sys.stderr)
    if dist_info.is_main and cfg.warmup_epochs > cfg.epochs:
        warnings.warn(
            f"--warmup-epochs {cfg.warmup_epochs:g} is more than --epochs {cfg.epochs}: the "
            f"learning rate rises for the whole run and ends at about "
            f"{cfg.epochs / cfg.warmup_epochs:.0%} of --lr {cfg.lr:g}, never reaching its peak; "
            "set --warmup-epochs below --epochs (e.g. a quarter of it).",
            stacklevel=2,
        )
    data = prepare_data(cfg, root, fold)
    if cfg.features is None and dist_info.is_main:
        check_clip_lengths(cfg, data)
    built = build(cfg, dist_info, subtexts)
    check_classes(data.train, built.class_names, subtexts)
    model, text = built.model, built.text

    if cfg.features is None:
        train_set, test_set = clip_datasets(
            cfg, data.train, data.train_items, data.test, built.spec_size
        )
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
    optimizer = make_optimizer(model, cfg.lr, cfg.backbone_lr_scale, cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_loader) / accumulation))  # optimiser steps
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = make_scheduler(optimizer, total_steps, max(warmup, 1))
    scaler = grad_scaler(dist_info.device, cfg.amp)

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
    done_steps = epoch * steps_per_epoch + -(-position["step"] // accumulation)
    if dist_info.is_main:
        # A resume (same settings, checked above) rewrites config.json only to record where
        # moved inputs are now, and older runs' relative paths as absolute ones.
        if _read_json(out / "config.json") != recorded:
            atomic_write_json(out / "config.json", recorded)
        record_environment(out, dist_info, resumed=state is not None)
        keep_logged(out / "metrics.jsonl", "epoch", epoch)
        keep_logged(out / STEPS_FILE, "global_step", done_steps)
        if data.fewshot is not None:
            save_item_list(data.fewshot, out / "fewshot.csv")

    stop = {"stop": False}
    previous = signal.signal(signal.SIGINT, lambda *_: stop.update(stop=True))
    log = open(out / "metrics.jsonl", "a", encoding="utf-8") if dist_info.is_main else None  # noqa: SIM115
    steps_log = None
    if dist_info.is_main and log_settings.every:
        steps_log = open(out / STEPS_FILE, "a", encoding="utf-8")  # noqa: SIM115
    reporters = None

    def save(name: str) -> None:
        if dist_info.is_main:
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "layout": layout,
                    "cuda_rng": torch.cuda.get_rng_state(dist_info.device)
                    if dist_info.device.type == "cuda"
                    else None,
                    "epoch": epoch,
                    "position": position,
                    "best": best,
                    "config": settings,
                },
                ckpt_dir / f"{name}.pt",
            )

    ok = False
    try:
        if dist_info.is_main and log_settings.report_to:
            reporters = Reporters(log_settings.report_to, out, recorded, done_steps)
        with progress_bar(show_progress and dist_info.is_main) as progress:
            step_log = StepLog(
                log_settings.every,
                dist_info,
                steps_per_epoch,
                cfg.epochs,
                steps_log,
                reporters,
                progress,
            )
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
                step_log.start_epoch(epoch)
                position = train_epoch(
                    ddp_model,
                    text,
                    train_loader,
                    optimizer,
                    scheduler,
                    scaler,
                    cfg,
                    dist_info,
                    accumulation,
                    position,
                    stop,
                    progress,
                    task,
                    step_log,
                )
                progress.remove_task(task)
                diverged = position.pop("diverged")
                if diverged is None and not weights_finite(model, dist_info):
                    diverged = {"step": -(-position["step"] // accumulation), "loss": None}
                if diverged is not None:  # nothing of it saved: the checkpoints stay good
                    raise divergence(cfg, epoch + 1, diverged, last_path.exists())
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
                line = {
                    "epoch": epoch + 1,
                    "train_loss": loss,
                    "skipped": skipped,
                    "seconds": round(time.perf_counter() - started, 2),
                }
                if log:
                    log.write(json.dumps(line) + "\n")
                    log.flush()
                if reporters:
                    reporters.scalars(
                        {"epoch/train_loss": loss, "epoch/seconds": line["seconds"]},
                        (epoch + 1) * steps_per_epoch,
                    )
                epoch, position = epoch + 1, dict(fresh)
                if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                    probs, labels, ids, _ = predict(
                        model, text, test_loader, dist_info, cfg.amp, progress
                    )
                    result = score_predictions(probs, labels, num_classes, data.test.multi_label)
                    key = "map" if data.test.multi_label else "top1"
                    if log:
                        log.write(json.dumps({"epoch": epoch, **result}) + "\n")
                        log.flush()
                    if reporters:
                        reporters.scalars(
                            {f"eval/{k}": v for k, v in result.items()}, epoch * steps_per_epoch
                        )
                    if best is None or result[key] > best[key]:
                        best = {"epoch": epoch, **result}
                        save("best")
                        if dist_info.is_main:
                            write_eval_outputs(
                                out,
                                probs,
                                labels,
                                ids,
                                data.test.class_names,
                                data.test.multi_label,
                            )
                save("last")
        ok = True
    finally:
        signal.signal(signal.SIGINT, previous)
        for file in (log, steps_log):
            if file:
                file.close()
        if reporters:
            reporters.close(ok)
    if dist_info.is_main:
        write_report(out)
    return best or {}
