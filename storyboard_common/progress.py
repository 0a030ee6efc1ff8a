"""The progress bars of every long loop (training, evaluation, cache building, world-CLIP
pre-training), and the lines printed while one runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

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


class Heartbeat:
    """A line through `say` whenever `every` seconds of `clock` have passed since the last
    one (or since the start), for loops whose bar is off, so that a log shows the loop is
    alive: `make demo` pre-trains its CLIP for minutes under a study that prints lines only.
    `beat(text)` is called after each unit of work; the line is `text` and the elapsed time.
    """

    def __init__(
        self,
        say: Callable[[str], None],
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.say, self.every, self.clock = say, every, clock
        self.started = self.last = clock()

    def beat(self, text: str) -> None:
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.say(f"{text}, {now - self.started:.0f}s elapsed")
