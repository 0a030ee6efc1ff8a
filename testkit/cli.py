"""The CLIs as the tests run them: in a subprocess (`run_module`, `subtext_cli`,
`trainer_cli`) or in this process (`run_app`); the files the tests name (`REPO`,
`TINY_CLIP_CONFIG`) and the JSON-lines files runs write, read back (`lines`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from storyboard_common.resources import data_path

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP_CONFIG = data_path("clip", "TinyCLIP-test.json")


def module_command(module: str, *args) -> list[str]:
    """The command line of `python -m MODULE ARGS` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]


def flag_args(flags: dict) -> list:
    """Options from a dict: {"batch_size": 32, "json": True} -> ["--batch-size", 32, "--json"]."""
    args = []
    for name, value in flags.items():
        args += [f"--{name.replace('_', '-')}"] + ([] if value is True else [value])
    return args


def module_env(env: dict | None = None) -> dict:
    """This environment, importing this checkout whatever the folder; `env` adds to it."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **(env or {})}


def run_module(module: str, *args, cwd: Path = REPO, env: dict | None = None, timeout=600):
    """`python -m MODULE ARGS` in a subprocess started in `cwd` (the repository root unless
    given), importing this checkout whatever the folder; `env` adds to the environment."""
    return subprocess.run(
        module_command(module, *args),
        cwd=cwd,
        capture_output=True,
        text=True,
        env=module_env(env),
        timeout=timeout,
    )


def subtext_cli(*args, env: dict | None = None):
    """`python -m subtext_gen ARGS` in a subprocess, from the repository root."""
    return run_module("subtext_gen", *args, env=env, timeout=300)


def trainer_cli(*args, cwd: Path = REPO, timeout=600):
    """`python -m trainer ARGS` in a subprocess, from `cwd` (the repository root)."""
    return run_module("trainer", *args, cwd=cwd, timeout=timeout)


def run_app(app, *args):
    """A typer app (`subtext_gen.__main__.app`, `trainer.__main__.app`) run in this process on
    ARGS -> (exit code, its output (stdout and stderr), the UserError or None): a UserError is
    what the CLI prints as its one-line `error: ...` with exit status 2."""
    from typer.testing import CliRunner

    from storyboard_common.errors import UserError

    done = CliRunner().invoke(app, [str(a) for a in args])
    error = done.exception if isinstance(done.exception, UserError) else None
    if done.exception is not None and error is None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return done.exit_code, done.output, error


def lines(path):
    """The records of a JSON-lines file (metrics.jsonl, steps.jsonl, a journal)."""
    return [json.loads(x) for x in path.read_text().splitlines()]
