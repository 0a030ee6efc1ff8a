"""The one exception type for mistakes a user can fix (a flag, a file, a class name).

The CLIs print its message as one sentence on stderr and exit with status 2 (`run_cli`);
anything else is a bug and keeps its traceback. `check_ranges` refuses numeric flags out
of range in such a sentence; `unsafe_load_reason` names what a weights-only `torch.load`
refused, for the one sentence that refuses such a file.
"""

import math
from dataclasses import dataclass

# Upper bounds both stages share (`Bounds`): far above any real use, far below where a value
# hangs, fills memory or ends in a traceback from torch or numpy.
MAX_SEED = 2**32 - 1  # numpy's legacy seed (np.random.seed) takes 0 .. 2**32 - 1
MAX_BATCH = 65_536  # items in a batch: 2**16, more than any accelerator's memory holds
MAX_WORKERS = 256  # processes, threads or requests in flight from one machine
MAX_EPOCHS = 10_000


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


@dataclass(frozen=True)
class Bounds:
    """The range a numeric flag's values must lie in: `at_least`, `at_most` (None: no such
    bound) and, where `positive`, finite and above zero; `unit` names what it counts in the
    refusal ("number of seconds")."""

    at_least: float | None = None
    at_most: float | None = None
    positive: bool = False
    unit: str = "number"

    def refusal(self, flag: str, value: float | None) -> str | None:
        return bound_refusal(flag, value, self.at_least, self.positive, self.unit, self.at_most)


def bound_refusal(
    flag: str,
    value: float | None,
    at_least: float | None = None,
    positive: bool = False,
    unit: str = "number",
    at_most: float | None = None,
) -> str | None:
    """Why a numeric flag's value lies out of its range, in one sentence naming the flag, the
    value and the range, else None: below `at_least`, above `at_most`, or, where `positive`,
    not finite and above zero (NaN and infinity are refused by every bound); None is an unset
    flag."""
    if value is None:
        return None
    below = at_least is not None and not value >= at_least
    above = at_most is not None and not value <= at_most
    not_positive = positive and not (value > 0 and math.isfinite(value))
    if not (below or above or not_positive):
        return None
    if positive:
        least = f"a positive {unit}" + (
            f" at most {_shown(at_most)}" if at_most is not None else ""
        )
        return f"{flag} must be {least}, not {_shown(value)}."
    if at_most is None:
        return f"{flag} must be at least {_shown(at_least)}, not {_shown(value)}."
    if at_least is None:
        return f"{flag} must be at most {_shown(at_most)}, not {_shown(value)}."
    return f"{flag} must be from {_shown(at_least)} to {_shown(at_most)}, not {_shown(value)}."


def _shown(number: float) -> str:
    """A bound or value as typed: 1 not 1.0, 1e+21 not 1000000000000000000000.0."""
    if isinstance(number, float) and number.is_integer() and abs(number) < 1e16:
        return str(int(number))
    return str(number)


def check_ranges(bounds: dict[str, Bounds], values: dict[str, float | None]) -> None:
    """Refuse the first numeric flag of `values` (flag: value, None meaning unset) out of its
    `bounds` (flag: `Bounds`) in one UserError sentence (`bound_refusal`). Click's own range
    check prints a multi-line box, and knows no bound of a float's finiteness."""
    for flag, value in values.items():
        refused = bounds[flag].refusal(flag, value)
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
