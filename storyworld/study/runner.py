"""Running the study (`run_study`): every run of the design on the prepared world CLIPs,
trained on their feature caches and assessed on their last checkpoint. Resumable: a run
whose directory holds all its epochs is read back, a cut one resumes."""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from storyboard_common.subtexts import SubtextArtifact
from trainer.environment import ENVIRONMENT_FILE
from trainer.model.aggregation import ClassText
from trainer.report import read_metrics
from trainer.run_models import load_run
from trainer.settings import RunConfig
from trainer.subtexts import artifact_class_text
from trainer.training import train

from .. import WORLD_CLIP
from ..world.definition import WorldInfo
from ..world.write import write_world
from . import analysis
from .clips import CachedSplit, CalibrationFrames, ClipAssets, prepare
from .collect import collect, main_fields, select_runs, summarise_log
from .design import (
    BRANCHES,
    IMPORTANCE_MODES,
    RunSpec,
    StudyDesign,
    core_specs,
    fewshot_cells,
    fewshot_specs,
    figure_specs,
    next_episode_count,
    reference_specs,
)


def run_config(
    design: StudyDesign, world: WorldInfo, assets: ClipAssets, spec: RunSpec, out: Path
) -> RunConfig:
    """The same settings for every mode; only the spec's fields differ between runs."""
    return RunConfig(
        dataset="list",
        root=world.seen_root,
        subtexts=assets.subtexts(spec.group),
        clip_model=WORLD_CLIP,
        clip_pretrained=str(assets.checkpoint),
        frames=design.frames,
        epochs=spec.epochs or (design.finetune_epochs if spec.finetune else design.epochs),
        batch_size=design.batch_size,
        lr=design.lr,
        warmup_epochs=design.warmup_epochs,
        aggregation=spec.mode,
        shots=2 if spec.setting == "2shot" else None,
        seed=spec.seed,
        tau_coarse=spec.tau,
        tau_fine=spec.tau if spec.tau_fine is None else spec.tau_fine,
        temporal_layers=spec.temporal_layers,
        freeze_backbone=not spec.finetune,
        features=None if spec.finetune else assets.seen_cache,
        workers=design.workers,
        device="cpu",
        out=out,
        eval_every=5,
    )


def train_run(cfg: RunConfig) -> list[dict]:
    """Train a run unless its directory already holds all its epochs; resume a cut one."""
    log = read_metrics(cfg.out)
    if any(x.get("epoch") == cfg.epochs and "top1" in x for x in log):
        return log
    resume = (cfg.out / "checkpoints" / "last.pt").is_file()
    if not resume:
        shutil.rmtree(cfg.out, ignore_errors=True)
    train(cfg, resume=resume, show_progress=False)
    return read_metrics(cfg.out)


@torch.inference_mode()
def _forward(
    model: torch.nn.Module, text: ClassText, features: torch.Tensor
) -> dict[str, np.ndarray | None]:
    outs = [
        model.forward_features(features[i : i + 256], text) for i in range(0, len(features), 256)
    ]
    joined = {}
    for key in ("logits", "coarse", "fine"):
        parts = [o[key] for o in outs]
        joined[key] = None if parts[0] is None else torch.cat(parts).float().numpy()
    return joined


def assess_run(
    run_dir: Path,
    subtexts: Path,
    assets: ClipAssets,
    seen: CachedSplit,
    unseen: CachedSplit,
    unseen_artifact: SubtextArtifact,
    order_only_classes: list[int],
    calibration: CalibrationFrames | None = None,
) -> dict:
    """The last checkpoint on the cached test views: top-1 (seen), top-1 on the classes of
    order-only pairs, zero-shot top-1 (unseen), importance share on own-action frames, and
    (with `calibration` frames) each branch's mean largest frame weight after training.
    The run is loaded once (with its seen `subtexts`); the unseen classes' texts
    (`unseen_artifact`, read once per world CLIP) replace the seen ones for zero-shot."""
    loaded = load_run(run_dir, "list", subtexts, "cpu", "last")
    model = loaded.built.model
    # the unseen texts must come from the run's CLIP, in the width its model embeds in
    unseen_text = artifact_class_text(
        unseen_artifact,
        assets.unseen_subtexts,
        loaded.built.clip_id,
        int(loaded.built.text.global_emb.shape[-1]),
    )
    out = _forward(model, loaded.built.text, seen.features)
    correct = out["logits"].argmax(1) == seen.labels
    order_rows = np.isin(seen.labels, order_only_classes)
    result = {
        "top1": float(correct.mean()),
        "hits": int(correct.sum()),
        "n": int(correct.size),
        "order_only_top1": float(correct[order_rows].mean()),
    }
    shares = {
        branch: analysis.importance_share(
            analysis.own_class_weights(out[branch], seen.labels), seen.on_action
        )
        for branch in BRANCHES
        if out[branch] is not None
    }
    for branch, share in shares.items():
        result[f"importance_{branch}"] = float(share.mean())
    if len(shares) == len(BRANCHES):
        difference, above = analysis.keyframe_difference(shares["fine"], shares["coarse"])
        result["keyframe_fine_minus_coarse"] = difference
        result["keyframe_fine_above_coarse"] = above
    zero = _forward(model, unseen_text, unseen.features)
    result["zero_shot_top1"] = float((zero["logits"].argmax(1) == unseen.labels).mean())
    if calibration is not None:
        trained = _forward(model, loaded.built.text, calibration.features)
        for branch in BRANCHES:
            if trained[branch] is not None:
                own = analysis.own_class_weights(trained[branch], calibration.labels)
                result[f"largest_weight_{branch}"] = analysis.mean_largest_weight(own)
    return result


def run_provenance(run_dir: Path) -> dict | None:
    """The git state of the code that started the run (its first `environment.json` entry)."""
    try:
        return json.loads((run_dir / ENVIRONMENT_FILE).read_text())[0].get("git")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@contextmanager
def training_pool(jobs: int, threads: int) -> Iterator[Callable]:
    """A `map` that trains runs `jobs` at once, each in its own process with `threads`
    intra-op threads (the built-in `map` for one job); cut, it cancels what has not begun."""
    if jobs <= 1:
        yield map
        return
    pool = ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=torch.set_num_threads,
        initargs=(threads,),
    )
    try:
        yield pool.map
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_study(design: StudyDesign, work: Path, console: Console | None = None) -> dict:
    """Run (or resume) the whole study under `work`; -> the results (see `collect`).

    Phases, each over both CLIPs, so that a cut study has the most important runs: the
    CLIPs; the pre-registered grid (`core_specs`); the sequential 2-shot episodes; the
    earlier study's references."""
    threads = torch.get_num_threads()
    torch.set_num_threads(design.torch_threads)
    try:
        with training_pool(design.jobs, design.torch_threads) as train_all:
            return _run_study(design, work, console or Console(), train_all)
    finally:
        torch.set_num_threads(threads)


def _run_study(design: StudyDesign, work: Path, console: Console, train_all: Callable) -> dict:
    """`run_study`'s body. Long because its phases share one record of the runs done
    (`execute`, a closure), which the sequential 2-shot rule reads between phases."""
    started = time.perf_counter()

    def say(text: str) -> None:
        console.print(f"[{time.perf_counter() - started:6.0f}s] {text}")

    world = write_world(
        work / "world",
        seed=design.world_seed,
        videos_per_class_train=design.videos_per_class_train,
        videos_per_class_test=design.videos_per_class_test,
    )
    say(f"world: {world.videos} videos under {world.out_dir}")
    order_pairs = world.world.order_only_pairs
    names = [c.name for c in world.world.seen]
    order_classes = sorted({names.index(n) for pair in order_pairs for n in pair})
    steps_per_epoch = math.ceil(len(names) * design.videos_per_class_train / design.batch_size)
    prepared = {o: prepare(design, world, o, work, say) for o in design.objectives}
    runs: list[dict] = []
    done: set[tuple[str, str]] = set()

    def execute(specs: list[RunSpec], label: str) -> None:
        specs = [s for s in dict.fromkeys(specs) if (s.objective, s.name) not in done]
        configs = [
            run_config(
                design,
                world,
                prepared[spec.objective].assets,
                spec,
                work / "runs" / spec.objective.replace("+", "_") / spec.name,
            )
            for spec in specs
        ]
        for i, (spec, cfg, log) in enumerate(zip(specs, configs, train_all(train_run, configs)), 1):
            ready = prepared[spec.objective]
            run_dir = cfg.out
            record = {
                **asdict(spec),
                **summarise_log(log, steps_per_epoch),
                "part": label,
                "git": run_provenance(run_dir),
            }
            if not spec.finetune:
                record.update(
                    assess_run(
                        run_dir,
                        ready.assets.subtexts(spec.group),
                        ready.assets,
                        ready.seen,
                        ready.unseen,
                        ready.unseen_texts,
                        order_classes,
                        ready.calibration if spec.setting == "supervised" else None,
                    )
                )
            runs.append(record)
            done.add((spec.objective, spec.name))
            top1 = record.get("top1", record["logged_top1"])
            say(
                f"  {label} {i}/{len(specs)} {spec.objective} {spec.name}: top-1 {top1:.3f}, "
                f"loss {record['final_loss']:.3f} after {record['steps']} steps"
            )

    execute([s for o, p in prepared.items() for s in core_specs(design, o, p.pair)], "grid")
    if design.fewshot_episodes is not None:
        for objective, ready in prepared.items():
            cells = fewshot_cells(design, ready.pair)
            episodes = design.fewshot_episodes
            while True:
                widths = [
                    analysis.spread(
                        r["top1"]
                        for r in select_runs(
                            runs,
                            objective=objective,
                            setting="2shot",
                            mode=m,
                            **main_fields(fields),
                        )
                    )["ci95"]
                    for fields, _ in cells
                    for m in IMPORTANCE_MODES
                ]
                more = next_episode_count(
                    episodes,
                    widths,
                    design.target_half_width,
                    design.episode_step,
                    design.episode_cap,
                )
                if more == episodes:
                    break
                extra = range(episodes, more)
                execute([s for c in cells for s in fewshot_specs(objective, c, extra)], "episodes")
                episodes = more
    execute([s for o in prepared for s in reference_specs(design, o)], "references")
    for last in (False, True):  # the last CLIP's random TPP groups after everything else
        execute(
            [s for o, p in prepared.items() for s in figure_specs(design, o, p.pair, last)],
            "figures" if not last else "figures, last CLIP",
        )
    clips = {o: p.figures for o, p in prepared.items()}
    return collect(design, world, clips, runs, time.perf_counter() - started)
