"""How the project CLIs' help reads (`about.command_app` builds every app with `HelpGroup`):
plain text wrapped at the terminal's width (no rich markup, which ate `[wandb]`, and no
table that cut flags with "…"), value types as words (`--frames INTEGER`, `--root PATH`, a
flag alone: `--json`), each command's first sentence whole in the command list, and no
line break inside a hyphenated word (`--freeze-backbone`, `cache-features`). Options with
a fixed set of values take `choice_option`: `[a|b]` in the help, and shell completion."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# A value's word by its type, as click names them; a list option repeats the flag (its help
# says so), each time with one such value.
TYPE_WORDS = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}
_UNBROKEN_HYPHEN = "\u2011"  # wraps as a letter; printed back as "-"


def choice_option(
    default, *flags: str, values: Sequence | Callable[[], Sequence], help: str, **more
):
    """A typer option whose value is one of `values` (or of what `values()` returns when
    asked: names found on disk), which the shell completes; the command checks the value
    itself (its own refusal). Fixed values show as `[a|b]`, found ones as `more["metavar"]`."""
    import typer

    def complete(incomplete: str) -> list[str]:
        found = values() if callable(values) else values
        return [str(v) for v in found if str(v).startswith(incomplete)]

    if more.get("metavar") is None:
        more["metavar"] = "NAME" if callable(values) else choices_word(values)
    return typer.Option(default, *flags, help=help, autocompletion=complete, **more)


def with_parameters(command, before: Sequence = (), after: Sequence = ()):
    """`command` taking the options `before` and `after` its own (keyword-only
    `inspect.Parameter`s, a typer option each as default): typer reads the signature built
    here, and the command gets them in its `**kwargs`, by name. So options declared as data
    elsewhere (a run setting, an LLM backend's option) become flags of one command."""
    hints = typing.get_type_hints(command)
    own = [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(command).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    parameters = [*before, *own, *after]
    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def choices_word(values: Sequence) -> str:
    return "[" + "|".join(map(str, values)) + "]"


def value_word(option: TyperOption) -> str:
    """What an option's value is, for a reader: its choices, else its type's word."""
    described = option.type_descriptor
    if described.is_choice:
        return choices_word([getattr(c, "value", c) for c in described.choices])
    annotation = described.annotation
    if described.is_list:
        annotation = annotation.__args__[0]
    return TYPE_WORDS.get(annotation, "VALUE")


def first_sentence(text: str | None) -> str:
    """A help's first sentence (its first paragraph's words up to one ending in "."), whole."""
    words = (text or "").split("\n\n")[0].split()
    ends = [i for i, w in enumerate(words) if w.endswith(".")]
    return " ".join(words[: ends[0] + 1] if ends else words)


class HyphenKeepingFormatter:
    """Mixed into click's HelpFormatter: hyphens wrap as letters, so no line ends inside a
    flag or a command name."""

    def write_dl(self, rows, *args, **kwargs):
        rows = [(a, b.replace("-", _UNBROKEN_HYPHEN)) for a, b in rows]
        super().write_dl(rows, *args, **kwargs)

    def write_text(self, text: str) -> None:
        super().write_text(text.replace("-", _UNBROKEN_HYPHEN))

    def getvalue(self) -> str:
        return super().getvalue().replace(_UNBROKEN_HYPHEN, "-")


def _help_context(command) -> type:
    base = command.context_class
    formatter = type("HelpFormatter", (HyphenKeepingFormatter, base.formatter_class), {})
    return type("HelpContext", (base,), {"formatter_class": formatter})


class NamedArgument(TyperArgument):
    """An argument shown by its name alone, as click shows one (`VIDEO`, not typer's
    `{video}` and `video <path>`)."""

    def display_type_rich(self, ctx):
        return None

    def _usage_display_name(self) -> str:
        return self.metavar + ("..." if self.nargs != 1 else "")


class HelpGroup(TyperGroup):
    """A project CLI's group: its commands' options get value words where none is given,
    commands list their first sentence whole, and help wraps without breaking words."""

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        self.context_class = _help_context(self)
        for command in self.commands.values():
            command.context_class = _help_context(command)
            command.short_help = command.short_help or first_sentence(command.help)
            for param in command.params if isinstance(command, TyperCommand) else ():
                if isinstance(param, TyperOption):
                    param.metavar = param.metavar or value_word(param)
                elif isinstance(param, TyperArgument):
                    param.metavar = param.metavar or param.name.upper()
                    param.__class__ = NamedArgument
