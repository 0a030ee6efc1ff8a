"""What a run logs besides metrics.jsonl: a line every `--log-every` optimiser steps (on the
console above the progress bar, and appended to `steps.jsonl`), and the same scalars with
the epoch metrics to TensorBoard and Weights & Biases (`--report-to`, optional extras).

Every scalar goes to the reporters at the run's global optimiser step (`epoch *
steps_per_epoch + step`), the epoch metrics at the step that ends their epoch, so that a
resumed run continues each curve where its checkpoint left it. Only the main rank writes.
"""

from __future__ import annotations

import importlib
import json
import math
import netrc
import os
import resource
import secrets
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_write_text
from storyboard_common.progress import print_line

from .distributed import DistInfo, all_reduce_sum
from .paths import writable_dir

STEPS_FILE = "steps.jsonl"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"  # what `wandb.init(dir=out)` writes in
WANDB_ID_FILE = "wandb_run_id.txt"  # the W&B run a resumed run continues
WANDB_ID_CHARS = string.ascii_lowercase + string.digits  # as W&B's own run ids
# Each reporter: the module it needs and the pyproject extra that installs it.
REPORTERS = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb"}


@dataclass(frozen=True)
class LogSettings:
    every: int = 0  # optimiser steps between step lines; 0: none
    report_to: tuple[str, ...] = ()  # names of REPORTERS


def parse_report_to(value: str | None) -> tuple[str, ...]:
    """`--report-to tensorboard,wandb` -> the reporters' names (none: empty); an unknown one
    is refused in one sentence."""
    names = [name.strip() for name in (value or "").split(",") if name.strip()]
    names = [] if names == ["none"] else names
    for name in names:
        if name not in REPORTERS:
            raise UserError(
                f"--report-to takes {' and/or '.join(REPORTERS)} (comma-separated), not {name!r}."
            )
    return tuple(dict.fromkeys(names))


def _reporter_module(name: str):
    try:
        return importlib.import_module(REPORTERS[name])
    except ImportError:
        raise UserError(
            f"--report-to {name} needs the {name} package: pip install 'storyboard[{name}]'."
        ) from None


# W&B modes that need no account, and the W&B host a key is looked up for in ~/.netrc.
WANDB_LOCAL_MODES = ("offline", "disabled", "dryrun")
WANDB_HOST = "api.wandb.ai"


def check_reporters(names: tuple[str, ...], out: Path) -> None:
    """Refuse, before the run folder `out` is made or anything written in it, a reporter
    that cannot work: its package not installed, its folder in `out` not a folder or not
    writable, or W&B without an API key (WANDB_API_KEY, `wandb login`'s ~/.netrc entry)
    nor a mode that needs none (WANDB_MODE offline or disabled)."""
    for name in names:
        _reporter_module(name)
        folder = out / (TENSORBOARD_DIR if name == "tensorboard" else WANDB_DIR)
        if folder.is_symlink() or folder.exists():
            if not folder.is_dir():
                raise UserError(
                    f"--report-to {name}: {folder} is not a folder (a file is where its folder "
                    "should be); move it away or use another --out."
                )
            writable_dir(folder, f"--report-to {name}: the folder")
    if "wandb" in names and not _wandb_can_log():
        raise UserError(
            f"--report-to wandb needs a W&B API key: set WANDB_API_KEY or run `wandb login`, "
            f"or set WANDB_MODE=offline to keep the log in {out / WANDB_DIR} (sync it later)."
        )


def _wandb_can_log() -> bool:
    """Whether W&B has a key (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, or an entry for its
    host in the netrc file it reads) or a mode that needs none."""
    if os.environ.get("WANDB_MODE", "").lower() in WANDB_LOCAL_MODES:
        return True
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1", "yes"):
        return True
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    base = os.environ.get("WANDB_BASE_URL", f"https://{WANDB_HOST}")
    host = base.split("://")[-1].split("/")[0].split(":")[0]
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Reporters:
    """The reporters of `--report-to`, open on the main rank: `scalars(values, step)` sends
    to each; `close(ok)` ends them."""

    def __init__(self, names: tuple[str, ...], out: Path, config: dict, done_steps: int):
        self.writer = self.wandb_run = None
        if "tensorboard" in names:
            summary_writer = _reporter_module("tensorboard").SummaryWriter
            # A resumed run drops what a killed one logged after its checkpoint.
            self.writer = summary_writer(str(out / TENSORBOARD_DIR), purge_step=done_steps + 1)
        if "wandb" in names:
            wandb = _reporter_module("wandb")
            id_file = out / WANDB_ID_FILE
            if id_file.exists():
                run_id = id_file.read_text(encoding="utf-8").strip()
            else:
                run_id = "".join(secrets.choice(WANDB_ID_CHARS) for _ in range(8))
                atomic_write_text(id_file, run_id + "\n")
            self.wandb_run = wandb.init(
                dir=str(out),
                project=os.environ.get("WANDB_PROJECT", "storyboard"),
                name=out.name,
                id=run_id,
                resume="allow",
                config=config,
            )

    def scalars(self, values: dict[str, float], step: int) -> None:
        values = {k: v for k, v in values.items() if isinstance(v, int | float)}
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=0 if ok else 1)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """-> (MiB, what): CUDA's max allocated on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10), "max rss"


# Optimiser steps between reads of the loss (a host-device synchronisation: the finite
# check, and the Ctrl-C check across ranks) when no step lines are asked for.
CHECK_EVERY = 50


class StepLog:
    """Counts the optimiser steps of a run on every rank and, every `every` global steps,
    logs one line of the steps since the last line (or the epoch's start): loss, the head's
    learning rate, clips/s over all ranks, the share of that time spent waiting for the
    loader, and peak memory. The loss is read from the device only at check steps (`checks`:
    the line steps, or every CHECK_EVERY steps without lines). The clip count is summed over
    ranks, so every rank calls `step` and `line` at the same steps."""

    def __init__(
        self,
        every: int,
        dist_info: DistInfo,
        steps_per_epoch: int,
        epochs: int,
        log,
        reporters: Reporters | None,
        progress,
    ):
        self.every, self.dist_info = every, dist_info
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.log, self.reporters, self.progress = log, reporters, progress
        self.epoch = 0
        self._reset(0.0, 0.0)

    def _reset(self, loss_sum: float, loss_clips: float) -> None:
        self.started = time.perf_counter()
        self.waited = 0.0
        self.clips = 0
        self.since = (loss_sum, loss_clips)  # the loss sums at the last line

    def start_epoch(self, epoch: int, loss_sum: float, loss_clips: float) -> None:
        """Epoch `epoch` (from 0) starts or resumes with the loss sums of its steps done:
        evaluation time is no step's."""
        self.epoch = epoch
        self._reset(loss_sum, loss_clips)

    def global_step(self, step: int) -> int:
        return self.epoch * self.steps_per_epoch + step

    def checks(self, step: int) -> bool:
        """Whether optimiser step `step` of the epoch (from 1) reads the loss back."""
        return self.global_step(step) % (self.every or CHECK_EVERY) == 0

    def step(self, clips: int, waited: float) -> None:
        """An optimiser step is done: `clips` trained on this rank, `waited` seconds spent
        fetching its batches."""
        self.waited += waited
        self.clips += clips

    def line(self, step: int, loss_sum: float, loss_clips: float, lr: float) -> None:
        """At a check step, with the epoch's loss sums read back: the step line, when one is
        due (every `every` global steps)."""
        if not self.every or self.global_step(step) % self.every:
            return
        seconds = max(time.perf_counter() - self.started, 1e-9)
        clips = self.clips
        if self.dist_info.enabled:
            clips = int(all_reduce_sum(torch.tensor(clips, device=self.dist_info.device)))
        memory, kind = peak_memory(self.dist_info.device)
        summed, counted = loss_sum - self.since[0], loss_clips - self.since[1]
        line = {
            "epoch": self.epoch + 1,
            "step": step,
            "global_step": self.global_step(step),
            "loss": summed / counted if counted else math.nan,
            "lr": lr,
            "clips_per_s": clips / seconds,
            "data_wait": min(self.waited / seconds, 1.0),
            "memory_mib": memory,
        }
        self._reset(loss_sum, loss_clips)
        if not self.dist_info.is_main:
            return
        print_line(
            self.progress,
            f"epoch {line['epoch']}/{self.epochs} step {step}/{self.steps_per_epoch} "
            f"loss {line['loss']:.4f} lr {lr:.3g} {line['clips_per_s']:.1f} clips/s "
            f"data wait {line['data_wait']:.0%} memory {memory:,.0f} MiB ({kind})",
        )
        self.log.write(json.dumps(line) + "\n")
        self.log.flush()
        if self.reporters is not None:
            names = ("loss", "lr", "clips_per_s", "data_wait", "memory_mib")
            self.reporters.scalars({f"train/{k}": line[k] for k in names}, line["global_step"])
