"""`torchrun ... -m trainer cache-features` as the tests and the benchmark run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from testkit.cli import REPO


def torchrun_cache_features(ranks: int, flags: dict[str, object], env: dict | None = None) -> dict:
    """Run `torchrun --standalone --nproc_per_node RANKS -m trainer cache-features --device
    cpu --json` with `flags` (`{"root": path, "frames": 4}` gives `--root path --frames 4`)
    from the repository root; -> the summary rank 0 prints, the one JSON line of stdout.
    A failure raises RuntimeError with the end of stderr."""
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={ranks}",
        "-m",
        "trainer",
        "cache-features",
        "--device",
        "cpu",
        "--json",
    ]
    for name, value in flags.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(
        args,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"torchrun cache-features failed: {done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if len(lines) != 1:
        raise RuntimeError(f"expected one JSON summary (rank 0's), got: {done.stdout[-2000:]}")
    return json.loads(lines[0])
