"""The progress bars of every long loop (training, evaluation, cache building, world-CLIP
pre-training), and the lines printed while one runs.
"""

from __future__ import annotations

import sys

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def print_line(progress: Progress, line: str) -> None:
    """`line` above the live bar (rich redraws the bar below it); on stderr when the bar is
    off, where stdout may hold a command's JSON alone (`--json`)."""
    if progress.disable:
        print(line, file=sys.stderr, flush=True)
    else:
        progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
