"""A Hugging Face Hub that cannot be reached, and a local Hugging Face cache, for tests.

`refused_endpoint` is a loopback address where nothing listens (connection refused);
`Blackhole` accepts connections and never answers (only a timeout ends a request), and
counts them; `cache_repo` writes a folder into a Hugging Face cache as the snapshot of a
repository, as `hf download` leaves it.
"""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path


def refused_endpoint() -> str:
    """`http://127.0.0.1:PORT` of a port just freed: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Blackhole:
    """A loopback server that accepts every connection and never sends a byte.

    `with Blackhole() as hole:` gives `hole.url`; `hole.connections` counts connections."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.connections = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed
                return
            self.connections += 1
            self._held.append(conn)  # kept open, never answered

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() that close() would not
        self._sock.close()
        self._thread.join()
        for conn in self._held:
            conn.close()


def cache_repo(cache: Path, repo: str, folder: Path, commit: str = "a" * 40) -> Path:
    """Copy `folder` into the Hugging Face cache `cache` (HF_HUB_CACHE) as `repo`'s snapshot
    at `commit`, its `main`; -> the snapshot folder."""
    root = Path(cache) / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot
