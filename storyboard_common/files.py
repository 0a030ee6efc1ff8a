"""Writing files so that nothing is half-written: every file the project writes for later
use goes through `atomic_write` (a temporary file beside the target, renamed into place).
Also the one artifacts folder both stages default to (`$STORYBOARD_ARTIFACTS`)."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import UserError

ARTIFACTS_ENV = "STORYBOARD_ARTIFACTS"


def artifacts_root() -> Path:
    """Where generated artifacts, caches and runs go by default: `$STORYBOARD_ARTIFACTS`,
    else (unset or empty, as `$STORYBOARD_DATA`) `artifacts/` in the working directory."""
    return Path(os.environ.get(ARTIFACTS_ENV) or "artifacts")


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


def make_folder(folder: Path, path: Path) -> None:
    """`mkdir -p folder` for writing `path` in it; a file in the way (mkdir's reason: "File
    exists") is a `UserError` naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        for blocker in (folder, *folder.parents):
            if os.path.lexists(blocker) and not blocker.is_dir():
                raise UserError(
                    f"could not write {path}: {blocker} is not a folder; nothing was changed."
                ) from exc
        raise


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside `path` (`<name>.<random><suffix>`) for the block to write;
    renamed onto `path` when the block ends, removed if it raises: a reader never sees a
    half-written file, a crash leaves the old one. For writers that need a file name (a
    video muxer); `atomic_write` is the one for writers that take a file object.

    The file gets the mode a plain `open()` would give it (0o666 less the umask, or the
    replaced file's mode). An OSError (read-only folder, full disk, ...) removes the
    temporary file and becomes a one-sentence `UserError` naming `path`.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        make_folder(path.parent, path)
        mode = _new_file_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
        os.fchmod(fd, mode)
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(
                f"could not write {path} ({os_reason(exc)}); nothing was changed."
            ) from exc
        raise


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files that `atomic_path` writers of `path` left when they were
    killed (`<name>.<random>.tmp` beside it; SIGKILL runs no clean-up): call it only while
    holding the lock of the one writer of `path`, so no live write loses its file."""
    path = Path(path)
    stale = sorted(path.parent.glob(f"{glob.escape(path.name)}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(fh)` into a binary file at `path` through `atomic_path`. Every file the
    project writes for later use goes through here or `atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


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


def json_paths(value):
    """`json.dumps`'s `default` for paths (written as strings); anything else unencodable
    is the usual TypeError."""
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def atomic_write_json(path: Path, value, indent: int | None = 2) -> None:
    """`atomic_write` of a JSON document (paths written as strings), newline-terminated."""
    atomic_write_text(path, json.dumps(value, indent=indent, default=json_paths) + "\n")


def atomic_savefig(figure, path: Path, **options) -> None:
    """A matplotlib `figure.savefig` through `atomic_write`, in the format of the suffix."""
    suffix = Path(path).suffix.lstrip(".")
    atomic_write(path, lambda fh: figure.savefig(fh, format=suffix, **options))


def atomic_save(obj, path: Path) -> None:
    """`torch.save` through `atomic_write`: a checkpoint is never half-written."""
    import torch  # here: stage one reads this module and never needs torch

    atomic_write(path, lambda fh: torch.save(obj, fh))
