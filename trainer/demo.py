"""`make demo`: the whole method on the built-in storyboard world, on a CPU, with no
dataset and no pretrained weights.

Steps: write the world's videos, pre-train its tiny CLIP, import the shipped candidate
sub-text sets and keep the best by TPP, train every aggregation mode 2-shot and supervised
on the seen classes, evaluate zero-shot on the unseen classes, predict one video with its
plot, and print a table of top-1 accuracies.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from subtext_gen.classes import load_classes
from subtext_gen.clip_text import load_clip
from subtext_gen.generate import generate
from subtext_gen.llm.files import FileBackend
from subtext_gen.score import class_reports, score

from .config import AGGREGATIONS, RunConfig
from .engine import evaluate_checkpoint, train
from .predict import plot_prediction, predict_video
from .pretrain import frame_accuracies, pretrain_clip
from .world import CANDIDATES_PATH, write_world

WORLD_CLIP = "data/clip/StoryboardWorld-CLIP.json"
SET_KINDS = ("faithful", "unrelated", "near-duplicate")  # the order of the shipped sets


@dataclass(frozen=True)
class DemoSettings:
    out: Path = Path("artifacts/demo")
    seed: int = 0
    frames: int = 8
    epochs: int = 8
    batch_size: int = 16
    lr: float = 1e-3
    workers: int = 2


def _subtexts(
    dataset_root: Path, out: Path, clip_ckpt: Path, console: Console
) -> tuple[Path, dict[str, str]]:
    """Import the shipped sets of this dataset's classes; keep the best set per class by TPP.
    Returns the sub-text artifact and, per class, the kind of set TPP kept."""
    classes = load_classes(classes_file=dataset_root / "classes.csv")
    shipped = json.loads(Path(CANDIDATES_PATH).read_text())
    subset = out / "candidates.json"
    out.mkdir(parents=True, exist_ok=True)
    subset.write_text(json.dumps({c: shipped[c] for c in classes.names}, indent=1))
    generate(classes, FileBackend(subset), out, n_subtexts=4, show_progress=False)
    scored = score(out, lambda: load_clip(WORLD_CLIP, str(clip_ckpt), "cpu"))
    kept = {}
    for report in class_reports(out, scored.out_dir):
        name = report.class_name
        kept[name] = SET_KINDS[shipped[name].index(list(report.sub_texts))]
        console.print(f"  {name}: TPP {report.tpp:.3f} -> {kept[name]}")
    counts = Counter(kept.values())
    console.print("  TPP kept: " + ", ".join(f"{kind} {counts[kind]}" for kind in SET_KINDS)
                  + f" (of {len(classes)} classes)")  # fmt: skip
    return scored.out_dir / "subtexts.parquet", kept


def last_top1(run_dir: Path) -> float:
    """The top-1 of a run's last evaluation: the demo picks no epoch by its test score."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"top1"' in line][-1]["top1"]


def run_demo(settings: DemoSettings = DemoSettings()) -> dict:
    console = Console()
    out = settings.out
    console.rule("1. the storyboard world")
    world = write_world(out / "world", seed=settings.seed)
    console.print(f"seen classes: {world.seen_root}, unseen classes: {world.unseen_root}")
    console.rule("2. a tiny CLIP for it")
    clip_ckpt = pretrain_clip(world.seen_root, world.out_dir, out / "world-clip.pt",
                              seed=settings.seed)  # fmt: skip
    # How well frames find their atomic action's caption with the features each part of the
    # method uses: pooled embeddings (CLIP's objective) and word tokens (Eq. 8 and 10).
    frame_accuracy = frame_accuracies(clip_ckpt, world.seen_root, world.out_dir, WORLD_CLIP,
                                      "test.txt", device="cpu")  # fmt: skip
    chance = 1 / len(world.world.actions)
    matched = ", ".join(f"{by.replace('_', ' ')} {acc:.2f}" for by, acc in frame_accuracy.items())
    console.print(f"test frames matched to their action's caption: {matched} "
                  f"(chance {chance:.2f})")  # fmt: skip
    console.rule("3. sub-texts: shipped candidate sets, TPP selection")
    seen_sub, seen_kept = _subtexts(world.seen_root, out / "subtexts-seen", clip_ckpt, console)
    unseen_sub, unseen_kept = _subtexts(world.unseen_root, out / "subtexts-unseen", clip_ckpt,
                                        console)  # fmt: skip

    console.rule("4. training and evaluation")
    results: dict[str, dict] = {}
    runs = out / "runs"
    for mode in AGGREGATIONS:
        for shots in (2, None):
            name = f"{'2shot' if shots else 'supervised'}-{mode.replace('+', '_')}"
            run_dir = runs / name
            shutil.rmtree(run_dir, ignore_errors=True)  # the demo always trains afresh
            console.print(f"[bold]{name}[/]")
            cfg = RunConfig(dataset="list", root=world.seen_root, subtexts=seen_sub,
                            clip_model=WORLD_CLIP, clip_pretrained=str(clip_ckpt),
                            frames=settings.frames, epochs=settings.epochs,
                            batch_size=settings.batch_size, lr=settings.lr, warmup_epochs=1,
                            aggregation=mode, shots=shots, seed=settings.seed,
                            workers=settings.workers, device="cpu", out=run_dir,
                            backbone_lr_scale=0.1)  # fmt: skip
            train(cfg, show_progress=True)
            results.setdefault(mode, {})["2shot" if shots else "supervised"] = last_top1(run_dir)
            if shots is None:
                zero = evaluate_checkpoint(
                    run_dir,
                    "list",
                    world.unseen_root,
                    unseen_sub,
                    zero_shot="full",
                    device="cpu",
                    workers=settings.workers,
                    show_progress=False,
                    checkpoint="last",
                )
                results[mode]["zero-shot"] = zero["top1"]

    console.rule("5. one prediction")
    test_video = sorted((world.seen_root / "videos").rglob("*_test_*.mp4"))[-1]
    pred = predict_video(runs / "supervised-coarse_fine", test_video, device="cpu")
    plot = plot_prediction(pred, out / "prediction.png")
    console.print(f"{test_video.name}: " + ", ".join(f"{n} {p:.2f}" for n, p in pred.top[:3]))

    table = Table(title=f"top-1 after the last epoch on the storyboard world "
                        f"(seed {settings.seed})")  # fmt: skip
    for col in ("aggregation", "2-shot (seen)", "supervised (seen)", "zero-shot (unseen)"):
        table.add_column(col, justify="right")
    for mode in AGGREGATIONS:
        r = results[mode]
        table.add_row(mode, f"{r['2shot']:.3f}", f"{r['supervised']:.3f}", f"{r['zero-shot']:.3f}")
    console.print(table)
    summary = {"seed": settings.seed, "top1": results, "tpp_kept": {**seen_kept, **unseen_kept},
               "world_clip_frame_accuracy": frame_accuracy}  # fmt: skip
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"outputs: {out}/results.json, {plot}, {runs}/*/report.md")
    return results
