"""`make demo`: a one-seed digest of the study (`storyworld/study/`) on the
storyboard world, on a CPU, with no dataset and no pretrained weights.

Steps: write the world's videos, pre-train its CLIP with the token-level objective, keep
the best shipped sub-text set per class by TPP, cache the frozen frame features, train
every aggregation mode 2-shot and supervised on the seen classes (seed 0), evaluate
zero-shot on the unseen classes, predict one video with its plot, and print a table of
top-1 accuracies with 95% intervals over the test videos.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from storyboard_common.files import atomic_write_json
from trainer.predict import plot_prediction, predict_video

from .study import analysis
from .study.design import DEMO_DESIGN, RunSpec
from .study.runner import run_study


@dataclass(frozen=True)
class DemoSettings:
    out: Path = Path("artifacts/demo")
    seed: int = 0
    objective: str = "pooled+tokens"


def run_demo(settings: DemoSettings = DemoSettings()) -> dict:
    console = Console()
    design = replace(
        DEMO_DESIGN,
        seeds=(settings.seed,),
        world_seed=settings.seed,
        objectives=(settings.objective,),
    )
    out = settings.out
    results = run_study(design, out, console)
    atomic_write_json(out / "results.json", results, indent=1)

    objective = settings.objective
    spec = RunSpec(objective, "supervised", "coarse+fine", settings.seed, **design.default_fields())
    run_dir = out / "runs" / objective.replace("+", "_") / spec.name
    test_video = sorted((out / "world" / "seen" / "videos").rglob("*_test_*.mp4"))[-1]
    prediction = predict_video(run_dir, test_video, device="cpu")
    plot = plot_prediction(prediction, out / "prediction.png")
    console.print(f"{test_video.name}: " + ", ".join(f"{n} {p:.2f}" for n, p in prediction.top[:3]))

    seen = len(results["classes"]["seen"]) * results["test_videos_per_class"]
    unseen = len(results["classes"]["unseen"]) * results["test_videos_per_class"]
    table = Table(
        title=f"top-1 after the last epoch on the storyboard world (seed "
        f"{settings.seed}; tau_coarse {spec.tau:g}, tau_fine {spec.tau_fine or spec.tau:g}; "
        "[95% interval over the test videos])"
    )
    for col in ("aggregation", "2-shot (seen)", "supervised (seen)", "zero-shot (unseen)"):
        table.add_column(col, justify="right")
    for mode, cells in results["top1"][objective].items():
        row = []
        for column, trials in (("2shot", seen), ("supervised", seen), ("zero-shot", unseen)):
            mean = cells[column]["mean"]
            low, high = analysis.wilson_interval(round(mean * trials), trials)
            row.append(f"{mean:.3f} [{low:.2f}, {high:.2f}]")
        table.add_row(mode, *row)
    console.print(table)
    probe = results["linear_probe"][objective]["test"]
    console.print(
        f"references: linear probe on mean-pooled frames {probe:.3f}; frozen "
        f"zero-shot (class texts) seen "
        f"{results['zero_shot_class_texts'][objective]['seen']:.3f}; chance "
        f"{results['chance']['seen']:.3f} seen, {results['chance']['unseen']:.3f} "
        "unseen"
    )
    console.print(f"outputs: {out}/results.json, {plot}; the full study: `make study`")
    return results
