"""`torchrun ... -m trainer COMMAND` as the tests, the benchmark and the GPU check run it."""

from __future__ import annotations

import json
import subprocess

from testkit.cli import REPO, flag_args, module_command, module_env


def torchrun_trainer(
    ranks: int, command: str, flags: dict[str, object], env: dict | None = None, timeout=600
) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node RANKS -m trainer COMMAND` with `flags`
    (`{"root": path, "frames": 4}` gives `--root path --frames 4`; True gives the bare flag)
    from the repository root, its output captured."""
    args = ["--standalone", f"--nproc_per_node={ranks}", "-m", "trainer", command]
    return subprocess.run(
        module_command("torch.distributed.run", *args, *flag_args(flags)),
        cwd=REPO,
        capture_output=True,
        text=True,
        env=module_env(env),
        timeout=timeout,
    )


def json_summary(done: subprocess.CompletedProcess, what: str) -> dict:
    """The one JSON line rank 0 prints on stdout (`--json`); a failure raises RuntimeError
    with the end of stderr."""
    if done.returncode != 0:
        raise RuntimeError(f"torchrun {what} failed: {done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if len(lines) != 1:
        raise RuntimeError(f"expected one JSON summary (rank 0's), got: {done.stdout[-2000:]}")
    return json.loads(lines[0])


def torchrun_cache_features(
    ranks: int, flags: dict[str, object], env: dict | None = None, device: str = "cpu"
) -> dict:
    """Run `torchrun --standalone --nproc_per_node RANKS -m trainer cache-features --device
    DEVICE --json` with `flags` from the repository root; -> the summary rank 0 prints, the
    one JSON line of stdout. A failure raises RuntimeError with the end of stderr."""
    flags = {"device": device, "json": True, **flags}
    return json_summary(torchrun_trainer(ranks, "cache-features", flags, env), "cache-features")
