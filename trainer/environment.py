"""The environment a run started in (`environment.json` in its folder: one entry per start,
a resume appends one): library versions, the code's git commit, the command line, the
machine and its device, the number of processes."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from storyboard_common.files import atomic_write_json

from .distributed import DistInfo

ENVIRONMENT_FILE = "environment.json"
# Distributions whose versions change a run's numbers (or name this code's release).
PACKAGES = ("storyboard", "torch", "open_clip_torch", "transformers", "numpy")
CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) holding trainer/
GIT_TIMEOUT_S = 5


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(CODE_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hangs (a network mount)
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict | None:
    """{"commit", "dirty"} of the checkout this code runs from; None when it is not a git
    checkout's (an installed wheel, even inside some other repository)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != CODE_ROOT:
        return None
    commit = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if changes is None else bool(changes)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The CUDA card's name, else the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def environment(dist_info: DistInfo, resumed: bool) -> dict:
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed": resumed,
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "git": git_state(),
        "argv": list(sys.argv),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "device": str(dist_info.device),
        "device_name": device_name(dist_info.device),
        "world_size": dist_info.world,
    }


def record_environment(out: Path, dist_info: DistInfo, resumed: bool) -> None:
    """Append this start's `environment` to `out/environment.json` (a JSON list; one that
    cannot be read as one is started over)."""
    path = out / ENVIRONMENT_FILE
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entries = []
    if not isinstance(entries, list):
        entries = []
    atomic_write_json(path, [*entries, environment(dist_info, resumed)])
