"""The real `openai` client against a loopback OpenAI-compatible server."""

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from storyboard_common.classes import load_classes
from storyboard_common.errors import UserError
from subtext_gen.artifacts import JOURNAL_FILE, read_candidates
from subtext_gen.generate import generate
from subtext_gen.llm.openai_chat import OpenAIBackend
from subtext_gen.prompts import select_prompts
from testkit.cli import REPO
from testkit.openai_server import OpenAIServer, Reply, chat_body, good_replies, numbered_list

SECRET = "sk-test-secret-0123456789"
CLASSES = ["brush_hair", "cartwheel", "ride_bike"]


def run(server, out, class_csv, prompts="storyboard,steps", samples=2, **kw):
    classes = load_classes(classes_file=class_csv(CLASSES))
    backend = OpenAIBackend(
        "gpt-test", base_url=server.base_url, api_key=SECRET, **{"max_retries": 2, **kw}
    )
    return generate(classes, backend, out, 4, select_prompts(prompts), samples, show_progress=False)


def test_good_replies_with_n_samples(tmp_path, class_csv):
    with OpenAIServer() as server:
        summary = run(server, tmp_path, class_csv, samples=3, concurrency=4)
    assert (summary.ok, summary.failed, summary.requested) == (18, 0, 18)
    assert len(server.requests) == 6  # one request per (class, prompt), n = 3
    assert all(r["n"] == 3 and r["model"] == "gpt-test" for r in server.requests)
    rows = read_candidates(tmp_path).rows
    assert len({r.candidate_id for r in rows}) == 18
    row = next(r for r in rows if r.class_name == "brush_hair" and r.prompt_id == "steps")
    assert row.llm == "openai:gpt-test" and row.ok and row.error is None
    assert row.sub_texts[0].startswith("brush hair phase 1 variant")
    assert row.raw.startswith("Here you go:")  # the reply as received
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_server_that_ignores_n_is_topped_up(tmp_path, class_csv):
    def one_choice(request, call):
        return Reply(body=chat_body(request, [numbered_list(request, call)]))

    with OpenAIServer(one_choice) as server:
        summary = run(server, tmp_path, class_csv, prompts="steps", samples=3, concurrency=1)
    assert summary.ok == 9 and [r["n"] for r in server.requests[:3]] == [3, 2, 1]


def test_429_then_success_honours_retry_after(tmp_path, class_csv):
    def limited(request, call):
        if call == 0:
            return Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
        return good_replies(request, call)

    with OpenAIServer(limited) as server:
        start = time.perf_counter()
        summary = run(server, tmp_path, class_csv, prompts="steps", samples=1, concurrency=1)
        elapsed = time.perf_counter() - start
    assert (summary.ok, summary.failed) == (3, 0)
    assert len(server.requests) == 4
    assert elapsed >= 1.0  # waited as the server asked


def test_persistent_500_is_recorded_and_the_run_goes_on(tmp_path, class_csv):
    def broken_for_cartwheel(request, call):
        if "cartwheel" in request["messages"][-1]["content"]:
            return Reply(500, {"error": {"message": "boom"}}, {"retry-after-ms": "10"})
        return good_replies(request, call)

    with OpenAIServer(broken_for_cartwheel) as server:
        summary = run(server, tmp_path, class_csv, prompts="steps", samples=2, max_retries=2)
    assert (summary.ok, summary.failed) == (4, 2)
    assert any("InternalServerError" in e for e in summary.errors)
    cart = [r for r in read_candidates(tmp_path).rows if r.class_name == "cartwheel"]
    assert len(cart) == 2 and not any(r.ok for r in cart)
    assert all(r.raw is None and r.error.startswith("request failed") for r in cart)
    assert sum("cartwheel" in r["messages"][-1]["content"] for r in server.requests) == 3

    # A rerun asks again only for the failed requests, and keeps the good rows.
    with OpenAIServer() as server:
        summary = run(server, tmp_path, class_csv, prompts="steps", samples=2)
    assert (summary.ok, summary.failed, summary.skipped) == (2, 0, 4)
    assert len(server.requests) == 1
    assert all(r.ok for r in read_candidates(tmp_path).rows)


def test_malformed_replies_are_failed_rows_with_raw_kept(tmp_path, class_csv):
    def malformed(request, call):
        text = request["messages"][-1]["content"]
        if "brush hair" in text:
            return Reply(body=chat_body(request, ["I cannot help with that."] * request["n"]))
        if "cartwheel" in text:
            return Reply(body="<html>not json</html>")
        return Reply(body=chat_body(request, ["1. sit on the bike\n2. pedal"] * request["n"]))

    with OpenAIServer(malformed) as server:
        summary = run(server, tmp_path, class_csv, prompts="steps", samples=1, max_retries=0)
    assert (summary.ok, summary.failed) == (0, 3)
    rows = {r.class_name: r for r in read_candidates(tmp_path).rows}
    assert rows["brush_hair"].raw == "I cannot help with that."
    assert rows["brush_hair"].error == "expected 4 sub-texts, found 1"
    assert rows["brush_hair"].sub_texts == ()
    assert rows["ride_bike"].error == "expected 4 sub-texts, found 2"
    assert rows["cartwheel"].raw is None and "request failed" in rows["cartwheel"].error


def test_missing_key_is_one_error_before_any_work(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY is not set"):
        OpenAIBackend("gpt-test")


def test_refused_key_stops_the_run_and_no_secret_is_written(tmp_path, class_csv):
    def refuse(request, call):
        return Reply(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})

    with OpenAIServer(refuse) as server, pytest.raises(UserError) as err:
        run(server, tmp_path, class_csv, prompts="steps", samples=1, concurrency=1)
    assert "API key" in str(err.value) and SECRET not in str(err.value)
    assert server.requests[0]["_auth"] == f"Bearer {SECRET}"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()


def test_resume_after_a_crash_loses_at_most_the_request_in_flight(tmp_path, class_csv):
    def slow(request, call):
        reply = good_replies(request, call)
        reply.delay = 0.15
        return reply

    csv_path = class_csv(CLASSES)
    with OpenAIServer(slow) as server:
        env = {**os.environ, "OPENAI_API_KEY": SECRET}
        cmd = [
            sys.executable,
            "-m",
            "subtext_gen",
            "generate",
            "--llm",
            "openai",
            "--model",
            "gpt-test",
            "--base-url",
            server.base_url,
            "--classes",
            str(csv_path),
            "--samples",
            "1",
            "--concurrency",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        journal = tmp_path / JOURNAL_FILE
        deadline = time.time() + 60
        while time.time() < deadline:
            if journal.exists() and journal.read_text().count("\n") >= 5:  # header + 4 rows
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first_requests = len(server.requests)
        saved = len(read_candidates(tmp_path).rows)
        assert 4 <= saved < 12 and first_requests - saved <= 1

    with OpenAIServer() as server:
        summary = run(server, tmp_path, class_csv, prompts=None, samples=1)
    assert summary.skipped == saved and summary.ok == 12 - saved
    assert len(server.requests) == 12 - saved
    table = pq.read_table(tmp_path / "candidates.parquet")
    assert table.num_rows == 12 and all(table.column("ok").to_pylist())
    assert not journal.exists()
