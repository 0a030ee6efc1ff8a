"""The `openai` backend: the official client, for OpenAI or any OpenAI-compatible server.

Retries (429, 408, 409, 5xx, timeouts, connection errors) are the client's own: exponential
backoff with jitter that honours `Retry-After` / `retry-after-ms` up to two minutes;
`max_retries` sets how many. A request that still fails yields a failed completion and the
run goes on; a refused key or an unknown model stops the run, since every request would fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from storyboard_common.errors import UserError

from .base import Completion, Job

DEFAULT_MODEL = "gpt-3.5-turbo"
_MAX_TOP_UPS = 3  # servers that ignore `n` get asked again for the samples still missing


class OpenAIBackend:
    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60.0,
        temperature: float = 1.0,
        max_tokens: int = 256,
    ):
        import openai

        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key and base_url is None:
            raise UserError(
                "OPENAI_API_KEY is not set: export it, or pass --base-url for a local "
                "OpenAI-compatible server that needs no key."
            )
        if concurrency < 1:
            raise UserError("--concurrency must be at least 1.")
        self._secret = key
        self.model = model
        self.llm = f"openai:{model}"
        self.concurrency = concurrency
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._openai = openai
        self.client = openai.OpenAI(
            api_key=key or "no-key",
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _ask(self, job: Job) -> Completion:
        """All samples of a job: one request with n = missing, topped up if the server ignores n."""
        openai = self._openai
        replies: list[str | None] = [None] * len(job.samples)
        missing = list(range(len(job.samples)))
        malformed: str | None = None
        try:
            for _ in range(_MAX_TOP_UPS):
                response = self.client.chat.completions.create(
                    model=self.model,
                    messages=list(job.messages),
                    n=len(missing),
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                )
                choices = getattr(response, "choices", None)
                if not isinstance(choices, list):
                    return Completion(job, tuple(replies), "malformed response: no choices")
                for choice, slot in zip(choices, list(missing)):
                    message = getattr(choice, "message", None)
                    content = getattr(message, "content", None)
                    if message is not None and (content is None or isinstance(content, str)):
                        replies[slot] = content or ""
                    else:  # no message (or no text in it): this sample failed, not the run
                        malformed = "malformed response: a choice without a message"
                    missing.remove(slot)
                if not missing or not choices:
                    break
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise UserError(
                f"the server refused the API key ({self._redact(str(exc))[:200]}); "
                "check OPENAI_API_KEY."
            ) from exc
        except openai.NotFoundError as exc:
            raise UserError(
                f"the server does not know --model {self.model!r} or the endpoint "
                f"({self._redact(str(exc))[:200]})."
            ) from exc
        except (openai.OpenAIError, ValueError) as exc:
            message = self._redact(f"{type(exc).__name__}: {exc}").splitlines()[0][:300]
            return Completion(job, tuple(replies), f"request failed: {message}")
        if missing:
            got = len(job.samples) - len(missing)
            malformed = f"server returned {got} of {len(job.samples)} samples"
        return Completion(job, tuple(replies), malformed)

    def complete(self, jobs: Sequence[Job]) -> Iterator[Completion]:
        """Run jobs with `concurrency` requests in flight; yield each as it finishes."""
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai")
        pending = iter(jobs)
        in_flight: set[Future] = set()
        try:
            for job in pending:  # keep the queue short so Ctrl-C loses only what is in flight
                in_flight.add(pool.submit(self._ask, job))
                if len(in_flight) >= self.concurrency:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in done)
            while in_flight:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.client.close()
