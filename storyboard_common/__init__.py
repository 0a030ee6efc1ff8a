"""The core both stages stand on, importing neither: the one CLIP loader, its identity and
text features (`clip`), class lists and the class-name rule (`classes`), the shipped data
(`resources`, `data/`), the read side of the sub-text artifact (`subtexts`), the user-error
type, the CLI runner, the range check of numeric flags and the reason a weights-only load
refused a file (`errors`); files and checkpoints written atomically and the artifacts folder
(`files`); the progress bar of long loops (`progress`); matplotlib drawing into files
(`plots`); the choice of device (`device`); Hugging Face Hub weights (`hub`); folder locks
(`locks`); the version and the paper the project implements (`about`).

`__all__` names the modules the other packages may import (all of them: this is the shared
core); a module's names without a leading underscore are its public ones. The modules are
not imported here, so importing one stays cheap (tests/project/test_layers_public.py)."""

__all__ = [
    "about",
    "classes",
    "cli_help",
    "clip",
    "device",
    "errors",
    "files",
    "hub",
    "locks",
    "plots",
    "progress",
    "resources",
    "subtexts",
]
