"""The one exception type for mistakes a user can fix (a flag, a file, a class name).

The CLIs print its message as one sentence on stderr and exit with status 2 (`run_cli`);
anything else is a bug and keeps its traceback. `check_ranges` refuses numeric flags out
of range in such a sentence; `unsafe_load_reason` names what a weights-only `torch.load`
refused, for the one sentence that refuses such a file.
"""

import math


class UserError(Exception):
    """A problem caused by the user's input, explained in one sentence."""


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, at most `limit` characters (C++ and
    pickle errors run over many lines); its type's name when it has no message."""
    lines = str(error).strip().splitlines()
    line = lines[0].strip() if lines else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def run_cli(app) -> None:
    """Run a typer app: a UserError, or a flag the parser refuses (an unknown choice, a value
    of the wrong type), is one line on stderr and exit status 2; Ctrl-C is 130."""
    import sys

    import typer

    try:
        result = app(standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted: everything written so far is kept; rerun to resume.", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # the parser's usage errors (typer's own click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        bare = type(exc).__name__ == "NoArgsIsHelpError"  # no command: the help itself
        print(message if bare else f"error: {message}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(result if isinstance(result, int) else 0)


def bound_refusal(
    flag: str,
    value: float | None,
    at_least: float | None = None,
    positive: bool = False,
    unit: str = "number",
) -> str | None:
    """Why a numeric flag's value lies out of its range, in one sentence naming it, else
    None: below `at_least`, or, where `positive`, not finite and above zero (NaN and
    infinity are refused); None is an unset flag."""
    if value is None:
        return None
    if at_least is not None and not value >= at_least:
        return f"{flag} must be at least {at_least}, not {value}."
    if positive and not (value > 0 and math.isfinite(value)):
        return f"{flag} must be a positive {unit}, not {value}."
    return None


def check_ranges(
    at_least: dict[str, tuple[float | None, float]],
    positive: dict[str, float] | None = None,
    unit: str = "number",
) -> None:
    """Refuse a numeric flag out of range (`bound_refusal`): `at_least` maps a flag to
    (value, least value), None meaning unset; `positive` flags must be finite and above
    zero. Click's own range check prints a multi-line box."""
    refusals = [bound_refusal(flag, v, at_least=least) for flag, (v, least) in at_least.items()]
    refusals += [bound_refusal(f, v, positive=True, unit=unit) for f, v in (positive or {}).items()]
    for refused in refusals:
        if refused:
            raise UserError(refused)


def unsafe_load_reason(exc: BaseException) -> str | None:
    """The object a weights-only `torch.load` refused to build (e.g. `posix.system`), or
    None when `exc` is not such a refusal, as for a file that is no pickle at all (open_clip
    and the trainer both load weights-only)."""
    import pickle
    import re

    if not isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" not in str(exc):
        return None
    found = re.search(r"unsupported GLOBAL ([\w.]+)", str(exc))
    return found.group(1) if found else None  # else a damaged file, not an object refused
