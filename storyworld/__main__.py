"""`python -m storyworld demo|study|pretrain-clip`: parses flags and calls the storyboard
world's harness (the library is `trainer`; the harness runs both stages)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from storyboard_common.about import DEVICES, command_app
from storyboard_common.cli_help import choice_option
from storyboard_common.errors import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_SEED,
    Bounds,
    UserError,
    check_ranges,
    run_cli,
)

from . import WORLD_CLIP

app = command_app("The storyboard world: the demo, the study and the world CLIP's pre-training.")
console = Console()

BOUNDS = {  # the numeric options' ranges (`check_ranges`), checked before anything is written
    "--epochs": Bounds(1, MAX_EPOCHS),
    "--batch-size": Bounds(1, MAX_BATCH),
    "--seed": Bounds(0, MAX_SEED),
    "--seeds": Bounds(0, MAX_SEED),
}


def _objectives() -> list[str]:
    from .pretrain import OBJECTIVES  # torch: only when a shell completes --objective

    return list(OBJECTIVES)


@app.command(
    "pretrain-clip",
    help=(
        "Train a small CLIP on a world's frames and atomic-action captions.\n\n"
        "It loads back with --clip-model CONFIG --clip-pretrained CHECKPOINT."
    ),
)
def pretrain_clip_command(
    world: Path = typer.Option(
        Path("artifacts/demo/world"),
        help="A world folder: a complete world (world.json), or one holding "
        "atomic_actions.json and seen/train.txt, is used as it is; a missing or empty one "
        "gets the built-in storyboard world written there.",
    ),
    out: Path = typer.Option(Path("artifacts/demo/world-clip.pt"), help="Checkpoint to write."),
    clip_model: str = typer.Option(
        WORLD_CLIP,
        help="Model config (default: the world CLIP's, StoryboardWorld-CLIP.json).",
        show_default=False,  # a path inside the clone, too long to read
    ),
    epochs: int = typer.Option(20, help="Epochs over the (frame, caption) pairs."),
    batch_size: int = typer.Option(128, help="Frames per step."),
    seed: int = typer.Option(0, help="Seed of the world (when written) and of training."),
    device: str = choice_option("auto", values=DEVICES, help="auto, cpu or cuda."),
    force: bool = typer.Option(False, help="Retrain even if the checkpoint exists."),
    objective: str = choice_option(
        "pooled",
        values=_objectives,
        metavar="OBJECTIVE",
        help="pooled (CLIP's own loss) or pooled+tokens (also Eq. 10's word-token scores).",
    ),
) -> None:
    from .pretrain import log_path, pretrain_clip
    from .world.write import world_folder

    check_ranges(BOUNDS, {"--epochs": epochs, "--batch-size": batch_size, "--seed": seed})
    world = world_folder(world, seed=seed)
    kept = out.is_file() and not force
    path = pretrain_clip(
        world / "seen",
        world,
        out,
        clip_model,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        device=device,
        force=force,
        objective=objective,
    )
    note = " (already there: kept; --force retrains)" if kept else f", log {log_path(path)}"
    console.print(f"checkpoint: {path}{note}")


@app.command(
    help="A one-seed digest of the study on the built-in storyboard world (`make demo`).",
)
def demo(
    out: Path = typer.Option(Path("artifacts/demo"), help="Where the demo writes."),
    seed: int = typer.Option(0, help="Seed of the world, the CLIP and every run."),
) -> None:
    from .demo import DemoSettings, run_demo

    check_ranges(BOUNDS, {"--seed": seed})
    run_demo(DemoSettings(out=out, seed=seed))


@app.command(
    help=(
        "Every aggregation mode on the storyboard world over seeds, with references.\n\n"
        "What `make study` runs; rerun it to resume."
    ),
)
def study(
    work: Path = typer.Option(Path("artifacts/study"), help="Working folder (resumable)."),
    out: Path = typer.Option(
        Path("docs/study"), help="Where results.json, README.md and the plots go."
    ),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds of the runs."),
    notes: Path = typer.Option(
        Path("docs/study/notes.md"),
        help="Hand-written design changes and findings, appended to README.md.",
    ),
    report_only: bool = typer.Option(
        False,
        "--report-only",
        help="Rewrite README.md and the plots from OUT/results.json; train nothing.",
    ),
) -> None:
    from dataclasses import replace

    from .study.design import StudyDesign
    from .study.report import read_results, write_report
    from .study.runner import run_study

    if report_only:
        console.print(f"report: {write_report(read_results(out), out, notes)}")
        return
    try:
        chosen = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, not {seeds!r}.") from None
    if not chosen:
        raise UserError("--seeds names no seed.")
    for seed in chosen:
        check_ranges(BOUNDS, {"--seeds": seed})
    results = run_study(replace(StudyDesign(), seeds=chosen), work, console)
    console.print(f"report: {write_report(results, out, notes)}")


def main() -> None:
    run_cli(app)


if __name__ == "__main__":
    main()
