"""Every command's `--help` of the three CLIs as an 80-column terminal shows it (in this
process): nothing cut or lost, value types as words, no developer prose; and every option
with a fixed set of values completes them in the shell. The checks walk the click command
tree, so a command or option added later is checked the same way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from storyboard_common.cli_help import first_sentence
from storyworld.__main__ import app as storyworld_app
from subtext_gen.__main__ import app as subtext_app
from trainer.__main__ import app as trainer_app
from trainer.model.modes import AGGREGATIONS
from trainer.settings import AMP_MODES, DECODE_DEVICES

APPS = {"trainer": trainer_app, "subtext_gen": subtext_app, "storyworld": storyworld_app}
COLUMNS = 80

# A value's word as a user reads it: an upper-case word (INTEGER, PATH, NAME) or the values
# themselves, [a|b]; never the annotation (`<int>`, `<list[Path]>`, `<bool>`).
VALUE_WORD = re.compile(r"[A-Z][A-Z_]*|\[[^\[\]<>]+\]")
ANNOTATION = re.compile(r"<(bool|int|float|str|path|Path|list\[|tuple\[)")
# Prose meant for developers: a private name, a call, an arrow, a module path, click's
# `\f` cut (what follows it was meant for developers), a test's aside.
DEVELOPER = re.compile(
    r"`_\w|\w\(\)|->|\x0c|\b(trainer|subtext_gen|storyworld|storyboard_common)\.[a-z_]"
    r"|\bfor the tests\b"
)


def flat(text: str) -> str:
    return " ".join(text.split())


def rendered(app, *words: str) -> str:
    done = CliRunner().invoke(
        app, [*words, "--help"], terminal_width=COLUMNS, env={"COLUMNS": str(COLUMNS)}
    )
    assert done.exit_code == 0, done.output
    return done.output


def help_problems(app) -> list[str]:
    """What a user would stumble on in `app`'s help, command by command (empty: none)."""
    group = typer.main.get_command(app)
    problems = []
    explicit = {
        info.name or info.callback.__name__.replace("_", "-"): info.help
        for info in app.registered_commands
    }
    for name, command in [(None, group), *group.commands.items()]:
        if command.hidden:
            continue
        where = name or "(the program)"
        shown = rendered(app, *([name] if name else []))
        problems += [
            f"{where}: line over {COLUMNS} columns: {line!r}"
            for line in shown.splitlines()
            if len(line) > COLUMNS
        ]
        if "…" in shown:
            problems.append(f"{where}: something is cut with '…'")
        if ANNOTATION.search(shown):
            problems.append(
                f"{where}: a type reads as an annotation: {ANNOTATION.search(shown)[0]}"
            )
        if DEVELOPER.search(shown):
            problems.append(f"{where}: developer prose: {DEVELOPER.search(shown)[0]!r}")
        if name is not None and explicit.get(name) is None:
            problems.append(f"{where}: its help is its docstring, not an explicit help=")
        texts = [p for p in (command.help or "").split("\n\n") if p.strip()]
        ctx = command.context_class(command, info_name=name or "root")
        for param in command.params:
            record = param.get_help_record(ctx)
            if record is None:  # hidden
                continue
            flags, text = record
            texts += [flags, text]
            if not (param.help or "").strip():
                problems.append(f"{where}: {flags} has no help")
            elif getattr(param, "multiple", False) and "repeat" not in param.help:
                problems.append(f"{where}: {flags} takes one value a flag; its help says so")
            if getattr(param, "is_flag", False) is False and not VALUE_WORD.fullmatch(
                param.metavar or ""
            ):
                problems.append(f"{where}: {flags}: value word {param.metavar!r}")
        for text in texts:  # whole: no word lost to markup, cut or broken across lines
            if flat(text) not in flat(shown):
                problems.append(f"{where}: not shown whole: {text!r}")
        if name is None:
            for sub, subcommand in group.commands.items():
                summary = first_sentence(subcommand.help)
                if not subcommand.hidden and f"{sub} {summary}" not in flat(shown):
                    problems.append(f"{where}: {sub} is not listed with {summary!r}")
    return problems


@pytest.mark.parametrize("module", sorted(APPS))
def test_every_commands_help_reads_whole_at_80_columns(module):
    assert help_problems(APPS[module]) == []


def test_the_help_check_finds_what_typers_defaults_show():
    """A typer app as typer makes it (rich help, annotations as types, a docstring for
    help) fails each check that the project's apps pass."""
    app = typer.Typer()

    @app.command()
    def fetch(
        files: list[Path] = typer.Option(None, help="Files to read."),
        report_to: str = typer.Option(
            None, help="Also log to wandb (optional extra storyboard[wandb])."
        ),
        as_json: bool = typer.Option(False, "--json", help="One JSON object."),
    ) -> None:
        """Fetch files; calls `_fetch_all()` -> list of paths."""

    @app.command()
    def other() -> None:
        """Another."""

    found = "\n".join(help_problems(app))
    assert "storyboard[wandb]" in found  # rich read [wandb] as markup and dropped it
    assert "<list[Path]>" in found or "--files: value word" in found
    assert "its help is its docstring" in found
    assert "takes one value a flag" in found  # --files: repeated, its help does not say so
    assert "developer prose" in found


def test_flags_and_extras_in_brackets_survive():
    """The issue's examples: `storyboard[tensorboard]` and `[wandb]` shown, `--json` alone."""
    shown = flat(rendered(trainer_app, "run"))
    assert "storyboard[tensorboard], storyboard[wandb]" in shown
    assert "--json Print the result" in shown
    assert "--subsets PATH" in flat(rendered(trainer_app, "eval"))


def completions(app, words: list[str]) -> list[str]:
    """What the option being typed completes to, as the app's completion machinery finds it."""
    group = typer.main.get_command(app)
    ctx = group.make_context("root", words[:1], resilient_parsing=True)
    command = group.get_command(ctx, words[0])
    sub = command.make_context(words[0], [], parent=ctx, resilient_parsing=True)
    param = next(p for p in command.params if words[1] in p.opts)
    return [item.value for item in param.shell_complete(sub, words[2] if len(words) > 2 else "")]


def choice_options():
    """Every option whose help shows its values as [a|b], or that completes values."""
    for module, app in APPS.items():
        group = typer.main.get_command(app)
        for name, command in group.commands.items():
            ctx = command.context_class(command, info_name=name)
            for param in command.params:
                if command.hidden or param.param_type_name != "option" or param.is_flag:
                    continue
                listed = (param.metavar or "").startswith("[")
                if listed or param.shell_complete(ctx, ""):
                    yield pytest.param(
                        module, name, param.opts[0], id=f"{module} {name} {param.opts[0]}"
                    )


@pytest.mark.parametrize("module, command, flag", list(choice_options()))
def test_an_option_with_values_completes_each_value_its_help_names(module, command, flag):
    offered = completions(APPS[module], [command, flag])
    group = typer.main.get_command(APPS[module])
    param = next(p for p in group.commands[command].params if flag in p.opts)
    assert offered, flag
    if param.metavar.startswith("["):
        assert offered == param.metavar[1:-1].split("|")
    elif param.metavar != "NAME":  # a NAME is one of those found (datasets, presets)
        assert all(value in param.help for value in offered), (offered, param.help)
    assert completions(APPS[module], [command, flag, offered[-1]])[-1] == offered[-1]


# The options with a fixed set of values that must complete (the and the like).
MUST_COMPLETE = {
    ("trainer", "run", "--aggregation"): list(AGGREGATIONS),
    ("trainer", "run", "--amp"): list(AMP_MODES),
    ("trainer", "run", "--decode-device"): list(DECODE_DEVICES),
    ("trainer", "run", "--split"): ["1", "2", "3", "all"],
    ("trainer", "run", "--crops"): ["1", "3"],
    ("trainer", "run", "--device"): ["auto", "cpu", "cuda"],
    ("trainer", "check-data", "--split"): ["1", "2", "3", "all"],
    ("trainer", "prepare-videos", "--to"): ["videos", "frames"],
    ("trainer", "cache-features", "--dtype"): ["float16", "float32"],
    ("trainer", "eval", "--zero-shot"): ["full", "half", "subsets"],
    ("trainer", "export", "--checkpoint"): ["best", "last"],
    ("subtext_gen", "generate", "--llm"): ["openai", "llava", "file"],
    ("subtext_gen", "score", "--alpha"): ["complement", "identity"],
    ("storyworld", "pretrain-clip", "--objective"): ["pooled", "pooled+tokens"],
}


@pytest.mark.parametrize("where", sorted(MUST_COMPLETE), ids=" ".join)
def test_options_with_choices_complete(where):
    module, command, flag = where
    assert completions(APPS[module], [command, flag]) == MUST_COMPLETE[where]


def test_found_names_complete():
    """Datasets and presets: the names the code knows, found when the shell asks."""
    from storyboard_common.classes import shipped_datasets
    from trainer.config import preset_files
    from trainer.data.layouts import DATASETS

    assert completions(trainer_app, ["run", "--dataset"]) == list(DATASETS)
    assert completions(trainer_app, ["eval", "--dataset", "k4"]) == ["k400"]
    assert completions(trainer_app, ["run", "--preset"]) == list(preset_files()) != []
    assert completions(subtext_app, ["generate", "--dataset"]) == shipped_datasets()


def test_the_installed_command_completes_a_value_through_bash():
    """As bash asks `storyboard-trainer` (the installed command) for `run --aggregation c`."""
    done = CliRunner().invoke(
        trainer_app,
        [],
        prog_name="storyboard-trainer",
        env={
            "_STORYBOARD_TRAINER_COMPLETE": "complete_bash",
            "COMP_WORDS": "storyboard-trainer run --aggregation c",
            "COMP_CWORD": "3",
        },
    )
    assert (done.exit_code, done.output.split()) == (0, ["coarse", "coarse+fine"])
