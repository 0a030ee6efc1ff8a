"""Default locations: datasets (`$STORYBOARD_DATA`), sub-text artifacts, feature caches
and run directories; the check that an output folder can be written, and the one writer of
a run folder (`run_folder`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storyboard_common.clip import clip_identity
from storyboard_common.errors import UserError
from storyboard_common.files import artifacts_root, os_reason
from storyboard_common.locks import folder_lock
from storyboard_common.subtexts import SUBTEXTS_FILE, clip_tag, scored_dir

from .settings import RunConfig

DATA_ENV = "STORYBOARD_DATA"


def dataset_root(dataset: str, root: Path | None = None) -> Path:
    """`root` when given, else `$STORYBOARD_DATA/<dataset>`, else `data/<dataset>` in the
    working directory (the repository's `data/` when run from a clone), absolute; a
    UserError when that default is absent."""
    if root is not None:
        return Path(root)
    from .data.layouts import dataset_name

    name = dataset_name(dataset)
    base = os.environ.get(DATA_ENV)
    root = (Path(base).expanduser() if base else Path("data")).absolute() / name
    if not root.is_dir():
        source = f"from {DATA_ENV}" if base else "the default data/ folder"
        raise UserError(
            f"no --root given and {root} ({source}) does not exist: put {name} there, pass "
            f"--root DIR, or set {DATA_ENV}=DIR to read DIR/{name}."
        )
    return root


def default_subtexts(dataset: str, clip_model: str, clip_pretrained: str) -> Path:
    """The dataset's sub-text artifact scored with this CLIP, where `subtext_gen score`
    writes it by default."""
    folder = scored_dir(artifacts_root() / dataset, clip_identity(clip_model, clip_pretrained))
    return folder / SUBTEXTS_FILE


def default_features_dir(
    dataset: str, fold: int | None, clip_id: tuple[str, str], frames: int
) -> Path:
    fold_part = f"-split{fold}" if fold is not None else ""
    return artifacts_root() / "features" / f"{dataset}{fold_part}-{clip_tag(*clip_id)}-f{frames}"


def default_run_dir(cfg: RunConfig) -> Path:
    shots = f"-{cfg.shots}shot" if cfg.shots else ""
    return Path("runs") / f"{cfg.dataset}{shots}-split{cfg.split}-{cfg.aggregation}-seed{cfg.seed}"


def writable_dir(path: Path, flag: str = "--out") -> None:
    """Create `path` and prove a file can be written in it: a one-sentence UserError before
    any work if not (read-only folder, a file in the way, no space)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(
            f"{flag} {path} cannot be written ({os_reason(exc)}): pass a folder you can write to."
        ) from exc


@contextmanager
def new_dir(path: Path, flag: str = "--out", own: tuple[str, ...] = ()) -> Iterator[None]:
    """`writable_dir(path)`, and when the block raises before anything is written in a
    folder it created, the folder removed again: a refused run leaves nothing behind.
    `own`: names of files the block's own set-up places there (a lock file), removed with it."""
    created = not path.exists()
    writable_dir(path, flag)
    try:
        yield
    except BaseException:
        if created and path.is_dir() and {entry.name for entry in path.iterdir()} <= set(own):
            for name in own:
                (path / name).unlink(missing_ok=True)
            path.rmdir()
        raise


# A run folder holds this lock file from the moment a run takes it (older runs: checkpoints/).
RUN_LOCK = ".run.lock"


def check_run_folder(out: Path) -> None:
    """Refuse an `out` that holds files but no run (neither the run lock file nor
    checkpoints/): a run writes only into an empty folder or a run's own."""
    try:
        foreign = (
            out.is_dir()
            and any(out.iterdir())
            and not ((out / RUN_LOCK).exists() or (out / "checkpoints").is_dir())
        )
    except OSError as exc:
        raise UserError(f"--out {out} cannot be read ({os_reason(exc)}).") from exc
    if foreign:
        raise UserError(
            f"--out {out} holds files but no run (neither {RUN_LOCK} nor checkpoints/): pass "
            "an empty or new folder, or the folder of a run."
        )


@contextmanager
def run_folder(out: Path) -> Iterator[None]:
    """The run folder `out` held by this process alone for the block: refused when it holds
    files but no run, or while another `trainer run` holds it (an OS lock, dropped however
    the holder dies); created if needed and removed again when the block fails before
    writing anything."""
    check_run_folder(out)
    with (
        new_dir(out, own=(RUN_LOCK,)),
        folder_lock(out, RUN_LOCK, "`trainer run`", "the run folder"),
    ):
        yield
