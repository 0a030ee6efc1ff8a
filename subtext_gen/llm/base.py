"""The small protocol every LLM backend implements.

A backend receives jobs (one class, one prompt, the sample indices still missing) and
yields one `Completion` per job as soon as it is finished, in any order. Backends own
their concurrency (threads for HTTP, batches for a local model); `generate.py` owns keys,
resume, parsing and progress.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Job:
    """One chat prompt for one class, to be answered `len(samples)` times."""

    class_id: int
    class_name: str
    prompt_id: str
    samples: tuple[int, ...]
    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class Completion:
    """The replies to a job, aligned with `job.samples`; None where no reply came."""

    job: Job
    replies: tuple[str | None, ...]
    error: str | None = None


class Backend(Protocol):
    """What `generate` needs from an LLM backend."""

    llm: str  # written into every row, e.g. "openai:gpt-3.5-turbo"

    def complete(self, jobs: Sequence[Job]) -> Iterator[Completion]: ...

    def close(self) -> None: ...
