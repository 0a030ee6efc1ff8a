"""The one exception type for mistakes a user can fix (a flag, a file, a class name).

The CLIs print its message as one sentence on stderr and exit with status 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem caused by the user's input, explained in one sentence."""


def run_cli(app) -> None:
    """Run a typer app: a UserError is one line on stderr and exit status 2; Ctrl-C is 130."""
    import sys

    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: everything written so far is kept; rerun to resume.", file=sys.stderr)
        sys.exit(130)
