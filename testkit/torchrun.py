"""Several processes on one machine as the tests run them: gloo ranks spawned in-process
(`spawn_gloo`), and `torchrun ... -m trainer COMMAND` as the tests, the benchmark and the
GPU check run it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable

from testkit.cli import REPO, flag_args, module_command, module_env


def spawn_gloo(worker: Callable, ranks: int, *args) -> dict:
    """`worker(rank, ranks, out, *args)` in `ranks` processes that torchrun's environment
    (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT on a free port) makes
    one gloo run once it calls `init_distributed("cpu")` (or `init_process_group("gloo")`);
    -> `out`, the dict each rank writes its results into (by rank). The ranks start
    `worker` together (after every one has imported it), so a rendezvous under a timeout of
    a second or two holds. `worker` must be a module-level function (it is pickled)."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out, started = manager.dict(), manager.Barrier(ranks)
    mp.spawn(_ranked, args=(ranks, port, worker, out, started, args), nprocs=ranks, join=True)
    return dict(out)


def _ranked(rank: int, ranks: int, port: int, worker: Callable, out, started, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(ranks),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(ranks),
    )
    started.wait()
    worker(rank, ranks, out, *args)


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
