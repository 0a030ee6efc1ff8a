"""A loopback OpenAI-compatible chat server for tests and benchmarks (127.0.0.1 only).

The real `openai` client talks to it over HTTP. A `responder` decides each reply, so tests
can script rate limits, server errors, malformed bodies, latency and bodies trickled a
byte at a time.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict -> JSON; str -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0  # seconds between the body's bytes: a server that is slow to reply


def action_of(request: dict) -> str:
    """The action a prompt asks about (the quoted text, or what follows 'a person')."""
    text = request["messages"][-1]["content"]
    match = re.search(r'"([^"]+)"', text) or re.search(r"a person (.+?)\.", text)
    return match.group(1) if match else "act"


def n_asked(request: dict) -> int:
    match = re.search(r"exactly (\d+)", request["messages"][-1]["content"]) or re.search(
        r"(\d+) (?:shots|steps|consecutive)", request["messages"][-1]["content"]
    )
    return int(match.group(1)) if match else 4


def chat_body(request: dict, contents: list[str]) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "test"),
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c},
                "finish_reason": "stop",
            }
            for i, c in enumerate(contents)
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def numbered_list(request: dict, sample: int) -> str:
    action, n = action_of(request), n_asked(request)
    return "Here you go:\n" + "\n".join(
        f"{i + 1}. {action} phase {i + 1} variant {sample}" for i in range(n)
    )


def good_replies(request: dict, call: int) -> Reply:
    """n good numbered lists, one per requested sample."""
    k = int(request.get("n", 1))
    return Reply(
        body=chat_body(request, [numbered_list(request, call * 100 + s) for s in range(k)])
    )


class OpenAIServer:
    """`with OpenAIServer(responder) as server:` -> `server.base_url`, `server.requests`."""

    def __init__(self, responder: Callable[[dict, int], Reply] = good_replies):
        self.responder = responder
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                request["_auth"] = self.headers.get("Authorization", "")
                with outer._lock:
                    call = len(outer.requests)
                    outer.requests.append(request)
                reply = outer.responder(request, call)
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = body.encode("utf-8")
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if not reply.trickle:
                    self.wfile.write(data)
                    return
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(reply.trickle)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: what a slow server is there to test

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> OpenAIServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_base_url() -> str:
    """The base URL of a loopback port nothing listens on (bound, then closed): every
    connection to it is refused, as for a server that is not running."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def serve_forever(latency: float = 0.0, port: int = 0) -> None:
    """`python -m testkit.openai_server [LATENCY]`: a server for manual tries (prints its URL)."""

    def responder(request: dict, call: int) -> Reply:
        reply = good_replies(request, call)
        reply.delay = latency
        return reply

    server = OpenAIServer(responder)
    print(server.base_url, flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    import sys

    serve_forever(float(sys.argv[1]) if len(sys.argv) > 1 else 0.0)
