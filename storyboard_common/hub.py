"""Weights from the Hugging Face Hub, cache first, for both stages (LLaVA, open_clip tags and
`hf-hub:` CLIPs, exported video models).

What is in the local Hugging Face cache loads with no network call at all. What is not gets
one short attempt to reach the Hub (`PROBE_SECONDS`, no retries; none with HF_HUB_OFFLINE=1)
and then, where the Hub does not answer, one sentence naming the repository and the command
that downloads it: huggingface_hub itself retries for minutes on a machine with no network.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from .errors import UserError, first_line

PROBE_SECONDS = 3.0
T = TypeVar("T")


def cached_file(repo: str, filenames: Sequence[str], revision: str | None = None) -> str | None:
    """The first of `filenames` of `repo` that the local cache holds, or None."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    for name in filenames:
        try:
            found = try_to_load_from_cache(repo, name, revision=revision)
        except HFValidationError:  # no such id, none cached: `require_hub` says why
            return None
        if isinstance(found, str):
            return found
    return None


def require_hub(
    repo: str, what: str, instead: str, files: Sequence[str] = (), revision: str | None = None
) -> None:
    """Return when the Hub answers for `repo` (a download may follow); else a UserError that
    `what` is not cached, with the download command (`files` of the repo, or all of it) and
    `instead`, what the user may pass in its place."""
    from huggingface_hub import constants

    _check_id(repo, what, instead)
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE=1 forbids downloading it"
    else:
        try:
            status = _probe(repo, revision)
        except Exception as exc:  # refused, timed out, no route, DNS: no network
            reason = (
                f"the Hub ({constants.ENDPOINT}) cannot be reached ({type(exc).__name__}: "
                f"{first_line(exc, 80).rstrip('.')}; HF_HUB_OFFLINE=1 skips this try)"
            )
        else:
            if status < 400:
                return
            if status in (401, 403, 404):
                raise UserError(
                    f"{what}: {repo}{'@' + revision if revision else ''} is not on the Hugging "
                    f"Face Hub ({constants.ENDPOINT}), or is private or gated (log in with `hf "
                    f"auth login`); check the name, or {instead}."
                )
            raise UserError(
                f"the Hugging Face Hub ({constants.ENDPOINT}) answered HTTP {status} for {repo}; "
                f"try again later, or {instead}."
            )
    command = " ".join(
        ["hf download", repo, *files, *(["--revision", revision] if revision else [])]
    )
    raise UserError(
        f"{what} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {reason}: run "
        f"`{command}` on a machine with network and copy its cache to this machine's HF_HOME "
        f"(default ~/.cache/huggingface), or {instead}."
    )


def _check_id(repo: str, what: str, instead: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise UserError(
            f"{what}: {repo!r} is not a repository id of the Hugging Face Hub (ORG/NAME, of "
            f"letters, digits, '-', '_' and '.'); give one, or {instead}."
        ) from exc


def _probe(repo: str, revision: str | None) -> int:
    """The HTTP status of one request for `repo`'s metadata, within `PROBE_SECONDS` all told:
    the request runs in a thread of its own, since a request's timeout does not cover name
    resolution (an unreachable DNS server can hold it longer).

    A bare request with the user's token: huggingface_hub's own headers would first fetch
    a registry of agents, one more wait for a Hub that does not answer."""
    from urllib.parse import quote

    from huggingface_hub import constants, get_session, get_token

    url = f"{constants.ENDPOINT}/api/models/{repo}"
    if revision:
        url += f"/revision/{quote(revision, safe='')}"
    token = get_token()
    headers = {"authorization": f"Bearer {token}"} if token else {}
    answer: list = []

    def ask() -> None:
        try:
            answer.append(get_session().get(url, headers=headers, timeout=PROBE_SECONDS))
        except Exception as exc:
            answer.append(exc)

    asking = threading.Thread(target=ask, daemon=True)  # left behind if it hangs
    asking.start()
    asking.join(PROBE_SECONDS + 0.5)
    if not answer:
        raise TimeoutError(f"no answer within {PROBE_SECONDS:g} s")
    if isinstance(answer[0], Exception):
        raise answer[0]
    return answer[0].status_code


def cache_first(
    load: Callable[[bool], T],
    repo: str,
    what: str,
    instead: str,
    files: Sequence[str] = (),
    revision: str | None = None,
) -> T:
    """`load(True)` reads `repo` from the local cache alone; where the cache lacks files (an
    OSError: huggingface_hub's LocalEntryNotFoundError, transformers' OSError), `load(False)`
    downloads them once `require_hub` found the Hub answering."""
    _check_id(repo, what, instead)
    try:
        return load(True)
    except OSError:
        pass
    require_hub(repo, what, instead, files, revision)
    return load(False)
