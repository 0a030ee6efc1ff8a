"""Recording and resuming a run: what its folder records (config.json, environment.json,
the few-shot list, the logs cut back to its checkpoint), the checkpoints themselves, where
a run stands (`TrainingState`), the check that a resumed run has the settings it was
trained with, and the checkpoint it resumes from. What `--resume` may change is a rule of
the settings, beside them in `config.py` (`RESUME_MAY_CHANGE`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_save, atomic_write_json, atomic_write_text

from .checkpoints import check_finite_weights, json_values, load_checkpoint
from .config import (
    INPUTS,
    RunConfig,
    check_recorded_inputs,
    input_paths,
    resolved_config,
    resume_differences,
    setting_differences,
)
from .data.protocols import save_item_list
from .distributed import DistInfo, gather_objects
from .environment import record_environment
from .run_data import RunData
from .run_log import STEPS_FILE
from .run_setup import TrainingSetup
from .settings import flag_name


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
class TrainingState:
    """Where a run stands: the epochs done, the position inside the next one, the best
    evaluation so far (with its epoch), and whether Ctrl-C asked it to stop."""

    epoch: int = 0
    position: EpochPosition = field(default_factory=EpochPosition)
    best: dict | None = None
    stop_requested: bool = False  # set by SIGINT: stop after the current optimiser step


def _read_json(path: Path) -> dict | None:
    """A JSON file's value; None when it is absent or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def check_resume(cfg: RunConfig, out: Path, state: dict) -> dict:
    """Refuse to resume the run in `out` with settings other than those it was trained with
    (the record of its checkpoint `state`, which no one edits), except those of
    `RESUME_MAY_CHANGE` and inputs recorded at a path that no longer exists, given now where
    they are; refuse a config.json that says otherwise (edited since) or is damaged. `cfg`
    is resolved (`resolved_config`), and so is each record before it is compared with it.
    -> its config.json as the run now records it (the same, but for such moved inputs and
    for the relative paths and unset defaults of older runs, read from this folder)."""
    config_json = out / "config.json"
    last = out / "checkpoints" / "last.pt"
    recorded = json_values(state["config"])
    trained = _saved_settings(recorded, f"--resume: {last} is damaged")
    config = recorded
    if config_json.exists():
        config = json_values(_read_json(config_json))
        damaged = (
            f"--resume: {config_json} is damaged (not the run's settings as JSON); restore it, "
            "or delete it to resume with the settings its checkpoint holds"
        )
        edited = [
            (flag_name(name), old, new)
            for name, old, new in setting_differences(trained, _saved_settings(config, damaged))
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
    given = dataclasses.asdict(cfg)
    gone = {name: path for name, path in input_paths(trained).items() if not Path(path).exists()}
    unchanged = {name: path for name, path in gone.items() if given[name] == trained[name]}
    check_recorded_inputs(unchanged)
    trained.update({name: given[name] for name in gone})
    differences = resume_differences(trained, given)
    if differences:
        raise UserError(
            f"--resume: {out} was trained with other settings ({', '.join(differences)}); "
            f"resume with the flags of its config.json, or start a new run with another --out."
        )
    paths = [name for name in (*INPUTS, "out") if name in trained]
    return {**config, **json_values({name: trained[name] for name in paths})}


def _saved_settings(saved, damaged: str) -> dict:
    """A run's saved settings (config.json or a checkpoint's, as JSON) as settings a run
    holds once resolved (`resolved_config`), the keys it saved only: compared with a
    resolved config's as they are; UserError `damaged` when they are not a run's settings."""
    try:
        if not isinstance(saved, dict):
            raise TypeError(saved)
        resolved = dataclasses.asdict(resolved_config(RunConfig.from_saved(saved)))
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(damaged + ".") from exc
    return {name: value for name, value in resolved.items() if name in saved}


def checkpoint_to_resume(cfg: RunConfig, dist_info: DistInfo, resume: bool) -> dict | None:
    """The state of the run's last.pt when `resume` continues it, in CPU memory (`restore`
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


def restore(
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


def save_checkpoint(
    setup: TrainingSetup, state: TrainingState, settings: dict, dist_info: DistInfo, path: Path
) -> None:
    """(Main rank) the checkpoint `path`: weights, optimiser, schedule, scaler, random state
    and `state`, with the run's `settings`; enough to resume exactly (`restore`)."""
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


def prepare_run_folder(
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
