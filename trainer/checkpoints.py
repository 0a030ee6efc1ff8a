"""Checkpoints that never run code.

A run's `checkpoints/best.pt` and `last.pt` hold tensors and plain data only (numbers,
strings, lists, dicts: the settings are stored as JSON values), and `load_checkpoint` reads
them with `torch.load(weights_only=True)`: a file that holds anything else (a pickled
object whose loading would run code) is refused in one sentence and never executed.
Checkpoints written before this rule held `pathlib` paths in their settings; paths are the
one other type allowed, since making one runs no code. The exported model folder, which
holds no pickle at all, is `trainer/export.py`'s.
"""

from __future__ import annotations

import json
import pathlib
from pathlib import Path

import torch

from storyboard_common.errors import UserError, first_line, unsafe_load_reason
from storyboard_common.files import json_paths

# Types a checkpoint may hold besides tensors and plain data: paths (settings of older runs).
_ALLOWED_GLOBALS = [
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
]


def load_checkpoint(path: Path, map_location, hint: str) -> dict:
    """A run checkpoint, read with `weights_only=True`; a one-sentence UserError naming the
    file, ending with `hint`, when it holds code or other objects (refused unexecuted), is
    truncated or damaged, or is not a run's checkpoint."""
    try:
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle or I/O: the file is at fault
        unsafe = unsafe_load_reason(exc)
        if unsafe is not None:
            raise UserError(
                f"{path} holds {unsafe}, not only tensors and plain data: loading it could run "
                "code, so it is refused (nothing in it was run); use checkpoints written by "
                "`trainer run`, or an exported model folder (`trainer export`)."
            ) from exc
        raise UserError(
            f"{path} is not a readable checkpoint (truncated or damaged: {first_line(exc, 120)}); "
            f"{hint}."
        ) from exc
    if not isinstance(state, dict) or not {"model", "config"} <= set(state):
        raise UserError(f"{path} is not a Storyboard run checkpoint; {hint}.")
    return state


def check_finite_weights(weights: dict[str, torch.Tensor], path: Path | str, hint: str) -> None:
    """Refuse weights that are not all finite (NaN or infinity: a diverged run, a damaged
    or edited file) in one sentence naming `path`, their file, and a tensor, ending with
    `hint`; every way a model is loaded (a run's checkpoint, an exported folder, the Hub,
    a resumed run) calls it before building anything on them."""
    broken = [
        name
        for name, tensor in weights.items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if broken:
        more = f" and {len(broken) - 1} more tensor(s)" if len(broken) > 1 else ""
        raise UserError(
            f"{path} holds weights that are not finite (NaN or infinity) in {broken[0]}{more}, "
            f"the mark of a diverged run or a damaged file: it is refused; {hint}."
        )


def json_values(value):
    """`value` as JSON types (paths become strings): what a checkpoint stores as settings."""
    return json.loads(json.dumps(value, default=json_paths))
