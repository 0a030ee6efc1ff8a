"""Writing files so that nothing is half-written: every file the project writes for later
use goes through `atomic_write` (a temporary file beside the target, renamed into place).
Also the one artifacts folder both stages default to (`$STORYBOARD_ARTIFACTS`)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import UserError

ARTIFACTS_ENV = "STORYBOARD_ARTIFACTS"


def artifacts_root() -> Path:
    """Where generated artifacts, caches and runs go by default: `$STORYBOARD_ARTIFACTS`,
    else `artifacts/` in the working directory."""
    return Path(os.environ.get(ARTIFACTS_ENV, "artifacts"))


def _new_file_mode(path: Path) -> int:
    """The mode a plain `open(path, "w")` leaves: an existing file's, else 0o666 less umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        pass
    try:  # Linux: read the umask without changing it (os.umask is process-wide, not atomic)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(fh)` into a temporary binary file beside `path` (`<name>.<random>.tmp`), then
    rename it into place: a reader never sees a half-written file, a crash leaves the old
    one. Every file the project writes for later use goes through here.

    The file gets the mode a plain `open()` would give it (0o666 less the umask, or the
    replaced file's mode). An OSError (read-only folder, full disk, ...) removes the
    temporary file and becomes a one-sentence `UserError` naming `path`.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _new_file_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            write(fh)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(
                f"could not write {path} ({os_reason(exc)}); nothing was changed."
            ) from exc
        raise


def os_reason(exc: OSError) -> str:
    """An OSError's reason without its file name (messages name the path themselves)."""
    return exc.strerror or type(exc).__name__


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_table(table, path: Path) -> None:
    """`atomic_write` of a Parquet file (a pyarrow Table)."""
    import pyarrow.parquet as pq

    atomic_write(path, lambda fh: pq.write_table(table, fh))


def atomic_write_json(path: Path, value, indent: int | None = 2) -> None:
    """`atomic_write` of a JSON document (paths written as strings), newline-terminated."""
    text = json.dumps(value, indent=indent, default=lambda v: str(v) if isinstance(v, Path) else v)
    atomic_write_text(path, text + "\n")


def atomic_savefig(figure, path: Path, **options) -> None:
    """A matplotlib `figure.savefig` through `atomic_write`, in the format of the suffix."""
    suffix = Path(path).suffix.lstrip(".")
    atomic_write(path, lambda fh: figure.savefig(fh, format=suffix, **options))
