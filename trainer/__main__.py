"""`python -m trainer ...`: parses flags and calls the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from subtext_gen.errors import UserError, run_cli

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Stage two of Storyboard: video data, training and evaluation.",
)
console = Console()


@app.callback()
def _commands() -> None:
    """Stage two of Storyboard: video data, training and evaluation."""


def _folds(split: str | None) -> list[int] | None:
    """`--split 1|2|3|all` -> folds; None for all."""
    if split in (None, "all"):
        return None
    if split not in ("1", "2", "3"):
        raise UserError(f"--split must be 1, 2, 3 or all, not {split!r}.")
    return [int(split)]


@app.command("check-data")
def check_data(
    dataset: str = typer.Option(..., help="hmdb51, ucf101, k400, charades or list."),
    root: Path = typer.Option(..., help="The dataset's root, in its official layout."),
    videos: Path = typer.Option(None, help="Where the videos are, if not under --root."),
    split: str = typer.Option(None, help="Fold 1, 2, 3 or all (default: every split)."),
    frames: int = typer.Option(8, min=1, help="Frames a clip needs; fewer is 'short'."),
    workers: int = typer.Option(4, min=1, help="Videos probed in parallel."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, nothing else."),
) -> None:
    """Scan a dataset: missing, unreadable and short videos, class counts, split sizes."""
    from .data.check import check_splits
    from .data.layouts import available_splits, load_split

    folds = _folds(split)
    splits = [
        load_split(dataset, root, name, fold, videos)
        for name, fold in available_splits(dataset, root)
        if folds is None or fold is None or fold in folds
    ]
    report = check_splits(splits, frames, workers, show_progress=not as_json)
    if as_json:
        sys.stdout.write(json.dumps(report.to_json()) + "\n")
        return
    table = Table(title=f"{dataset} at {root}: {report.classes} classes")
    table.add_column("class")
    for name in report.splits:
        table.add_column(name, justify="right")
    for c, class_name in enumerate(report.class_names):
        table.add_row(f"{c} {class_name}", *(str(report.class_counts[s][c]) for s in report.splits))
    table.add_row("[bold]total", *(f"[bold]{n}" for n in report.splits.values()))
    console.print(table)
    for kind in ("missing", "unreadable", "short"):
        names = getattr(report, kind)
        style = "green" if not names else "red"
        console.print(f"[{style}]{kind}: {len(names)}[/]")
        for name in names[:20]:
            console.print(f"  {name}")
        if len(names) > 20:
            console.print(f"  ... and {len(names) - 20} more (--json lists all)")


def main() -> None:
    run_cli(app)


if __name__ == "__main__":
    main()
