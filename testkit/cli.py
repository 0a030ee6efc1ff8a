"""The two CLIs as the tests run them: in a subprocess from the repository root (`cli`), or
in this process (`run_app`); the files the tests name (`REPO`, `TINY_CLIP_CONFIG`) and
JSON-lines outputs read back (`lines`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from storyboard_common.resources import data_path

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP_CONFIG = data_path("clip", "TinyCLIP-test.json")


def cli(*args, env=None):
    """`python -m subtext_gen ARGS` in a subprocess, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "subtext_gen", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


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
    return [json.loads(x) for x in path.read_text().splitlines()]
