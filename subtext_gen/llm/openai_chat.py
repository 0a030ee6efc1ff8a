"""The `openai` backend: the official client, for OpenAI or any OpenAI-compatible server.

Retries (429, 408, 409, 5xx, timeouts, connection errors) are the client's own: exponential
backoff with jitter that honours `Retry-After` / `retry-after-ms` up to two minutes;
`max_retries` sets how many. `timeout` bounds each attempt as a whole, headers and body: the
client's own timeout bounds each read, so a server that trickles a reply a byte at a time
would hold a request for as long as it likes. A request that still fails yields a failed
completion and the run goes on; a refused key or an unknown model stops the run, since every
request would fail. So does a server that cannot be reached: when every connection attempt
(all requests, retries included) has failed for `GIVE_UP_AFTER_S` seconds with none
getting through, `complete` raises `ServerUnreachable` naming the host and port, rather
than retrying each of hundreds of requests in turn (minutes, offline). A connection
attempt is given at most `CONNECT_TIMEOUT_S`, so a server that drops packets is found as
soon. Every completion leaves the backend with the API key redacted.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from storyboard_common.classes import ClassList
from storyboard_common.errors import MAX_WORKERS, Bounds, UserError

from .base import (
    MODEL,
    TEMPERATURE,
    BackendOption,
    Completion,
    Job,
    LLMBackend,
    ServerUnreachable,
    redact,
)

DEFAULT_MODEL = "gpt-3.5-turbo"
_MAX_TOP_UPS = 3  # servers that ignore `n` get asked again for the samples still missing
GIVE_UP_AFTER_S = 20.0  # every connection failing this long: the server is not there
CONNECT_TIMEOUT_S = 10.0  # at most this long to open a connection (within --timeout)
_POLL_S = 0.5  # how often the waiting loop looks at the connection state


class ConnectionWatch:
    """Whether connections to the server get through: `down_for()` is how long every
    attempt has failed to connect (0 while the last one got through), `reason` the last
    failure's. Written from the event loop's thread, read from the caller's."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.reason = ""

    def failed(self, started: float, reason: str) -> None:
        if self.down_since is None:
            self.down_since = started
        self.reason = reason

    def reached(self) -> None:
        self.down_since = None

    def down_for(self) -> float:
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since


def _deadline_http_client(openai, seconds: float, watch: ConnectionWatch):
    """The openai client's HTTP client, with every send (headers and body) ended after
    `seconds` by a timeout that the openai client retries like its own; each send's
    connection getting through or not is told to `watch`."""
    import httpx2

    class DeadlineClient(openai.DefaultAsyncHttpxClient):
        async def send(self, request, **kwargs):
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(super().send(request, **kwargs), seconds)
            except asyncio.TimeoutError as exc:
                raise httpx2.ReadTimeout(
                    f"no whole reply within {seconds:g} s", request=request
                ) from exc
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                watch.failed(started, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                raise
            watch.reached()
            return response

    return DeadlineClient(timeout=_timeout(seconds))


def _timeout(seconds: float):
    """`seconds` for every phase of a request, at most CONNECT_TIMEOUT_S to connect."""
    import httpx2

    return httpx2.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT_S))


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
        # The key, hence the `Authorization: Bearer <key>` value: never in a stored text.
        self.secrets: tuple[str, ...] = (key,) if key else ()
        self.model = model
        self.llm = f"openai:{model}"
        self.concurrency = concurrency
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._openai = openai
        self.watch = ConnectionWatch()
        self.client = openai.AsyncOpenAI(
            api_key=key or "no-key",
            base_url=base_url,
            max_retries=max_retries,
            timeout=_timeout(timeout),
            http_client=_deadline_http_client(openai, timeout, self.watch),
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _redact(self, text: str) -> str:
        return redact(text, self.secrets)

    async def _ask(self, job: Job) -> Completion:
        """A job's completion, as it leaves the backend: the key redacted from every text."""
        return (await self._request(job)).redacted(self.secrets)

    async def _request(self, job: Job) -> Completion:
        """All samples of a job: one request with n = missing, topped up if the server ignores n."""
        openai = self._openai
        replies: list[str | None] = [None] * len(job.samples)
        missing = list(range(len(job.samples)))
        malformed: str | None = None
        try:
            for _ in range(_MAX_TOP_UPS):
                response = await self.client.chat.completions.create(
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

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the requests run on, in a thread of its own, so that requests go on
        while `generate` stores what came back."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="openai", daemon=True
            )
            self._thread.start()
        return self._loop

    def complete(self, jobs: Sequence[Job]) -> Iterator[Completion]:
        """Run jobs with `concurrency` requests in flight; yield each as it finishes.
        Raises `ServerUnreachable` once no connection has got through for GIVE_UP_AFTER_S."""
        loop = self._start_loop()
        in_flight: set[Future] = set()
        try:
            for job in jobs:  # keep the queue short so Ctrl-C loses only what is in flight
                in_flight.add(asyncio.run_coroutine_threadsafe(self._ask(job), loop))
                if len(in_flight) >= self.concurrency:
                    done, in_flight = self._first_done(in_flight)
                    yield from (f.result() for f in done)
            while in_flight:
                done, in_flight = self._first_done(in_flight)
                yield from (f.result() for f in done)
        finally:
            for future in in_flight:
                future.cancel()

    def _first_done(self, in_flight: set[Future]) -> tuple[set[Future], set[Future]]:
        """`wait` for the first finished request, looking at the connection state meanwhile."""
        while True:
            if self.watch.down_for() >= GIVE_UP_AFTER_S:
                url = self.client.base_url
                port = url.port or {"https": 443, "http": 80}.get(url.scheme, "")
                raise ServerUnreachable(
                    f"cannot reach the server at {url.host}:{port}: no connection got through "
                    f"for {GIVE_UP_AFTER_S:g} s ({self._redact(self.watch.reason)[:120]}); "
                    "start it or fix --base-url, then rerun (rows already stored are kept)."
                )
            done, pending = wait(in_flight, timeout=_POLL_S, return_when=FIRST_COMPLETED)
            if done:
                return done, pending

    def close(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = self._thread = None


OPTIONS = (
    MODEL,
    BackendOption("base_url", None, "An OpenAI-compatible server (vLLM, Ollama, ...).", str),
    BackendOption(
        "concurrency", 8, "Requests in flight (openai).", int, bounds=Bounds(1, MAX_WORKERS)
    ),
    BackendOption(
        "max_retries", 5, "Retries of a failed request (openai).", int, bounds=Bounds(0, 100)
    ),
    BackendOption(
        "timeout",
        60.0,
        "Seconds before a request times out (openai).",
        float,
        bounds=Bounds(at_most=3600, positive=True, unit="number of seconds"),
    ),
    TEMPERATURE,
)


def backends(
    options: Mapping[str, Any], classes: ClassList, n_subtexts: int
) -> list[OpenAIBackend]:
    """`--llm openai`: one client of the server, the key from OPENAI_API_KEY."""
    return [
        OpenAIBackend(
            options["model"] or DEFAULT_MODEL,
            base_url=options["base_url"],
            concurrency=options["concurrency"],
            max_retries=options["max_retries"],
            timeout=options["timeout"],
            temperature=options["temperature"],
        )
    ]


BACKEND = LLMBackend(OPTIONS, backends, label="openai (or compatible)")
