"""Stage one's LLM backends by `--llm` name (`REGISTRY`), each with the options it reads.

A backend is one module: the backend (the `Backend` protocol of `base.py`), its options
(`BackendOption`s: flag, default, help, range) and `backends`, from the options' values to
the backends `generate` runs, paired in its `BACKEND` (`LLMBackend`), and one line here.
`generate` offers every backend's options (an option several backends read, such as
`--model`, is one shared declaration), checks them all and calls the chosen backend's
`backends`. Heavy libraries (openai, torch, transformers) load only when a backend is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from storyboard_common.errors import UserError, check_ranges

from . import files, llava, openai_chat
from .base import BackendOption, LLMBackend

# what other packages may use: the file backend (their own sub-texts, no LLM)
__all__ = ["files"]

REGISTRY: dict[str, LLMBackend] = {
    "openai": openai_chat.BACKEND,
    "llava": llava.BACKEND,
    "file": files.BACKEND,
}


def backend_options() -> list[BackendOption]:
    """Every backend's options, each once, in the registry's order; two backends that read
    one flag share its declaration (`base.MODEL`), so it means one thing to both."""
    by_name: dict[str, BackendOption] = {}
    for entry in REGISTRY.values():
        for option in entry.options:
            if by_name.setdefault(option.name, option) is not option:
                raise TypeError(f"{option.flag} is declared twice; share one declaration.")
    return list(by_name.values())


def check_options(llm: str, values: Mapping[str, Any]) -> None:
    """Refuse, in one sentence, a number out of its range (every backend's, whichever runs)
    or an option that another backend reads only and that `llm` would ignore."""
    options = backend_options()
    check_ranges(
        {o.flag: o.bounds for o in options if o.bounds},
        {o.flag: values[o.name] for o in options if o.bounds},
    )
    own = REGISTRY[llm].options
    for option in options:
        if option.elsewhere and option not in own and values[option.name] is not None:
            raise UserError(option.elsewhere)
