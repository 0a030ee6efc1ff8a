"""The core both stages stand on; it imports neither of them.

    about      the version, and the paper the project implements
    classes    class lists, and the one rule for comparing class names
    cli_help   how the command lines' help reads
    clip       the one CLIP loader, its identity and text features
    device     the choice of device
    errors     the user-error type, the CLI runner, the range check of numeric flags
    files      files and checkpoints written atomically; the artifacts folder
    hub        weights from the Hugging Face Hub, cache first
    locks      one writer per folder
    plots      matplotlib drawing into files
    progress   the progress bar of long loops
    resources  the data shipped in the package (`data/`): class lists, CLIP configs
    subtexts   the read side of the sub-text artifact

Other packages may import every module in `__all__`; a module's names without a leading
underscore are its public ones. Nothing is imported here, so importing one module stays
cheap (tests/project/test_layers_public.py)."""

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
