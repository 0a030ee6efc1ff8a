"""`python -m trainer study`: every aggregation mode on the storyboard world, over seeds.

The design is fixed in `StudyDesign` (data, CLIPs, settings) before any result is seen;
every mode gets the same settings. Steps, each resumable (a rerun skips what is done):

1. write the storyboard world (`trainer/storyworld/world.py`);
2. per world-CLIP objective (`pooled`, `pooled+tokens`, see `trainer/storyworld/pretrain.py`):
   pre-train the CLIP, measure how often test frames find their action's caption by pooled
   embeddings and by word tokens, keep sub-text sets by TPP (`complement`, and which kind of
   set `identity` would keep), cache the frozen frame features of the seen and unseen
   classes;
3. references on the cached features: the frozen CLIP's zero-shot (mean-pooled frames
   against the class texts) and a linear probe on mean-pooled frames (what bag-of-frames
   can reach);
4. per objective, mode, setting (2-shot, supervised) and seed: train the head on the cache
   (`trainer run --freeze-backbone --features`), then assess the last checkpoint: seen
   top-1, top-1 on the classes of order-only pairs, zero-shot top-1 on the unseen classes,
   and the share of the frame importance that lands on frames of the video's own actions;
5. a temperature sweep (tau_coarse = tau_fine) and a temporal-transformer reference
   (supervised, every seed), and one fine-tuned-backbone supervised run per mode (seed 0);
6. `results.json`, plots with error bars and `README.md` in the docs folder.

Nothing is picked by test score: every number is the last checkpoint's.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from storyboard_common.classes import load_classes
from storyboard_common.clip import load_clip
from storyboard_common.errors import UserError
from storyboard_common.files import atomic_savefig, atomic_write_json, atomic_write_text
from storyboard_common.subtexts import SubtextArtifact, read_subtexts
from subtext_gen.generate import generate
from subtext_gen.llm.files import FileBackend
from subtext_gen.score import class_reports, score

from ..cache.build import cache_features
from ..cache.store import TEST, TRAIN, read_split
from ..config import RunConfig
from ..loop import train
from ..model.aggregation import AGGREGATIONS, ClassText
from ..model.video_clip import clip_log_logit_scale
from ..report import read_metrics
from ..runs import load_run
from ..subtexts import check_artifact_matches_clip
from . import WORLD_CLIP, analysis
from .pretrain import OBJECTIVES, frame_accuracies, log_path, pretrain_clip
from .world import CANDIDATES_PATH, WorldInfo, write_world

SET_KINDS = ("faithful", "unrelated", "near-duplicate")  # the order of the shipped sets
SETTINGS = ("2shot", "supervised")
IMPORTANCE_MODES = tuple(m for m in AGGREGATIONS if m != "mean")  # modes that weight frames
TPP_SCALINGS = ("complement", "identity")


@dataclass(frozen=True)
class StudyDesign:
    """Everything a study's numbers depend on; fixed before results are seen."""

    seeds: tuple[int, ...] = (0, 1, 2)
    world_seed: int = 0
    videos_per_class_train: int = 40
    videos_per_class_test: int = 25
    objectives: tuple[str, ...] = OBJECTIVES
    clip_epochs: int = 10
    clip_frame_stride: int = 3  # every 3rd frame of each training video pre-trains the CLIP
    frames: int = 8
    views: int = 10  # cached training views per video (runs cycle them)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    warmup_epochs: float = 1.0
    taus: tuple[float, ...] = (0.01, 0.1, 1.0)  # 0.01 (BIKE's) is every main run's
    temporal_layers: int = 2
    temporal_modes: tuple[str, ...] = ("mean", "coarse+fine")
    finetune_objective: str | None = "pooled+tokens"
    finetune_epochs: int = 6
    workers: int = 2
    # Added after the first results were seen (docs/study/README.md lists why): the main
    # supervised grid again with this many epochs, to tell a short budget from a ceiling.
    posthoc_epochs: int | None = 90

    @property
    def default_tau(self) -> float:
        return self.taus[0]


DEMO_DESIGN = StudyDesign(
    seeds=(0,), taus=(0.01,), temporal_modes=(), finetune_objective=None, posthoc_epochs=None
)


# ---------------------------------------------------------------- one run


@dataclass(frozen=True)
class RunSpec:
    objective: str
    setting: str
    mode: str
    seed: int
    tau: float
    temporal_layers: int = 0
    finetune: bool = False
    epochs: int | None = None  # None: the design's

    @property
    def name(self) -> str:
        parts = [
            self.setting,
            self.mode.replace("+", "_"),
            f"tau{self.tau:g}",
            f"T{self.temporal_layers}",
            f"seed{self.seed}",
        ]
        if self.epochs is not None:
            parts.append(f"E{self.epochs}")
        return ("finetune-" if self.finetune else "") + "-".join(parts)


@dataclass
class ClipAssets:
    """What one world CLIP brings to the runs: checkpoint, sub-texts, feature caches."""

    objective: str
    checkpoint: Path
    seen_subtexts: Path
    unseen_subtexts: Path
    seen_cache: Path
    unseen_cache: Path


def run_config(
    design: StudyDesign, world: WorldInfo, assets: ClipAssets, spec: RunSpec, out: Path
) -> RunConfig:
    """The same settings for every mode; only the spec's fields differ between runs."""
    return RunConfig(
        dataset="list",
        root=world.seen_root,
        subtexts=assets.seen_subtexts,
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
        tau_fine=spec.tau,
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


@dataclass
class CachedSplit:
    """A cached split's first view, with what each sampled frame shows."""

    features: torch.Tensor  # [M, T, D]
    labels: np.ndarray  # [M]
    on_action: np.ndarray  # bool [M, T]: the frame shows one of its class's actions


def load_cached_split(cache: Path, split: str, root: Path) -> CachedSplit:
    table = read_split(cache, split, view=0)
    features = torch.from_numpy(np.ascontiguousarray(table.features, dtype=np.float32))
    labels = np.asarray([row[0] for row in table.labels])
    on_action = []
    for video_id, frames in zip(table.video_ids, table.frame_indices):
        truth = json.loads((root / f"{video_id}.json").read_text())
        own = set(truth["actions"])
        on_action.append([truth["frames"][i] in own for i in frames])
    return CachedSplit(features, labels, np.asarray(on_action, dtype=bool))


@torch.inference_mode()
def _forward(
    model: torch.nn.Module, text: ClassText, split: CachedSplit
) -> dict[str, np.ndarray | None]:
    outs = [
        model.forward_features(split.features[i : i + 256], text)
        for i in range(0, len(split.features), 256)
    ]
    joined = {}
    for key in ("logits", "coarse", "fine"):
        parts = [o[key] for o in outs]
        joined[key] = None if parts[0] is None else torch.cat(parts).float().numpy()
    return joined


def assess_run(
    run_dir: Path,
    assets: ClipAssets,
    seen: CachedSplit,
    unseen: CachedSplit,
    unseen_artifact: SubtextArtifact,
    order_only_classes: list[int],
) -> dict:
    """The last checkpoint on the cached test views: top-1 (seen), top-1 on the classes of
    order-only pairs, zero-shot top-1 (unseen), importance share on own-action frames.
    The run is loaded once; the unseen classes' texts (`unseen_artifact`, read once per
    world CLIP) replace the seen ones for zero-shot."""
    loaded = load_run(run_dir, "list", assets.seen_subtexts, "cpu", "last")
    model = loaded.built.model
    check_artifact_matches_clip(unseen_artifact.meta, *loaded.built.clip_id, assets.unseen_subtexts)
    out = _forward(model, loaded.built.text, seen)
    correct = out["logits"].argmax(1) == seen.labels
    order_rows = np.isin(seen.labels, order_only_classes)
    result = {
        "top1": float(correct.mean()),
        "hits": int(correct.sum()),
        "n": int(correct.size),
        "order_only_top1": float(correct[order_rows].mean()),
    }
    rows = np.arange(len(seen.labels))
    for branch in ("coarse", "fine"):
        if out[branch] is not None:
            own = out[branch][rows, seen.labels]  # [M, T]: weights of the video's own class
            result[f"importance_{branch}"] = float(
                analysis.importance_share(own, seen.on_action).mean()
            )
    zero = _forward(model, ClassText.from_artifact(unseen_artifact), unseen)
    result["zero_shot_top1"] = float((zero["logits"].argmax(1) == unseen.labels).mean())
    return result


def summarise_log(log: list[dict], steps_per_epoch: int) -> dict:
    """Steps, the last epoch's training loss, the relative change of the loss over the last
    fifth of training (a plateau is near 0), and the trainer's own last top-1."""
    losses = [x["train_loss"] for x in log if "train_loss" in x]
    tail = max(1, len(losses) // 5)
    before = losses[-tail - 1] if len(losses) > tail else losses[0]
    evals = [x for x in log if "top1" in x]
    return {
        "steps": len(losses) * steps_per_epoch,
        "final_loss": losses[-1],
        "loss_change_last_fifth": (losses[-1] - before) / abs(before),
        "engine_top1": evals[-1]["top1"],
        "losses": losses,
    }


# ---------------------------------------------------------------- per CLIP


def _subtexts(
    dataset_root: Path, out: Path, checkpoint: Path, scaling: str
) -> tuple[Path, dict[str, str]]:
    """The shipped candidate sets of this dataset's classes, kept by TPP with alpha = beta =
    `scaling`. -> (subtexts.parquet, {class: the kind of set kept})."""
    classes = load_classes(classes_file=dataset_root / "classes.csv")
    shipped = json.loads(Path(CANDIDATES_PATH).read_text())
    subset = out / "candidates.json"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(subset, json.dumps({c: shipped[c] for c in classes.names}, indent=1))
    generate(classes, FileBackend(subset), out, n_subtexts=4, show_progress=False)
    scored = score(
        out, lambda: load_clip(WORLD_CLIP, str(checkpoint), "cpu"), alpha=scaling, beta=scaling
    )
    kept = {
        r.class_name: SET_KINDS[shipped[r.class_name].index(list(r.sub_texts))]
        for r in class_reports(out, scored.out_dir)
    }
    return scored.out_dir / "subtexts.parquet", kept


def _cache(root: Path, out: Path, checkpoint: Path, design: StudyDesign, views: int) -> Path:
    cfg = RunConfig(
        dataset="list",
        root=root,
        clip_model=WORLD_CLIP,
        clip_pretrained=str(checkpoint),
        frames=design.frames,
        seed=0,
        batch_size=64,
        workers=design.workers,
        device="cpu",
    )
    if not (out / "index.parquet").is_file():
        cache_features(cfg, out, views, "float32", show_progress=False)
    return out


def prepare_clip(
    design: StudyDesign, world: WorldInfo, objective: str, work: Path, say: Callable[[str], None]
) -> tuple[ClipAssets, dict]:
    """Pre-train one world CLIP and make its sub-texts and caches; -> assets and the CLIP's
    own figures (frame-caption accuracy, pre-training, TPP kinds kept)."""
    base = work / objective.replace("+", "_")
    checkpoint = pretrain_clip(
        world.seen_root,
        world.out_dir,
        base / "world-clip.pt",
        WORLD_CLIP,
        epochs=design.clip_epochs,
        seed=world.settings["seed"],
        device="cpu",
        show_progress=False,
        frame_stride=design.clip_frame_stride,
        objective=objective,
    )
    record = json.loads(log_path(checkpoint).read_text())
    accuracy = frame_accuracies(
        checkpoint, world.seen_root, world.out_dir, WORLD_CLIP, "test.txt", device="cpu"
    )
    say(
        f"  {objective}: CLIP: {record['steps']} steps, final loss "
        f"{record['epoch_losses'][-1]:.3f}; test frames find their caption: pooled "
        f"{accuracy['pooled']:.3f}, word tokens {accuracy['word_tokens']:.3f}"
    )
    kept: dict[str, dict[str, str]] = {}
    paths = {}
    for scaling in TPP_SCALINGS:
        for group, root in (("seen", world.seen_root), ("unseen", world.unseen_root)):
            path, kinds = _subtexts(root, base / f"subtexts-{scaling}-{group}", checkpoint, scaling)
            kept.setdefault(scaling, {}).update(kinds)
            paths[(scaling, group)] = path
        counts = Counter(kept[scaling].values())
        say(
            f"  {objective}: TPP {scaling} keeps "
            + ", ".join(f"{kind} {counts[kind]}" for kind in SET_KINDS)
        )
    assets = ClipAssets(
        objective,
        checkpoint,
        paths[("complement", "seen")],
        paths[("complement", "unseen")],
        _cache(world.seen_root, base / "cache-seen", checkpoint, design, design.views),
        _cache(world.unseen_root, base / "cache-unseen", checkpoint, design, 1),
    )
    figures = {
        "frame_caption_accuracy": accuracy,
        "tpp_kept": kept,
        "pretrain": {
            "steps": record["steps"],
            "final_loss": record["epoch_losses"][-1],
            "train_seconds": record["train_seconds"],
        },
    }
    return assets, figures


def references(
    assets: ClipAssets, world: WorldInfo, seen: CachedSplit, unseen: CachedSplit
) -> dict:
    """Zero-shot of the frozen CLIP with the class texts, and the linear probe."""
    train = read_split(assets.seen_cache, TRAIN)
    train_x = np.asarray(train.features, dtype=np.float64).mean(axis=1)
    train_y = np.asarray([row[0] for row in train.labels])
    test_x = seen.features.mean(1).numpy()
    probe = analysis.linear_probe(train_x, train_y, test_x, seen.labels)
    class_emb = read_subtexts(assets.seen_subtexts).global_emb
    log_scale = clip_log_logit_scale(load_clip(WORLD_CLIP, str(assets.checkpoint), "cpu").model)
    anchored = analysis.text_anchored_probe(
        train_x, train_y, test_x, seen.labels, class_emb, log_scale
    )
    unit = class_emb / np.linalg.norm(class_emb, axis=1, keepdims=True)
    cosines = unit @ unit.T
    np.fill_diagonal(cosines, -np.inf)
    zero = {}
    for name, split, subtexts in (
        ("seen", seen, assets.seen_subtexts),
        ("unseen", unseen, assets.unseen_subtexts),
    ):
        logits = analysis.zero_shot_logits(
            split.features.numpy(), read_subtexts(subtexts).global_emb
        )
        zero[name] = float((logits.argmax(1) == split.labels).mean())
    return {
        "linear_probe": probe,
        "text_anchored_probe": anchored,
        "class_text_nearest_cosine": [float(c) for c in cosines.max(axis=1)],
        "zero_shot_class_texts": zero,
    }


# ---------------------------------------------------------------- the study


def run_specs(design: StudyDesign, objective: str) -> Iterator[RunSpec]:
    """Every run of one CLIP: main grid, temperature sweep, temporal reference, fine-tune."""
    tau = design.default_tau
    for mode in AGGREGATIONS:
        for setting in SETTINGS:
            for seed in design.seeds:
                yield RunSpec(objective, setting, mode, seed, tau)
    for other in design.taus[1:]:
        for mode in IMPORTANCE_MODES:
            for seed in design.seeds:
                yield RunSpec(objective, "supervised", mode, seed, other)
    for mode in design.temporal_modes:
        for seed in design.seeds:
            yield RunSpec(objective, "supervised", mode, seed, tau, design.temporal_layers)
    if design.finetune_objective == objective:
        for mode in AGGREGATIONS:
            yield RunSpec(objective, "supervised", mode, design.seeds[0], tau, finetune=True)
    if design.posthoc_epochs is not None:
        for mode in AGGREGATIONS:
            for seed in design.seeds:
                yield RunSpec(
                    objective, "supervised", mode, seed, tau, epochs=design.posthoc_epochs
                )


def run_study(design: StudyDesign, work: Path, console: Console | None = None) -> dict:
    """Run (or resume) the whole study under `work`; -> the results (see `collect`)."""
    console = console or Console()
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
    clips, runs = {}, []
    for objective in design.objectives:
        assets, figures = prepare_clip(design, world, objective, work, say)
        seen = load_cached_split(assets.seen_cache, TEST, world.seen_root)
        unseen = load_cached_split(assets.unseen_cache, TEST, world.unseen_root)
        unseen_texts = read_subtexts(assets.unseen_subtexts)
        figures.update(references(assets, world, seen, unseen))
        figures["uniform_importance"] = float(seen.on_action.mean())
        say(
            f"  {objective}: linear probe {figures['linear_probe']['test']:.3f} (train "
            f"{figures['linear_probe']['train']:.3f}); frozen zero-shot seen "
            f"{figures['zero_shot_class_texts']['seen']:.3f}, unseen "
            f"{figures['zero_shot_class_texts']['unseen']:.3f}"
        )
        clips[objective] = figures
        specs = list(run_specs(design, objective))
        for i, spec in enumerate(specs, 1):
            run_dir = work / "runs" / objective.replace("+", "_") / spec.name
            cfg = run_config(design, world, assets, spec, run_dir)
            log = train_run(cfg)
            record = {**asdict(spec), **summarise_log(log, steps_per_epoch)}
            if not spec.finetune:
                record.update(
                    assess_run(run_dir, assets, seen, unseen, unseen_texts, order_classes)
                )
            runs.append(record)
            top1 = record.get("top1", record["engine_top1"])
            say(
                f"  {objective}: {i}/{len(specs)} {spec.name}: top-1 {top1:.3f}, loss "
                f"{record['final_loss']:.3f} after {record['steps']} steps"
            )
    return collect(design, world, clips, runs, time.perf_counter() - started)


def _select(runs: list[dict], **fields) -> list[dict]:
    return [r for r in runs if all(r[k] == v for k, v in fields.items())]


def collect(
    design: StudyDesign, world: WorldInfo, clips: dict, runs: list[dict], seconds: float
) -> dict:
    """The study's results: per world CLIP, every figure with its spread over seeds."""
    tau = design.default_tau
    main = {"tau": tau, "temporal_layers": 0, "finetune": False, "epochs": None}
    top1, order_only, importance, tau_sweep, temporal, finetune, plateau, posthoc = (
        {} for _ in range(8)
    )
    for objective in design.objectives:

        def spread(key: str, objective: str = objective, **fields) -> dict:
            return analysis.spread(r[key] for r in _select(runs, objective=objective, **fields))

        top1[objective] = {
            mode: {
                **{s: spread("top1", mode=mode, setting=s, **main) for s in SETTINGS},
                "zero-shot": spread("zero_shot_top1", mode=mode, setting="supervised", **main),
            }
            for mode in AGGREGATIONS
        }
        order_only[objective] = {
            mode: spread("order_only_top1", mode=mode, setting="supervised", **main)
            for mode in AGGREGATIONS
        }
        shares = {"uniform": clips[objective]["uniform_importance"]}
        for mode in IMPORTANCE_MODES:
            chosen = _select(runs, objective=objective, mode=mode, setting="supervised", **main)
            for branch in ("coarse", "fine"):
                key = f"importance_{branch}"
                if chosen and key in chosen[0]:
                    label = mode if mode in ("coarse", "fine") else f"{mode} ({branch})"
                    shares[label] = analysis.spread(r[key] for r in chosen)["mean"]
        importance[objective] = shares
        tau_sweep[objective] = {
            f"{t:g}": {
                mode: spread("top1", mode=mode, setting="supervised", **{**main, "tau": t})
                for mode in IMPORTANCE_MODES
            }
            for t in design.taus
        }
        with_temporal = {**main, "temporal_layers": design.temporal_layers}
        temporal[objective] = {
            mode: {
                key: spread(key, mode=mode, setting="supervised", **with_temporal)
                for key in ("top1", "order_only_top1")
            }
            for mode in design.temporal_modes
        }
        if design.posthoc_epochs is not None:
            longer = {**main, "epochs": design.posthoc_epochs}
            posthoc[objective] = {
                mode: {
                    "top1": spread("top1", mode=mode, setting="supervised", **longer),
                    "final_loss": spread("final_loss", mode=mode, setting="supervised", **longer),
                }
                for mode in AGGREGATIONS
            }
        finetune[objective] = {
            r["mode"]: r["engine_top1"] for r in _select(runs, objective=objective, finetune=True)
        }
        plateau[objective] = {
            f"{r['setting']}-{r['mode']}-seed{r['seed']}": {
                "steps": r["steps"],
                "final_loss": r["final_loss"],
                "loss_change_last_fifth": r["loss_change_last_fifth"],
            }
            for r in _select(runs, objective=objective, **main)
        }
    seen_names = [c.name for c in world.world.seen]
    return {
        "design": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(design).items()},
        "seeds": list(design.seeds),
        "test_videos_per_class": design.videos_per_class_test,
        "train_videos_per_class": design.videos_per_class_train,
        "classes": {
            "seen": seen_names,
            "unseen": [c.name for c in world.world.unseen],
            "order_only_pairs": [list(p) for p in world.world.order_only_pairs],
        },
        "chance": {
            "seen": 1 / len(seen_names),
            "unseen": 1 / len(world.world.unseen),
            "frame_caption": 1 / len(world.world.actions),
        },
        "frame_caption_accuracy": {o: clips[o]["frame_caption_accuracy"] for o in clips},
        "pretrain": {o: clips[o]["pretrain"] for o in clips},
        "linear_probe": {o: clips[o]["linear_probe"] for o in clips},
        "text_anchored_probe": {o: clips[o]["text_anchored_probe"] for o in clips},
        "class_text_nearest_cosine": {o: clips[o]["class_text_nearest_cosine"] for o in clips},
        "zero_shot_class_texts": {o: clips[o]["zero_shot_class_texts"] for o in clips},
        "tpp_kept": {o: clips[o]["tpp_kept"] for o in clips},
        "top1": top1,
        "order_only_top1": order_only,
        "importance_on_action_frames": importance,
        "tau_sweep": tau_sweep,
        "temporal": temporal,
        "finetune_top1": finetune,
        "training": plateau,
        "posthoc_longer_training": posthoc,
        "seconds": round(seconds, 1),
        "runs": [{k: v for k, v in r.items() if k != "losses"} for r in runs],
    }


# ---------------------------------------------------------------- the report


def _cell(s: dict) -> str:
    """mean ± ci95 (or the mean alone, for one seed)."""
    if s["ci95"] is None:
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} ± {s['ci95']:.3f}"


def _wilson_cell(s: dict, trials: int) -> str:
    """One seed: the mean with its 95% Wilson interval over the test videos."""
    low, high = analysis.wilson_interval(round(s["mean"] * trials), trials)
    return f"{s['mean']:.3f} [{low:.2f}, {high:.2f}]"


def top1_table(results: dict, objective: str) -> list[str]:
    """Markdown rows: mode | 2-shot | supervised | zero-shot, with intervals."""
    seen = len(results["classes"]["seen"]) * results["test_videos_per_class"]
    unseen = len(results["classes"]["unseen"]) * results["test_videos_per_class"]
    one_seed = len(results["seeds"]) == 1
    lines = [
        "| aggregation | 2-shot (seen) | supervised (seen) | zero-shot (unseen) |",
        "|---|---|---|---|",
    ]
    for mode, cells in results["top1"][objective].items():
        if one_seed:
            row = [
                _wilson_cell(cells["2shot"], seen),
                _wilson_cell(cells["supervised"], seen),
                _wilson_cell(cells["zero-shot"], unseen),
            ]
        else:
            row = [_cell(cells[k]) for k in ("2shot", "supervised", "zero-shot")]
        lines.append(f"| {mode} | " + " | ".join(row) + " |")
    return lines


def plot_results(results: dict, out: Path) -> list[Path]:
    """Bar charts of top-1 per mode (error bars: 95% intervals over seeds) and the
    temperature sweep; -> the PNG files written."""
    from ..report import _pyplot

    plt = _pyplot()
    objectives = list(results["top1"])
    written = []
    fig, axes = plt.subplots(
        1, len(objectives), figsize=(5.5 * len(objectives), 3.6), squeeze=False
    )
    for ax, objective in zip(axes[0], objectives):
        table = results["top1"][objective]
        modes = list(table)
        for k, column in enumerate(("2shot", "supervised", "zero-shot")):
            means = [table[m][column]["mean"] for m in modes]
            errors = [table[m][column]["ci95"] or 0.0 for m in modes]
            ax.bar(
                np.arange(len(modes)) + (k - 1) * 0.27,
                means,
                0.27,
                yerr=errors,
                capsize=3,
                label=column,
            )
        ax.axhline(
            results["linear_probe"][objective]["test"],
            color="k",
            ls="--",
            lw=1,
            label="linear probe",
        )
        ax.set_xticks(np.arange(len(modes)), modes, fontsize=8)
        ax.set(ylim=(0, 1), ylabel="top-1", title=f"world CLIP: {objective}")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    written.append(out / "top1.png")
    atomic_savefig(fig, written[-1], dpi=110)
    plt.close(fig)

    if len(results["design"]["taus"]) > 1:
        fig, axes = plt.subplots(
            1, len(objectives), figsize=(5.5 * len(objectives), 3.4), squeeze=False
        )
        for ax, objective in zip(axes[0], objectives):
            sweep = results["tau_sweep"][objective]
            taus = [float(t) for t in sweep]
            for mode in IMPORTANCE_MODES:
                means = [sweep[t][mode]["mean"] for t in sweep]
                errors = [sweep[t][mode]["ci95"] or 0.0 for t in sweep]
                ax.errorbar(taus, means, yerr=errors, marker="o", capsize=3, label=mode)
            ax.set(
                xscale="log",
                ylim=(0, 1),
                xlabel="tau (coarse = fine)",
                ylabel="top-1 (supervised)",
                title=f"world CLIP: {objective}",
            )
            ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / "tau.png")
        atomic_savefig(fig, written[-1], dpi=110)
        plt.close(fig)
    return written


def read_results(out: Path) -> dict:
    path = Path(out) / "results.json"
    if not path.is_file():
        raise UserError(f"no {path}: run `python -m trainer study --out {out}` first.")
    return json.loads(path.read_text())


def write_report(results: dict, out: Path, notes: Path | None = None) -> Path:
    """`results.json`, the plots and `README.md` (tables generated from the results, then
    the hand-written `notes` file verbatim: design changes and findings)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results, indent=1)
    plots = plot_results(results, out)
    seeds = results["seeds"]
    one_seed = len(seeds) == 1
    interval = (
        "95% Wilson interval over the test videos (one seed)"
        if one_seed
        else f"mean ± half-width of the 95% t-interval over seeds {seeds}"
    )
    lines = [
        "# The storyboard study",
        "",
        "Generated by `python -m trainer study` from `results.json`; the design and the "
        "findings follow the tables.",
        "",
        f"Seeds {seeds}; {results['train_videos_per_class']} training and "
        f"{results['test_videos_per_class']} test videos per seen class, "
        f"{results['test_videos_per_class']} per unseen class; top-1 of the last "
        f"checkpoint, {interval}. Chance: seen {results['chance']['seen']:.3f}, unseen "
        f"{results['chance']['unseen']:.3f}. The invocation that wrote these results took "
        f"{results['seconds'] / 60:.0f} min (a rerun skips the runs already done).",
        "",
    ]
    lines += [
        "## The world's CLIPs",
        "",
        "| world CLIP | frames find their caption: pooled | word tokens | "
        "linear probe (test / train) | text-anchored probe (test / train) | "
        "frozen zero-shot seen / unseen | nearest other class text (mean cos) |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in results["top1"]:
        acc, probe = results["frame_caption_accuracy"][o], results["linear_probe"][o]
        anchored = results["text_anchored_probe"][o]
        zero = results["zero_shot_class_texts"][o]
        nearest = float(np.mean(results["class_text_nearest_cosine"][o]))
        lines.append(
            f"| {o} | {acc['pooled']:.3f} | {acc['word_tokens']:.3f} | "
            f"{probe['test']:.3f} / {probe['train']:.3f} | "
            f"{anchored['test']:.3f} / {anchored['train']:.3f} | "
            f"{zero['seen']:.3f} / {zero['unseen']:.3f} | {nearest:.2f} |"
        )
    lines.append(f"\nChance for a frame's caption: {results['chance']['frame_caption']:.3f}.")
    for o in results["top1"]:
        lines += ["", f"## Top-1, world CLIP `{o}`", "", *top1_table(results, o)]
        order = results["order_only_top1"][o]
        lines += [
            "",
            "Top-1 on the classes of order-only pairs (supervised): "
            + ", ".join(f"{m} {_cell(s)}" for m, s in order.items())
            + ".",
        ]
        for mode, cell in results["temporal"][o].items():
            lines.append(
                f"With {results['design']['temporal_layers']} temporal layers, {mode}: "
                f"top-1 {_cell(cell['top1'])}, order-only pairs "
                f"{_cell(cell['order_only_top1'])}."
            )
        shares = results["importance_on_action_frames"][o]
        lines += [
            "",
            "Share of frame importance on frames of the video's own actions "
            "(supervised, mean over seeds): "
            + ", ".join(f"{k} {v:.3f}" for k, v in shares.items())
            + ".",
        ]
        if len(results["design"]["taus"]) > 1:
            lines += [
                "",
                "| tau | " + " | ".join(IMPORTANCE_MODES) + " |",
                "|---|" + "---|" * len(IMPORTANCE_MODES),
            ]
            for tau, cells in results["tau_sweep"][o].items():
                lines.append(
                    f"| {tau} | " + " | ".join(_cell(cells[m]) for m in IMPORTANCE_MODES) + " |"
                )
        if results["finetune_top1"][o]:
            lines += [
                "",
                "Fine-tuned backbone, supervised, seed 0: "
                + ", ".join(f"{m} {v:.3f}" for m, v in results["finetune_top1"][o].items())
                + ".",
            ]
        longer = results["posthoc_longer_training"].get(o)
        if longer:
            epochs = results["design"]["posthoc_epochs"]
            lines += [
                "",
                f"Post hoc (added after the first results): supervised, {epochs} "
                f"epochs instead of {results['design']['epochs']}: "
                + ", ".join(
                    f"{m} {_cell(c['top1'])} (loss {c['final_loss']['mean']:.2f})"
                    for m, c in longer.items()
                )
                + ".",
            ]
        kept = results["tpp_kept"][o]
        lines += [
            "",
            "Kinds of candidate set TPP keeps (all 12 classes): "
            + "; ".join(
                f"{scaling}: "
                + ", ".join(f"{kind} {Counter(k.values())[kind]}" for kind in SET_KINDS)
                for scaling, k in kept.items()
            )
            + ".",
        ]
        losses = [r["loss_change_last_fifth"] for r in results["training"][o].values()]
        steps = sorted({r["steps"] for r in results["training"][o].values()})
        lines += [
            "",
            f"Training: {steps} optimiser steps per run; the loss changed by "
            f"{min(losses):+.1%} to {max(losses):+.1%} over the last fifth of training.",
        ]
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots)]
    if notes is not None and notes.is_file():
        lines += ["", notes.read_text().rstrip()]
    path = out / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
