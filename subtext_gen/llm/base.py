"""The small protocol every LLM backend implements.

A backend receives jobs (one class, one prompt, the sample indices still missing) and
yields one `Completion` per job as soon as it is finished, in any order. Backends own
their concurrency (an event loop for HTTP, batches for a local model); `generate.py` owns
keys, resume, parsing and progress. A backend that holds a secret (an API key) passes every
completion through `Completion.redacted` before it leaves the backend, so no reply or error
text that echoes the secret is journaled, stored or printed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

REDACTED = "[redacted]"  # what a secret echoed in a reply becomes


class ServerUnreachable(Exception):
    """The backend's server could not be reached for a while: the run stops (the CLI says
    so in one sentence and exits 3); the rows stored so far are kept."""


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

    def redacted(self, secrets: Sequence[str]) -> Completion:
        """This completion with every secret in its replies and its error redacted."""
        return Completion(
            self.job,
            tuple(redact(reply, secrets) for reply in self.replies),
            redact(self.error, secrets),
        )


def redact(text: str | None, secrets: Sequence[str]) -> str | None:
    """`text` with every (non-empty) secret in it replaced by `[redacted]`."""
    if text is None:
        return None
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class Backend(Protocol):
    """What `generate` needs from an LLM backend."""

    llm: str  # written into every row, e.g. "openai:gpt-3.5-turbo"

    def complete(self, jobs: Sequence[Job]) -> Iterator[Completion]: ...

    def close(self) -> None: ...
