"""Stage one against hostile inputs and environments: concurrent runs, crashes, bad files,
bad flags, malformed replies, damaged artifacts, read-only folders, full disks."""

import errno
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storyboard_common import files
from storyboard_common.errors import UserError
from storyboard_common.files import atomic_write, atomic_write_text
from subtext_gen.artifacts import (
    CANDIDATES_FILE,
    JOURNAL_FILE,
    LOCK_FILE,
    CandidateRow,
    CandidateStore,
    read_candidates,
    writer_lock,
)
from subtext_gen.classes import load_classes
from subtext_gen.generate import generate
from subtext_gen.llm.files import FileBackend
from subtext_gen.llm.openai_chat import OpenAIBackend
from subtext_gen.prompts import select_prompts
from testkit.openai_server import OpenAIServer, Reply, chat_body, good_replies, numbered_list

from .conftest import REPO, cli

NAMES = ["brush_hair", "cartwheel"]
SETS = {"brush hair": ["lift brush", "comb", "stroke", "stop"], "cartwheel": ["a", "b", "c", "d"]}


def one_line_error(done, message):
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def file_generate(classes, sets_json, out, *extra):
    return cli(
        "generate",
        "--llm",
        "file",
        "--classes",
        str(classes),
        "--input",
        str(sets_json),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    )


@pytest.fixture()
def inputs(tmp_path, class_csv):
    sets = tmp_path / "sets.json"
    sets.write_text(json.dumps(SETS))
    return class_csv(NAMES), sets


def lock_is_held(folder) -> bool:
    path = folder / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def delayed_replies(seconds: float):
    """Good replies, each after `seconds`: keeps a run holding the folder's lock."""

    def respond(request, call):
        reply = good_replies(request, call)
        reply.delay = seconds
        return reply

    return respond


def slow_openai_run(server, classes, out, prompts="steps"):
    return subprocess.Popen(
        [
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
            str(classes),
            "--prompts",
            prompts,
            "--samples",
            "1",
            "--concurrency",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": ""},
    )


def wait_for_lock(folder, proc, seconds=60.0):
    deadline = time.time() + seconds
    while not lock_is_held(folder):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the first run never took the lock"
        time.sleep(0.05)


# ---------------------------------------------------------------- 1. one writer per folder


def test_second_generate_into_a_busy_folder_exits_2_and_first_keeps_every_row(tmp_path, inputs):
    classes, sets = inputs
    out = tmp_path / "art"

    with OpenAIServer(delayed_replies(1.0)) as server:
        first = slow_openai_run(server, classes, out, prompts="storyboard,steps")
        wait_for_lock(out, first)
        second = file_generate(classes, sets, out)
        one_line_error(second, f"another `generate` is writing {out}")
        stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert "4 ok, 0 failed" in stdout
    rows = read_candidates(out).rows
    assert len(rows) == 4 and {r.prompt_id for r in rows} == {"storyboard", "steps"}
    again = file_generate(classes, sets, out)  # the folder is free again once A is done
    assert again.returncode == 0, again.stderr
    assert len(read_candidates(out).rows) == 6


def test_a_killed_holder_does_not_block_the_next_run(tmp_path, inputs):
    classes, sets = inputs
    out = tmp_path / "art"

    with OpenAIServer(delayed_replies(30.0)) as server:
        first = slow_openai_run(server, classes, out)
        wait_for_lock(out, first)
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=60)
        assert first.returncode == -signal.SIGKILL
        done = file_generate(classes, sets, out)
    assert done.returncode == 0, done.stderr
    assert "2 ok, 0 failed" in done.stdout


def test_the_lock_is_held_across_several_inputs_of_one_call(tmp_path):
    """One CLI call with several --input files holds the folder from the first file to the
    last (nested takes in the same process pass through); it is free afterwards."""
    out = tmp_path / "art"
    with writer_lock(out):
        assert lock_is_held(out)
        with writer_lock(out):
            assert lock_is_held(out)
        assert lock_is_held(out)  # the inner exit does not release the outer hold
    assert not lock_is_held(out)


# ---------------------------------------------------------------- 2. the journal's header


def _journal_only(out, names=NAMES, n=4):
    """What a run killed before its first flush leaves: the journal and no Parquet file."""
    store = CandidateStore(out, names, n)
    texts = ("a", "b", "c", "d")[:n]
    store.append(CandidateRow(0, names[0], "file:sets", "file", 0, texts, True, None, "[]"))
    store._journal.close()  # no flush: as if killed
    assert (out / JOURNAL_FILE).exists() and not (out / CANDIDATES_FILE).exists()


def test_journal_first_line_carries_classes_n_and_version(tmp_path):
    _journal_only(tmp_path)
    head = json.loads((tmp_path / JOURNAL_FILE).read_text().splitlines()[0])
    assert head == {"storyboard_journal": "1", "classes": NAMES, "n_subtexts": 4}
    candidates = read_candidates(tmp_path)
    assert candidates.class_names == NAMES and candidates.n_subtexts == 4
    assert len(candidates.rows) == 1


def test_rerun_after_a_kill_before_the_first_flush_checks_n_and_classes(tmp_path, inputs):
    classes, sets = inputs
    out = tmp_path / "art"
    _journal_only(out)
    journal = out / JOURNAL_FILE
    other_n = file_generate(classes, sets, out, "--n-subtexts", "3")
    one_line_error(other_n, f"{journal} holds sets of 4 sub-texts, not 3 (--n-subtexts)")
    other_classes = tmp_path / "other.csv"
    other_classes.write_text("id,name\n0,brush_hair\n1,cartwheel\n2,pour\n")
    refused = file_generate(other_classes, sets, out)
    one_line_error(refused, f"{journal} was made for another class list (not in it: ['pour']")
    assert len(journal.read_text().splitlines()) == 2  # nothing mixed in
    resumed = file_generate(classes, sets, out)
    assert resumed.returncode == 0 and "1 ok, 0 failed, 1 already done" in resumed.stdout


def test_journal_of_another_format_version_is_refused(tmp_path):
    _journal_only(tmp_path)
    lines = (tmp_path / JOURNAL_FILE).read_text().splitlines()
    lines[0] = json.dumps({"storyboard_journal": "0", "classes": NAMES, "n_subtexts": 4})
    (tmp_path / JOURNAL_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="written by format version 0, not 1"):
        CandidateStore(tmp_path, NAMES, 4)


# ---------------------------------------------------------------- 3. silently wrong inputs


def test_bad_inputs_and_flags_are_one_sentence_naming_the_file_or_flag(tmp_path, inputs):
    classes, sets = inputs
    out = tmp_path / "art"
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"brush_hair": [1, 2, None, {"x": 1}]}))
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"cartwheel": [["a", "b"], ["c", 3]]}))
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    cases = [
        ((texts,), f"{texts}: the texts for class 'brush_hair' must be strings, not 1, 2, null"),
        ((nested,), f"{nested}: the texts for class 'cartwheel' must be strings, not 3."),
        ((empty,), f"{empty} holds no description sets."),
        ((sets, "--timeout", "-1"), "--timeout must be a positive number of seconds, not -1.0."),
        ((sets, "--max-retries", "-1"), "--max-retries must be at least 0, not -1."),
        ((sets, "--concurrency", "0"), "--concurrency must be at least 1, not 0."),
        ((sets, "--samples", "0"), "--samples must be at least 1, not 0."),
        ((sets, "--n-subtexts", "0"), "--n-subtexts must be at least 1, not 0."),
    ]
    for (source, *extra), message in cases:
        one_line_error(file_generate(classes, source, out, *extra), message)
    timeout = cli("generate", "--dataset", "hmdb51", "--timeout", "0", "--base-url", "http://x")
    one_line_error(timeout, "--timeout must be a positive number of seconds, not 0.0.")
    assert not out.exists()  # nothing written, no path printed for a file never written


# ---------------------------------------------------------------- 4. one line, not a traceback


def test_choice_without_message_is_a_failed_row_not_a_crash(tmp_path, class_csv):
    def no_message(request, call):
        body = chat_body(request, [numbered_list(request, s) for s in range(2)])
        del body["choices"][1]["message"]
        return Reply(body=body)

    classes = load_classes(classes_file=class_csv(NAMES))
    with OpenAIServer(no_message) as server:
        backend = OpenAIBackend("gpt-test", base_url=server.base_url, max_retries=0)
        summary = generate(
            classes, backend, tmp_path, 4, select_prompts("steps"), 2, show_progress=False
        )
    assert (summary.ok, summary.failed) == (2, 2)
    failed = [r for r in read_candidates(tmp_path).rows if not r.ok]
    assert [r.sample for r in failed] == [1, 1] and all(r.raw is None for r in failed)
    assert {r.error for r in failed} == {"malformed response: a choice without a message"}


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_candidates_file_is_one_sentence_with_the_way_out(tmp_path, inputs, damage):
    classes, sets = inputs
    out = tmp_path / "art"
    assert file_generate(classes, sets, out).returncode == 0
    path = out / CANDIDATES_FILE
    data = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    done = file_generate(classes, sets, out)
    damaged = f"{path} is damaged (not a readable Parquet file); delete the folder {out}"
    one_line_error(done, damaged)
    scored = cli("score", "--artifacts", str(out))
    one_line_error(scored, f"{path} is damaged")
    _journal_only(tmp_path / "j")  # with a journal beside it, the journal keeps its rows
    (tmp_path / "j" / CANDIDATES_FILE).write_bytes(b"")
    with pytest.raises(UserError, match="delete it and rerun `generate`: the rows in .* are kept"):
        CandidateStore(tmp_path / "j", NAMES, 4)
    (tmp_path / "j" / CANDIDATES_FILE).unlink()  # what the message says: the rows come back
    assert len(CandidateStore(tmp_path / "j", NAMES, 4).rows) == 1


def test_unwritable_out_is_one_sentence_naming_the_folder(tmp_path, inputs):
    classes, sets = inputs
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "art"
    one_line_error(file_generate(classes, sets, out), f"cannot write to the artifact folder {out}")


def test_read_only_out_in_process(tmp_path, monkeypatch, inputs):
    classes, sets = inputs
    out = tmp_path / "art"
    out.mkdir()
    real_open = os.open

    def read_only(path, *args, **kw):
        if str(path).startswith(str(out)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", read_only)
    backend = FileBackend(sets)
    backend.plan(load_classes(classes_file=classes), 4)
    with pytest.raises(UserError) as err:
        generate(load_classes(classes_file=classes), backend, out, 4, show_progress=False)
    assert str(err.value) == f"cannot write to the artifact folder {out} (Permission denied)."


def test_full_disk_leaves_nothing_half_written(tmp_path, monkeypatch):
    path = tmp_path / "x.txt"
    atomic_write_text(path, "old")

    def full(fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError) as err:
        atomic_write(path, full)
    reason = "No space left on device"
    assert str(err.value) == f"could not write {path} ({reason}); nothing was changed."
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_a_plot_under_a_regular_file_names_the_file(tmp_path):
    """`predict --plot` (and every writer) under a path whose folder is a file: mkdir's own
    reason would be "File exists"."""
    from storyboard_common.files import atomic_savefig

    class Figure:  # refused before anything is drawn
        def savefig(self, fh, **options):
            raise AssertionError("drawn")

    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for path in (notes / "plot.png", notes / "sub" / "plot.png"):
        with pytest.raises(UserError) as err:
            atomic_savefig(Figure(), path)
        assert str(err.value) == (
            f"could not write {path}: {notes} is not a folder; nothing was changed."
        )
    assert notes.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt"
    ]


def test_full_disk_during_generate_flush_keeps_the_journal(tmp_path, monkeypatch, inputs):
    classes, sets = inputs
    out = tmp_path / "art"

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    class_list = load_classes(classes_file=classes)
    backend = FileBackend(sets)
    backend.plan(class_list, 4)
    with pytest.raises(UserError, match=f"could not write {out / CANDIDATES_FILE} \\(No space"):
        generate(class_list, backend, out, 4, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, JOURNAL_FILE]
    monkeypatch.undo()
    assert len(read_candidates(out).rows) == 2  # the journal still holds every row


# ---------------------------------------------------------------- 5. small things


def test_class_lists_with_a_utf8_bom_just_work(tmp_path):
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes("\ufeffid,name\n0,brush_hair\n1,cartwheel\n".encode())
    txt_path = tmp_path / "bom.txt"
    txt_path.write_bytes("\ufeffbrush_hair\ncartwheel\n".encode())
    assert load_classes(classes_file=csv_path).names == ("brush_hair", "cartwheel")
    assert load_classes(classes_file=txt_path).names == ("brush_hair", "cartwheel")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_gives_the_mode_open_would(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "new.txt").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    os.chmod(tmp_path / "new.txt", 0o640)  # a replaced file keeps its mode, as with open()
    atomic_write_text(tmp_path / "new.txt", "y")
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640


def test_the_umask_is_read_without_changing_it():
    old = os.umask(0o027)
    try:
        assert files._new_file_mode(Path("/nonexistent/x")) == 0o640
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)
