"""What the project is: its version, which every CLI prints (`--version`, `command_app`),
and the paper it implements, which exported model cards cite (CITATION.cff says the same;
a test compares)."""

from __future__ import annotations

import re
from pathlib import Path

DISTRIBUTION = "storyboard"
# What every CLI's --device completes to (it takes cuda:N too); see `device.choose_device`.
DEVICES = ("auto", "cpu", "cuda")
_CLONE_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# The arXiv preprint (arXiv:2410.14238); its venue is not recorded here.
PAPER = {
    "title": "Storyboard guided Alignment for Fine-grained Video Action Recognition",
    "authors": (
        ("Enqi", "Liu"),
        ("Liyuan", "Pan"),
        ("Yan", "Yang"),
        ("Yiran", "Zhong"),
        ("Zhijing", "Wu"),
        ("Xinxiao", "Wu"),
        ("Liu", "Liu"),
    ),
    "year": 2024,
    "arxiv": "2410.14238",
}


def paper_bibtex() -> str:
    """The paper as a BibTeX entry (an arXiv preprint)."""
    authors = " and ".join(f"{family}, {given}" for given, family in PAPER["authors"])
    return "\n".join(
        [
            f"@misc{{liu{PAPER['year']}storyboard,",
            f"  title = {{{PAPER['title']}}},",
            f"  author = {{{authors}}},",
            f"  year = {{{PAPER['year']}}},",
            f"  eprint = {{{PAPER['arxiv']}}},",
            "  archivePrefix = {arXiv},",
            f"  doi = {{10.48550/arXiv.{PAPER['arxiv']}}},",
            "}",
        ]
    )


def storyboard_version() -> str:
    """The version of the code that runs: a clone's pyproject.toml when this package sits in
    one (an editable install's metadata keeps the version it was installed at), else the
    installed distribution's metadata (a wheel)."""
    from importlib.metadata import PackageNotFoundError, version

    if _CLONE_PYPROJECT.is_file():
        text = _CLONE_PYPROJECT.read_text(encoding="utf-8")
        if re.search(rf'^name = "{DISTRIBUTION}"$', text, re.MULTILINE):
            return re.search(r'^version = "([^"]+)"$', text, re.MULTILINE).group(1)
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # the modules copied without their metadata
        return "unknown"


def command_app(summary: str, package: str | None = None, installed: str | None = None):
    """A project CLI's typer app (`python -m subtext_gen|trainer|storyworld`): `summary` as
    its help, no command -> help, tracebacks left to `errors.run_cli`, and an eager
    `--version` that prints the version and stops before any command runs.

    Shell completion binds to a command's name, so it is offered only by the `installed`
    command (pyproject's console script) that runs `package`'s CLI: run as `python -m
    package`, that name would be `python` (typer wrote a broken script and bound it to
    `python` in the user's shell rc), so there `--install-completion` and
    `--show-completion` are one sentence pointing to the installed command, and no shell
    file is touched."""
    import typer

    from .cli_help import HelpGroup

    as_module = installed is not None and run_as_module(package)
    app = typer.Typer(
        cls=HelpGroup,  # plain help at the terminal's width (`cli_help`)
        rich_markup_mode=None,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        help=summary,
        add_completion=installed is not None and not as_module,
    )

    def print_version(asked: bool) -> None:
        if asked:
            print(f"{DISTRIBUTION} {storyboard_version()}")
            raise typer.Exit()

    def refuse_completion(asked: bool) -> None:
        from .errors import UserError

        if asked:
            raise UserError(
                f"`python -m {package}` offers no shell completion, which a shell binds to a "
                f"command's name (here `python`); run `{installed} --install-completion` (the "
                "installed command) instead."
            )

    version_option = typer.Option(
        False, "--version", is_eager=True, callback=print_version, help="Print the version."
    )
    if as_module:
        refusal = {"hidden": True, "is_eager": True, "callback": refuse_completion}

        @app.callback(help=summary)
        def _commands(
            version: bool = version_option,
            install: bool = typer.Option(False, "--install-completion", **refusal),
            show: bool = typer.Option(False, "--show-completion", **refusal),
        ) -> None:
            pass

    else:

        @app.callback(help=summary)
        def _commands(version: bool = version_option) -> None:
            pass

    return app


def run_as_module(package: str | None) -> bool:
    """Whether this process runs `python -m package` (its `__main__` is `package.__main__`;
    an installed command's `__main__` is its script)."""
    import sys

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return package is not None and spec is not None and spec.name == f"{package}.__main__"
