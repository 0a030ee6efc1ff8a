"""One writer per folder: an exclusive `flock` on a lock file inside it, held for the
writer's whole life and dropped by the OS when the holder exits, however it dies (a kill
never leaves a folder stuck). Stage one locks an artifact folder (`generate`), stage two
a run folder (`trainer run`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError
from .files import os_reason

_HELD_LOCKS: set[str] = set()  # lock files this process holds


@contextmanager
def folder_lock(directory: Path, lock_name: str, writer: str, folder: str) -> Iterator[None]:
    """Hold an exclusive lock on `<directory>/<lock_name>` for the block, creating the
    folder if needed. While another process holds it: one sentence naming `writer` (who
    else writes, e.g. "`generate`") and the folder. `folder` names what the folder is
    ("the artifact folder") in the sentence for one that cannot be written. Nested takes
    in the same process pass through (one call writing a folder in several steps)."""
    import fcntl

    directory = Path(directory)
    lock_path = directory / lock_name
    key = str(lock_path.resolve())
    if key in _HELD_LOCKS:
        yield
        return
    while True:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(f"cannot write to {folder} {directory} ({os_reason(exc)}).") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise UserError(
                f"another {writer} is writing {directory}; wait for it to finish or use "
                "another --out."
            ) from exc
        try:  # a holder that removed the file on its way out (`new_dir`) left ours unlinked
            current = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    _HELD_LOCKS.add(key)
    try:
        yield
    finally:
        _HELD_LOCKS.discard(key)
        os.close(fd)  # releases the lock
