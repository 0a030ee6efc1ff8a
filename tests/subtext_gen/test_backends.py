"""The LLM backends' registry (`subtext_gen.llm.REGISTRY`): `generate` offers exactly the
options the backends declare, and a backend added as one module and one registry line is a
`--llm` choice with its own options, run by `generate` (docs/design.md's recipe)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from storyboard_common.errors import Bounds
from subtext_gen import llm
from subtext_gen.artifacts import read_candidates
from subtext_gen.llm.base import MODEL, BackendOption, Completion, LLMBackend
from testkit.cli import run_app


def _generate_params(app) -> dict[str, object]:
    command = typer.main.get_command(app).commands["generate"]
    return {p.name: p for p in command.params}


def _choices(param) -> list[str]:
    return [choice.value for choice in param.type_descriptor.choices]


def test_generate_offers_each_backends_options_as_declared():
    from subtext_gen.__main__ import app

    params = _generate_params(app)
    assert _choices(params["llm"]) == ["openai", "llava", "file"]
    assert params["llm"].help == "Backend: openai (or compatible), llava, file."
    for name, entry in llm.REGISTRY.items():
        for option in entry.options:
            param = params[option.name]
            assert param.opts == [option.flag], name
            assert (param.default, param.help) == (option.default, option.help), option.flag
    # one --model for openai and llava, declared once
    assert llm.REGISTRY["openai"].options[0] is llm.REGISTRY["llava"].options[0] is MODEL


def test_two_declarations_of_one_flag_are_refused(monkeypatch):
    other_model = BackendOption("model", "m", "Another --model.", str)
    monkeypatch.setitem(llm.REGISTRY, "other", LLMBackend((other_model,), lambda *a: []))
    with pytest.raises(TypeError, match="--model is declared twice"):
        llm.backend_options()


class EchoBackend:
    """Replies `text` to every sample of every job."""

    def __init__(self, text: str):
        self.text = text
        self.llm = "echo"

    def complete(self, jobs) -> Iterator[Completion]:
        for job in jobs:
            yield Completion(job, tuple(self.text for _ in job.samples))

    def close(self) -> None:
        pass


ECHO = LLMBackend(
    (
        BackendOption("echo_text", "", "The reply (echo).", str),
        BackendOption("echo_repeat", 1, "How often (echo).", int, bounds=Bounds(1, 3)),
    ),
    lambda options, classes, n: [EchoBackend(options["echo_text"] * options["echo_repeat"])],
    label="echo (a test's)",
)


@pytest.fixture()
def echo_cli(monkeypatch):
    """`subtext_gen.__main__` built again with `echo` in the registry (its one line), and
    rebuilt without it afterwards."""
    import subtext_gen.__main__ as cli_main

    monkeypatch.setitem(llm.REGISTRY, "echo", ECHO)
    yield importlib.reload(cli_main)
    monkeypatch.undo()
    importlib.reload(cli_main)


def test_a_backend_is_one_module_and_one_registry_line(echo_cli, class_csv, tmp_path: Path):
    params = _generate_params(echo_cli.app)
    assert _choices(params["llm"])[-1] == "echo"
    assert params["llm"].help.endswith(", file, echo (a test's).")
    assert params["echo_text"].help == "The reply (echo)."
    reply = "1. lift the arm\n2. swing it\n3. let go\n4. look\n"
    classes = class_csv(["throw", "catch"])
    out = tmp_path / "art"
    args = ("generate", "--llm", "echo", "--classes", classes, "--out", out, "--no-progress")
    code, shown, error = run_app(echo_cli.app, *args, "--echo-text", reply, "--prompts", "steps")
    assert (code, error) == (0, None), shown
    rows = read_candidates(out).rows
    assert [(r.class_name, r.llm, r.prompt_id) for r in rows] == [
        ("throw", "echo", "steps"),
        ("throw", "echo", "steps"),
        ("catch", "echo", "steps"),
        ("catch", "echo", "steps"),
    ]  # --samples 2 by default
    assert rows[0].sub_texts == ("lift the arm", "swing it", "let go", "look")
    # its option's range is checked like every other, before anything is asked
    _, _, error = run_app(echo_cli.app, *args, "--echo-repeat", "4")
    assert error is not None and "--echo-repeat" in str(error) and "from 1 to 3" in str(error)
    # and the other backends' options stay as they were
    _, _, error = run_app(echo_cli.app, *args, "--index-classes", classes)
    assert str(error) == "--index-classes goes with --llm file and its --input files."
