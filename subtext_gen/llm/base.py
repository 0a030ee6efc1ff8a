"""The small protocol every LLM backend implements, and how a backend declares its options
and how it is built for `generate` (`BackendOption`, `LLMBackend`; the registry is
`subtext_gen.llm.REGISTRY`).

A backend receives jobs (one class, one prompt, the sample indices still missing) and
yields one `Completion` per job as soon as it is finished, in any order. Backends own
their concurrency (an event loop for HTTP, batches for a local model); `generate.py` owns
keys, resume, parsing and progress. A backend that holds a secret (an API key) passes every
completion through `Completion.redacted` before it leaves the backend, so no reply or error
text that echoes the secret is journaled, stored or printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from storyboard_common.classes import ClassList
from storyboard_common.errors import Bounds

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


@dataclass(frozen=True)
class BackendOption:
    """One option of `generate` that a backend reads, as the CLI shows and checks it: the
    keyword `name` (its flag `--name-with-dashes`), default, help, value type, the value
    word, the range of a number (`Bounds`), and `elsewhere`: the sentence refusing it when
    given with another `--llm`, where it would be silently ignored and so misleading."""

    name: str
    default: Any
    help: str
    type: Any
    metavar: str | None = None
    bounds: Bounds | None = None
    elsewhere: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class LLMBackend:
    """A `--llm` choice: the options it reads, and `backends`, which turns their values
    (by name), the classes and N into the backends `generate` runs in turn (checked before
    anything is written). `label`: how `--llm`'s help names it, where more than its name;
    `report`: a line printed per backend after the run."""

    options: tuple[BackendOption, ...]
    backends: Callable[[Mapping[str, Any], ClassList, int], list[Backend]]
    label: str | None = None
    report: Callable[[Any], str] | None = None


# Options more than one backend reads, declared once: each backend lists them among its own.
MODEL = BackendOption(
    "model", None, "LLM: default gpt-3.5-turbo (openai) or llava-hf/llava-v1.6-mistral-7b-hf.", str
)
TEMPERATURE = BackendOption(
    "temperature",
    0.7,
    "Sampling temperature.",
    float,
    bounds=Bounds(0, 2),  # OpenAI's API takes 0 to 2; LLaVA samples alike
)
