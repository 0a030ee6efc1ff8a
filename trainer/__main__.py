"""`python -m trainer ...`: parses flags and calls the library."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from storyboard_common.about import command_app
from storyboard_common.cli_help import choice_option, with_parameters
from storyboard_common.errors import UserError, check_ranges, run_cli

from .cache.store import DTYPES
from .data.prepare import TARGETS
from .settings import COMMAND_BOUNDS, RunConfig, declared, field_type, flag_name, range_refusal

app = command_app(
    "Stage two of Storyboard: video data, training and evaluation.",
    __package__,
    "storyboard-trainer",
)
console = Console()


def setting_option(name: str, **changes):
    """The option of RunConfig's field `name` as its declaration (`trainer.settings.Setting`)
    states it: flag and help, default None (the preset's, the file's or RunConfig's value).
    `changes` (`default`, `help`): where a command takes the setting a little differently."""
    f = _SETTINGS[name]
    meta = declared(f)
    flag = flag_name(name)
    if field_type(f)[0] is bool:
        flag += "/" + (meta.off_flag or "--no-" + name.replace("_", "-"))
    default, help = changes.get("default"), changes.get("help", meta.help)
    values = meta.choices or meta.completes
    if values is None:
        return typer.Option(default, flag, help=help)
    return choice_option(default, flag, values=values, help=help, metavar=meta.metavar)


_SETTINGS = {f.name: f for f in dataclasses.fields(RunConfig)}


def with_settings(*names: str, **helps: str):
    """A command taking RunConfig settings as options: one per field named (default: every
    field with a flag), from its declaration (`setting_option`, with `helps` by name), ahead
    of the command's own parameters; typer reads the signature built here, and the command
    gets the settings in its `**settings`, by field name, None where not given."""

    def decorate(command):
        chosen = names or [f.name for f in _SETTINGS.values() if declared(f).cli]
        keyword = inspect.Parameter.KEYWORD_ONLY
        settings = [
            inspect.Parameter(
                name,
                keyword,
                default=setting_option(name, **({"help": helps[name]} if name in helps else {})),
                annotation=field_type(_SETTINGS[name])[0],
            )
            for name in chosen
        ]
        return with_parameters(command, before=settings)

    return decorate


_PLAIN = {"markup": False, "highlight": False, "soft_wrap": True}  # file names, verbatim


@app.command(
    "check-data",
    help=(
        "Scan a dataset: missing, unreadable and short videos, class counts, split sizes.\n\n"
        "Exits 2 after the report when a video is unreadable or short, or too many are "
        "missing.\n\n"
        "Splits whose files are absent (a partial download) are skipped and named."
    ),
)
def check_data(
    dataset: str = setting_option("dataset", default=...),
    root: Path = setting_option("root"),
    videos: Path = setting_option("videos"),
    train_list: Path = setting_option("train_list"),
    test_list: Path = setting_option("test_list"),
    class_list: Path = setting_option("class_list"),
    split: str = setting_option("split", help="Fold 1, 2, 3 or all (default: every split)."),
    frames: int = typer.Option(8, help="Frames a clip needs; fewer is 'short'."),
    workers: int = typer.Option(4, help="Videos probed in parallel."),
    allow_missing: int = typer.Option(
        0,
        help="Missing videos accepted (Kinetics copies lack deleted clips); unreadable and "
        "short ones always fail.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, nothing else."),
) -> None:
    from .data.check import check_splits, load_dataset_splits
    from .data.layouts import ListFiles
    from .paths import dataset_root

    bounded(frames=frames, workers=workers, allow_missing=allow_missing)
    root = dataset_root(dataset, root)
    lists = ListFiles(train_list, test_list, class_list)
    splits, absent = load_dataset_splits(dataset, root, videos, split, lists)
    report = check_splits(splits, frames, workers, not as_json, absent)
    problems = report.problems(allow_missing)
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(allow_missing)) + "\n")
    else:
        _print_check_report(report, f"{dataset} at {root}")
    if problems:
        lists = "the JSON report's lists" if as_json else "the lists above"
        raise UserError(f"{dataset} at {root}: {problems}; see {lists}.")


@app.command(
    "prepare-videos",
    help=(
        "Re-encode a dataset for fast clip reads, or unpack it into JPEG frames.\n\n"
        "Video copies are H.264 (short side --short-side, a keyframe every --keyframe-every "
        "frames, no audio, frame rate and frames kept); with --to frames each video becomes "
        "a folder of its JPEG frames. The annotation files are copied too, so `--root OUT` "
        "works with every command. Resumable: rerun it."
    ),
)
def prepare_videos_command(
    dataset: str = setting_option("dataset", default=...),
    root: Path = setting_option("root"),
    videos: Path = setting_option("videos"),
    train_list: Path = setting_option("train_list"),
    test_list: Path = setting_option("test_list"),
    class_list: Path = setting_option("class_list"),
    out: Path = typer.Option(..., help="The prepared copy (new, empty, or a prepared one)."),
    to: str = choice_option(
        "videos",
        values=TARGETS,
        help="videos: H.264 copies; frames: a folder of JPEG frames (img_00001.jpg, ...) per "
        "video, its path without the extension.",
    ),
    short_side: int = typer.Option(256, help="Short side of the copies in px (never scaled up)."),
    keyframe_every: int = typer.Option(16, help="A keyframe every N frames (video copies only)."),
    workers: int = typer.Option(None, help="Videos encoded in parallel (default: one per core)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, nothing else."),
) -> None:
    from .data.layouts import ListFiles
    from .data.prepare import prepare_videos, print_summary
    from .paths import dataset_root

    bounded(short_side=short_side, keyframe_every=keyframe_every, workers=workers)
    root = dataset_root(dataset, root)
    lists = ListFiles(train_list, test_list, class_list)
    summary = prepare_videos(
        dataset, root, out, videos, short_side, keyframe_every, workers, not as_json, to, lists
    )
    if as_json:
        sys.stdout.write(json.dumps(summary.to_json()) + "\n")
    else:
        print_summary(summary, lambda line: console.print(line, **_PLAIN))


def bounded(**values) -> None:
    """Refuse a command's own numeric option out of its `COMMAND_BOUNDS` (by parameter name,
    its flag with dashes) before the command does anything."""
    check_ranges(COMMAND_BOUNDS, {"--" + name.replace("_", "-"): v for name, v in values.items()})


def bounded_settings(**values) -> None:
    """Refuse a run setting a command takes alone (not through `RunConfig`, as `eval
    --workers`) out of its declared range."""
    for name, value in values.items():
        refused = range_refusal(_SETTINGS[name], value)
        if refused:
            raise UserError(refused)


def _print_check_report(report, title: str) -> None:
    for name, what in report.missing_splits.items():
        console.print(f"{name}: {what} not found, skipped", **_PLAIN)
    table = Table(title=f"{title}: {report.classes} classes")
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
            reason = report.unreadable_reasons.get(name) if kind == "unreadable" else None
            console.print(f"  {name}: {reason}" if reason else f"  {name}", **_PLAIN)
        if len(names) > 20:
            console.print(f"  ... and {len(names) - 20} more (--json lists all)")


@app.command(
    help="Train and evaluate (supervised, few-shot), writing a run directory.",
)
@with_settings()
def run(
    *,
    config: Path = typer.Option(
        None,
        help="Settings from a YAML or JSON file (keys as in a run's config.json; a run's "
        "config.json replays it, with a new --out); flags given here win.",
    ),
    resume: bool = typer.Option(False, help="Continue the run in --out exactly."),
    log_every: int = typer.Option(
        50,
        help="Print a line every N optimiser steps (loss, lr, clips/s, data wait, memory) "
        "and append it to steps.jsonl; 0: none.",
    ),
    report_to: str = typer.Option(
        None,
        help="Also log to tensorboard and/or wandb (comma-separated; optional extras "
        "storyboard[tensorboard], storyboard[wandb]).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    **settings,
) -> None:
    from .config import resolve_config
    from .run_log import LogSettings, parse_report_to
    from .training import run_folders, train_folds

    bounded(log_every=log_every)
    log_settings = LogSettings(log_every, parse_report_to(report_to))
    cfg = resolve_config(settings.pop("preset"), settings, config, resume)
    _print_result(train_folds(cfg, resume, not as_json, log_settings), as_json)
    _print_run_folders(run_folders(cfg), as_json)


@app.command(
    help=(
        "List the shipped presets, the paper's settings as config files.\n\n"
        "Copy one to edit it and pass it with `run --config FILE`, or name it with "
        "`run --preset NAME`."
    ),
)
def presets() -> None:
    from .config import preset_files

    for name, path in preset_files().items():
        console.print(f"{name}: {path}", **_PLAIN)


@app.command(
    help=(
        "Run one row of the paper's tables with its protocol; resumable.\n\n"
        "Every fold and seed the row averages, reusing finished runs and resuming killed "
        "ones; writes reproduction.md and reproduction.json: the paper's number beside "
        "ours (mean and 95% interval)."
    )
)
def reproduce(
    row: str = typer.Argument(None, metavar="ROW", help="The row's id (`--list` shows them)."),
    rows: Path = typer.Option(
        None, help="A row file of your own (YAML, the shipped paper_rows.yaml's format)."
    ),
    runs: Path = typer.Option(
        Path("runs/reproduce"),
        help="Where each row's runs and reproduction.md/.json go (one folder per row).",
    ),
    list_rows: bool = typer.Option(
        False, "--list", help="Every row: its command, the paper's number, GPU hours."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the runs it would make."),
) -> None:
    from . import reproduce as rows_module

    table = rows_module.load_rows(rows)
    if list_rows:
        console.print(rows_module.list_table(table), **_PLAIN)
        return
    if row is None:
        raise UserError("name a ROW (`reproduce --list` shows them).")
    chosen = rows_module.row_named(table, row)
    if dry_run:
        for planned in rows_module.plan(table, chosen, runs):
            console.print(rows_module.command(planned), **_PLAIN)
        return
    from .evaluation import evaluate_checkpoint
    from .training import train

    out = rows_module.reproduce(table, chosen, runs, train, evaluate_checkpoint)
    console.print(f"wrote {out / 'reproduction.md'} and reproduction.json", **_PLAIN)


@app.command(
    "cache-features",
    help=(
        "Encode a fold once with the frozen CLIP visual tower; resumable.\n\n"
        "For `run --freeze-backbone --features DIR` and `eval --features DIR`. Under "
        "`torchrun --nproc_per_node N` each process encodes its share."
    ),
)
@with_settings(
    "dataset",
    "root",
    "videos",
    "train_list",
    "test_list",
    "class_list",
    "preset",
    "split",
    "clip_model",
    "clip_pretrained",
    "frames",
    "eval_clips",
    "eval_crops",
    "seed",
    "device",
    "batch_size",
    "workers",
    "prefetch",
    "dist_timeout",
    "decode_device",
    preset="A run preset, for its data and clip settings.",
    split="Fold 1, 2 or 3 (one cache per fold).",
    eval_clips="Temporal views at evaluation (1).",
    eval_crops="Spatial views at evaluation, 1 or 3 (1).",
    seed="Seed of the training views, as a run's --seed (0).",
    batch_size="Clips per forward pass (32).",
)
def cache_features_command(
    *,
    views: int = typer.Option(
        None, help="Training views per video (default: the run's --epochs, 20); runs cycle them."
    ),
    dtype: str = choice_option(
        "float16", values=DTYPES, help="float16 (half the disk) or float32 (exact)."
    ),
    out: Path = typer.Option(
        None,
        help="Cache folder (default: one in artifacts/features/ named "
        "<dataset>[-split<k>]-<clip>-f<T>).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, nothing else."),
    **settings,
) -> None:
    from .cache.build import cache_features
    from .config import resolve_config

    cfg = resolve_config(settings.pop("preset"), settings)
    summary = cache_features(cfg, out, views, dtype, show_progress=not as_json)
    if not _speaks():
        return
    if as_json:
        sys.stdout.write(json.dumps({**summary, "out": str(summary["out"])}) + "\n")
        return
    for split, rows in summary["encoded"].items():
        console.print(f"{split}: {rows} views encoded, {len(summary['skipped'][split])} unreadable")
        for entry in summary["skipped"][split][:20]:
            console.print(f"  {entry['video_id']}: {entry['reason']}", **_PLAIN)
    for path in summary["repaired"]:
        console.print(f"repaired: {path} was damaged; its views were encoded again", **_PLAIN)
    console.print(
        f"cache: {summary['out']} ({summary['bytes'] / 2**20:.1f} MiB, {summary['seconds']:.0f} s)",
        **_PLAIN,
    )


MODEL = typer.Option(
    ...,
    help="A run directory (its best, else last checkpoint), a model folder from `trainer "
    "export`, or hf-hub:ORG/REPO.",
)
# A run's recorded inputs, where they are now if they moved (default: the recorded ones).
RUN_SUBTEXTS = typer.Option(None, help="subtexts.parquet (default: the run's).")
RUN_CLIP_MODEL = typer.Option(
    None, help="The run's CLIP model-config JSON, if it moved (default: the run's)."
)
RUN_CLIP_PRETRAINED = typer.Option(
    None, help="The run's CLIP checkpoint, if it moved (default: the run's)."
)


ZERO_SHOT = ("full", "half", "subsets")  # eval --zero-shot


@app.command(
    "eval",
    help=(
        "Evaluate a trained run: top-1, top-5, mean class accuracy, mAP (multi-label).\n\n"
        "With --checkpoint alone: on the run's own dataset, root, videos, fold and "
        "sub-texts."
    ),
)
def evaluate(
    checkpoint: str = MODEL,
    dataset: str = setting_option(
        "dataset", help="The dataset to evaluate on (default: the run's)."
    ),
    root: Path = typer.Option(
        None,
        help="Dataset root (default: the run's on its own dataset, else "
        "$STORYBOARD_DATA/<dataset> or ./data/<dataset>).",
    ),
    videos: Path = typer.Option(
        None, help="Where the videos are, if not under --root (default: the run's)."
    ),
    test_list: Path = typer.Option(
        None, help="--dataset list: the test list, relative to --root (default: the run's)."
    ),
    class_list: Path = typer.Option(
        None, help="--dataset list: the class list, relative to --root (default: the run's)."
    ),
    subtexts: list[Path] = typer.Option(
        None,
        help="The target dataset's subtexts.parquet (default: the run's on its own dataset, "
        "else artifacts/<dataset>/<clip-tag>/); with --zero-shot subsets, repeat it to give "
        "one per --subsets file (in the same order), e.g. per-split description files.",
    ),
    zero_shot: str = choice_option(
        None,
        values=ZERO_SHOT,
        help="full (test splits, mean), half (10 halves) or subsets (each --subsets file).",
    ),
    subsets: list[Path] = typer.Option(
        None,
        "--subsets",
        help="With --zero-shot subsets: a file of class names (one a line, csv id,name, or a "
        "JSON label list or map) to "
        "evaluate on alone; repeat the flag for several (mean and std over them).",
    ),
    split: str = setting_option(
        "split", help="Fold 1, 2, 3 or all (default: the run's fold on its own dataset, else all)."
    ),
    device: str = setting_option("device", default="auto"),
    workers: int = setting_option("workers"),
    decode_device: str = setting_option("decode_device", default="cpu"),
    last: bool = typer.Option(False, "--last", help="Evaluate the last checkpoint, not the best."),
    features: Path = typer.Option(
        None,
        help="Read the test views from this feature cache (cache-features) instead of "
        "the videos; for runs with a frozen visual tower; one fold (the default --split).",
    ),
    clip_model: str = RUN_CLIP_MODEL,
    clip_pretrained: str = RUN_CLIP_PRETRAINED,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, nothing else."),
) -> None:
    """Long because its signature is the command's list of flags; the body parses and calls."""
    from .evaluation import evaluate_checkpoint

    bounded_settings(workers=workers)
    if zero_shot not in (None, *ZERO_SHOT):
        raise UserError(f"--zero-shot must be full, half or subsets, not {zero_shot!r}.")
    result = evaluate_checkpoint(
        checkpoint,
        dataset,
        root,
        subtexts,
        zero_shot,
        split,
        videos,
        device,
        workers,
        show_progress=not as_json,
        decode_device=decode_device,
        checkpoint="last" if last else "best",
        subsets=subsets,
        features=features,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        test_list=test_list,
        class_list=class_list,
    )
    if not as_json and result.get("subsets"):
        _print_subsets(result["subsets"])
        result = {k: v for k, v in result.items() if k != "subsets"}
    _print_result(result, as_json)


@app.command(
    help="The top classes of one video, with probabilities; optionally its importance plot.",
)
def predict(
    video: Path = typer.Argument(..., help="A video file."),
    checkpoint: str = MODEL,
    subtexts: Path = RUN_SUBTEXTS,
    top: int = typer.Option(5, help="How many classes to print."),
    plot: Path = typer.Option(None, help="Write a filmstrip with frame importances (PNG)."),
    device: str = setting_option("device", default="auto"),
    clip_model: str = RUN_CLIP_MODEL,
    clip_pretrained: str = RUN_CLIP_PRETRAINED,
) -> None:
    from .predict import check_plot_path, plot_prediction, predict_video

    bounded(top=top)
    if plot is not None:
        check_plot_path(plot)
    pred = predict_video(
        checkpoint,
        video,
        subtexts,
        device,
        top,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
    )
    table = Table(title=str(video))
    table.add_column("class")
    table.add_column("probability", justify="right")
    for name, prob in pred.top:
        table.add_row(name, f"{prob:.4f}")
    console.print(table)
    if plot is not None:
        console.print(f"plot: {plot_prediction(pred, plot)}")


@app.command(
    help=(
        "Write a run as a self-contained model folder that `eval` and `predict` load "
        "anywhere.\n\n"
        "The folder holds safetensors, the config, the class texts and a model card; "
        "publish it with `hf upload`."
    ),
)
def export(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    out: Path = typer.Option(..., help="The model folder to write (new or empty)."),
    checkpoint: str = choice_option("best", values=("best", "last"), help="best or last."),
    subtexts: Path = RUN_SUBTEXTS,
    clip_model: str = RUN_CLIP_MODEL,
    clip_pretrained: str = RUN_CLIP_PRETRAINED,
) -> None:
    from .run_models import export_run

    folder = export_run(
        run_dir,
        out,
        checkpoint,
        subtexts=subtexts,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
    )
    for path in sorted(folder.iterdir()):
        console.print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)", **_PLAIN)


def _print_subsets(rows: list[dict]) -> None:
    """`eval --zero-shot subsets`: one table row per subset file (and fold)."""
    if not _speaks():
        return
    table = Table(title="subsets")
    for column in ("file", "fold", "classes", "n", "top1", "top5"):
        if column != "fold" or any("fold" in r for r in rows):
            table.add_column(column, justify="left" if column == "file" else "right")
    for r in rows:
        cells = [
            r["file"],
            *([str(r["fold"])] if "fold" in r else []),
            str(r["classes"]),
            str(r["n"]),
            f"{r['top1']:.4f}",
            f"{r['top5']:.4f}",
        ]
        table.add_row(*cells)
    console.print(table)


def _speaks() -> bool:
    """Under torchrun, rank 0 speaks for all."""
    return int(os.environ.get("RANK", "0")) == 0


def _print_result(result: dict, as_json: bool) -> None:
    if not _speaks():
        return
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    table = Table(title="result")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def _print_run_folders(folders: list[Path], as_json: bool) -> None:
    """Where a run wrote and the command that evaluates it; on stderr under --json, whose
    stdout is the JSON alone."""
    if not _speaks():
        return
    for folder in folders:
        quoted = shlex.quote(str(folder))
        for line in (
            f"run folder: {folder}",
            f"evaluate: python -m trainer eval --checkpoint {quoted}",
        ):
            if as_json:
                print(line, file=sys.stderr)
            else:
                console.print(line, **_PLAIN)


# Commands that moved to the storyboard world's own CLI (`python -m storyworld`): an older
# script that calls them here is told where they went, whatever options it passes.
MOVED_TO_STORYWORLD = ("demo", "study", "pretrain-clip")


def _moved_to_storyworld(ctx: typer.Context) -> None:
    raise UserError(
        f"`{ctx.info_name}` moved to the storyboard world's CLI: run `python -m storyworld "
        f"{ctx.info_name}` with the same options, from a clone."
    )


for _name in MOVED_TO_STORYWORLD:
    app.command(
        _name,
        hidden=True,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(_moved_to_storyworld)


def main() -> None:
    from .distributed import shutdown

    try:
        run_cli(app)
    finally:  # under torchrun: leave the process group cleanly, whatever happened
        shutdown()


if __name__ == "__main__":
    main()
