"""The study's results: each run's training log summarised into its record
(`summarise_log`), and the runs' records gathered into `results.json`'s figures (`collect`),
each with its spread over seeds (or episodes) and the paired differences. Pure: records in,
a dict out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import numpy as np

from trainer.environment import git_state
from trainer.model.aggregation import AGGREGATIONS

from ..world.definition import WorldInfo
from . import analysis
from .design import BRANCHES, IMPORTANCE_MODES, SETTINGS, StudyDesign, long_cells, tau_fields
from .tpp_groups import MAIN_GROUP, TPP_SCALINGS


def main_fields(temperatures: dict) -> dict:
    """The selection fields of the main runs (TPP's default sub-texts, no temporal layer,
    frozen backbone, the design's epochs) at the given temperature fields."""
    return {
        **temperatures,
        "temporal_layers": 0,
        "finetune": False,
        "epochs": None,
        "group": None,
    }


def calibrated_pair(calibration: dict) -> tuple[float, float]:
    """(tau_coarse, tau_fine) of a CLIP's calibration record."""
    return calibration["coarse"], calibration["fine"]


def calibrated_cells(
    design: StudyDesign, clips: dict
) -> Iterator[tuple[str, tuple[float, float], dict, dict]]:
    """Per CLIP (none without calibration): (objective, its calibrated pair, the main runs'
    selection fields at the default tau and at that pair)."""
    if design.calibration_frames is None:
        return
    main = main_fields(design.default_fields())
    for objective in design.objectives:
        pair = calibrated_pair(clips[objective]["calibration"])
        yield objective, pair, main, main_fields(tau_fields(*pair))


def select_runs(runs: list[dict], **fields) -> list[dict]:
    return [r for r in runs if all(r[k] == v for k, v in fields.items())]


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
        "logged_top1": evals[-1]["top1"],
        "losses": losses,
    }


def collect(
    design: StudyDesign, world: WorldInfo, clips: dict, runs: list[dict], seconds: float
) -> dict:
    """The study's results: per world CLIP, every figure with its spread over seeds.

    Long because it is the one flat list of what `results.json` holds, read top to bottom;
    each figure is one `select_runs` and one `analysis.spread`."""
    main = main_fields(design.default_fields())
    top1, order_only, importance, tau_sweep, temporal, finetune, plateau, posthoc = (
        {} for _ in range(8)
    )
    for objective in design.objectives:

        def spread(key: str, objective: str = objective, **fields) -> dict:
            return analysis.spread(r[key] for r in select_runs(runs, objective=objective, **fields))

        top1[objective] = mode_top1(runs, objective, main, main)
        order_only[objective] = {
            mode: spread("order_only_top1", mode=mode, setting="supervised", **main)
            for mode in AGGREGATIONS
        }
        importance[objective] = {
            "uniform": clips[objective]["uniform_importance"],
            **importance_shares(runs, objective, main),
        }
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
            r["mode"]: r["logged_top1"]
            for r in select_runs(runs, objective=objective, finetune=True)
        }
        plateau[objective] = {
            f"{r['setting']}-{r['mode']}-seed{r['seed']}": {
                "steps": r["steps"],
                "final_loss": r["final_loss"],
                "loss_change_last_fifth": r["loss_change_last_fifth"],
            }
            for r in select_runs(runs, objective=objective, **main)
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
        "report_git": git_state(),  # the code that gathered these results
        **calibration_and_tpp_figures(design, clips, runs),
        **figure_results(design, clips, runs),
        "runs": [{k: v for k, v in r.items() if k != "losses"} for r in runs],
    }


def mode_top1(runs: list[dict], objective: str, fields: dict, mean_fields: dict) -> dict:
    """{mode: {2shot, supervised, zero-shot: spread}} at the temperature `fields`; `mean`
    (no frame weights, no tau) from the runs at `mean_fields`."""
    cells = {}
    for mode in AGGREGATIONS:
        chosen = mean_fields if mode == "mean" else fields
        pick = {"objective": objective, "mode": mode, **chosen}
        cells[mode] = {
            **{
                s: analysis.spread(r["top1"] for r in select_runs(runs, setting=s, **pick))
                for s in SETTINGS
            },
            "zero-shot": analysis.spread(
                r["zero_shot_top1"] for r in select_runs(runs, setting="supervised", **pick)
            ),
        }
    return cells


def importance_shares(runs: list[dict], objective: str, fields: dict) -> dict:
    """Mean share of each branch's frame weights on own-action frames (supervised)."""
    shares = {}
    for mode in IMPORTANCE_MODES:
        chosen = select_runs(runs, objective=objective, mode=mode, setting="supervised", **fields)
        for branch in BRANCHES:
            key = f"importance_{branch}"
            if chosen and key in chosen[0]:
                label = mode if mode in BRANCHES else f"{mode} ({branch})"
                shares[label] = analysis.spread(r[key] for r in chosen)["mean"]
    return shares


def _by_seed(runs: list[dict], key: str = "top1", **fields) -> dict[int, float]:
    return {r["seed"]: r[key] for r in select_runs(runs, **fields)}


def mode_differences(runs: list[dict], objective: str, setting: str, cells: dict) -> dict:
    """Paired differences between modes over the same episodes (seeds): {"a - b": spread}
    for every pair of modes, a after b in AGGREGATIONS; `cells` gives each mode's fields."""
    values = {
        m: _by_seed(runs, objective=objective, setting=setting, mode=m, **f)
        for m, f in cells.items()
    }
    modes = list(cells)
    return {
        f"{a} - {b}": analysis.paired_difference(values[a], values[b])
        for i, b in enumerate(modes)
        for a in modes[i + 1 :]
    }


def calibration_and_tpp_figures(design: StudyDesign, clips: dict, runs: list[dict]) -> dict:
    """Calibrated temperatures, the mode grid at the calibrated pair, the weights' spread
    before and after training, paired 2-shot differences, and TPP against accuracy."""
    out: dict[str, dict] = {
        key: {}
        for key in (
            "calibrated_tau",
            "top1_calibrated",
            "importance_on_action_frames_calibrated",
            "importance_spread",
            "fewshot_paired_differences",
            "tpp_groups",
            "tpp_accuracy_r2",
            "tpp_choice_minus_faithful",
        )
    }
    for objective, pair, main, calibrated in calibrated_cells(design, clips):
        out["calibrated_tau"][objective] = clips[objective]["calibration"]
        out["top1_calibrated"][objective] = mode_top1(runs, objective, calibrated, main)
        out["importance_on_action_frames_calibrated"][objective] = importance_shares(
            runs, objective, calibrated
        )
        out["importance_spread"][objective] = _importance_spread(
            runs, objective, clips[objective]["largest_weight_before"], main, calibrated, pair
        )
        out["fewshot_paired_differences"][objective] = _fewshot_paired(
            runs, objective, main, calibrated
        )
        if design.tpp_groups:
            (
                out["tpp_groups"][objective],
                out["tpp_accuracy_r2"][objective],
                out["tpp_choice_minus_faithful"][objective],
            ) = _tpp_group_figures(runs, objective, clips[objective]["tpp_groups"], calibrated)
    return out


def _importance_spread(
    runs: list[dict], objective: str, before: dict, main: dict, calibrated: dict, pair: tuple
) -> dict:
    """The mean largest frame weight per branch before training (the frozen CLIP's, `before`)
    and after (each learned mode's supervised runs), at the default tau and the calibrated
    `pair`."""
    tau = main["tau"]
    spreads = {}
    for label, fields, taus in (
        (f"{tau:g}", main, (tau, main["tau_fine"] or tau)),
        ("calibrated", calibrated, pair),
    ):
        after = {}
        for mode in IMPORTANCE_MODES:
            chosen = select_runs(
                runs, objective=objective, mode=mode, setting="supervised", **fields
            )
            after[mode] = {
                b: analysis.spread(r[f"largest_weight_{b}"] for r in chosen)
                for b in BRANCHES
                if chosen and f"largest_weight_{b}" in chosen[0]
            }
        spreads[label] = {
            "tau_coarse": taus[0],
            "tau_fine": taus[1],
            "before": {b: before[f"{t:g}"][b] for b, t in zip(BRANCHES, taus)},
            "after": after,
        }
    return spreads


def _fewshot_paired(runs: list[dict], objective: str, main: dict, calibrated: dict) -> dict:
    """Paired 2-shot differences between modes at the default tau and at the calibrated pair,
    and calibrated minus default per learned mode and setting."""
    tau = main["tau"]
    grids = {f"{tau:g}": {m: main for m in AGGREGATIONS}}
    grids["calibrated"] = {m: main if m == "mean" else calibrated for m in AGGREGATIONS}
    paired = {}
    for label, cells in grids.items():
        paired[label] = {
            "episodes": len(
                _by_seed(
                    runs,
                    objective=objective,
                    setting="2shot",
                    mode="coarse+fine",
                    **cells["coarse+fine"],
                )
            ),
            "differences": mode_differences(runs, objective, "2shot", cells),
        }
    paired["calibrated - default tau"] = {
        setting: {
            m: analysis.paired_difference(
                _by_seed(runs, objective=objective, setting=setting, mode=m, **calibrated),
                _by_seed(runs, objective=objective, setting=setting, mode=m, **main),
            )
            for m in IMPORTANCE_MODES
        }
        for setting in SETTINGS
    }
    return paired


def _tpp_group_figures(
    runs: list[dict], objective: str, figures: dict, calibrated: dict
) -> tuple[dict, dict, dict]:
    """TPP against accuracy for one CLIP: each group's `figures` with its top-1 over seeds,
    the fit of top-1 on mean TPP per reading, and TPP's choice minus all-faithful."""
    groups = {}
    for name, group_figures in figures.items():
        seeds = _by_seed(
            runs,
            objective=objective,
            setting="supervised",
            mode="coarse+fine",
            **{**calibrated, "group": None if name == MAIN_GROUP else name},
        )
        groups[name] = {
            **group_figures,
            "top1": analysis.spread(seeds.values()),
            "top1_by_seed": seeds,
        }
    accuracy = [g["top1"]["mean"] for g in groups.values()]
    fits = {
        reading: analysis.linear_fit([g["mean_tpp"][reading] for g in groups.values()], accuracy)
        for reading in TPP_SCALINGS
    }
    cost = {
        reading: analysis.paired_difference(
            groups[f"tpp-{reading}"]["top1_by_seed"], groups["faithful"]["top1_by_seed"]
        )
        for reading in TPP_SCALINGS
    }
    return groups, fits, cost


def figure_results(design: StudyDesign, clips: dict, runs: list[dict]) -> dict:
    """Issue 31's figures per CLIP: the random-group TPP test (Fig. 2(b)), top-1 against the
    number of sub-texts (Fig. 2(a)), Table 6's key-frame claim per video, and the longer
    training; and which code produced each part of the runs."""
    out: dict[str, dict] = {
        key: {} for key in ("tpp_rank_test", "subtext_count", "keyframe", "long_training")
    }
    for objective, pair, main, calibrated in calibrated_cells(design, clips):
        cells = {f"{main['tau']:g}": main, "calibrated": calibrated}
        supervised = {"objective": objective, "setting": "supervised"}
        if clips[objective].get("random_groups"):
            out["tpp_rank_test"][objective] = _rank_tests(
                design, runs, supervised, clips[objective]["random_groups"], cells
            )
        if clips[objective].get("count_groups"):
            out["subtext_count"][objective] = {
                name: {
                    **{k: v for k, v in figures.items() if k != "tpp"},
                    "top1": analysis.spread(
                        _by_seed(
                            runs,
                            mode="coarse+fine",
                            **supervised,
                            **{**cells["calibrated"], "group": name},
                        ).values()
                    ),
                }
                for name, figures in clips[objective]["count_groups"].items()
            }
        out["keyframe"][objective] = {
            label: _keyframe(select_runs(runs, mode="coarse+fine", **supervised, **fields))
            for label, fields in cells.items()
        }
        if design.long_epochs is not None:
            out["long_training"][objective] = _long_training(design, runs, supervised, pair)
    out["provenance"] = provenance(runs)
    return out


def _rank_tests(
    design: StudyDesign, runs: list[dict], supervised: dict, groups: dict, cells: dict
) -> dict:
    """Per temperature cell: each group's top-1 by seed, and Spearman's rho of top-1 on
    mean TPP (each reading), mean sigma and mean delta, with its permutation p-value and
    seed-bootstrap interval (`analysis.rank_correlation_test`)."""
    result: dict = {"groups": groups, "cells": {}}
    for label, fields in cells.items():
        by_seed = {
            name: _by_seed(runs, mode="coarse+fine", **supervised, **{**fields, "group": name})
            for name in groups
        }
        complete = [
            n for n, seeds in by_seed.items() if len(seeds) == len(design.random_group_seeds)
        ]
        if len(complete) < 3:
            continue
        matrix = np.asarray([[by_seed[n][s] for s in design.random_group_seeds] for n in complete])
        readings = {f"tpp_{r}": [groups[n]["mean_tpp"][r] for n in complete] for r in TPP_SCALINGS}
        readings["sigma"] = [groups[n]["mean_sigma"] for n in complete]
        readings["delta"] = [groups[n]["mean_delta"] for n in complete]
        result["cells"][label] = {
            "top1_by_seed": {n: by_seed[n] for n in complete},
            "top1_range": [float(matrix.mean(1).min()), float(matrix.mean(1).max())],
            "tests": {
                name: analysis.rank_correlation_test(
                    x, matrix, design.permutations, design.bootstraps, design.random_group_seed
                )
                for name, x in readings.items()
            },
        }
    return result


def _keyframe(chosen: list[dict]) -> dict:
    """Table 6's claim per video: fine minus coarse share of own-action weight, each run's
    mean over its test videos with its 95% interval over videos, and the spread over seeds."""
    per_run = {
        r["seed"]: r["keyframe_fine_minus_coarse"]
        for r in chosen
        if "keyframe_fine_minus_coarse" in r
    }
    return {
        "by_seed": per_run,
        "fine_above_coarse_share": analysis.spread(
            r["keyframe_fine_above_coarse"] for r in chosen if "keyframe_fine_above_coarse" in r
        ),
        "over_seeds": analysis.spread(v["mean"] for v in per_run.values()),
    }


def _long_training(
    design: StudyDesign, runs: list[dict], supervised: dict, pair: tuple[float, float]
) -> dict:
    """The longer runs per (temperature, mode): top-1 and the loss's change over the last
    fifth, and longer minus the design's epochs paired over seeds."""
    result: dict = {}
    for mode, fields in long_cells(design, pair):
        short = main_fields(fields)
        long = {**short, "epochs": design.long_epochs}
        chosen = select_runs(runs, mode=mode, **supervised, **long)
        label = "calibrated" if fields == tau_fields(*pair) else f"{fields['tau']:g}"
        result.setdefault(label, {})[mode] = {
            "top1": analysis.spread(r["top1"] for r in chosen),
            "loss_change_last_fifth": analysis.spread(r["loss_change_last_fifth"] for r in chosen),
            "longer_minus_design": analysis.paired_difference(
                _by_seed(runs, mode=mode, **supervised, **long),
                _by_seed(runs, mode=mode, **supervised, **short),
            )
            if chosen
            else None,
        }
    return result


def provenance(runs: list[dict]) -> dict:
    """Per part of the study: the git commits whose code trained its runs, and whether every
    one of them ran from a clean tree (False too when a run has no git record)."""
    parts: dict[str, list] = {}
    for r in runs:
        parts.setdefault(r.get("part", "unknown"), []).append(r.get("git"))
    return {
        name: {
            "commits": sorted({"unknown" if g is None else g["commit"] for g in states}),
            "clean": all(g is not None and g["dirty"] is False for g in states),
        }
        for name, states in parts.items()
    }


def long_calibration_gains(results: dict, objective: str) -> dict:
    """After the longer training: calibrated pair minus tau = 0.01 per learned mode, paired
    over seeds, read from results.json's run records (whether the
    calibration's gain survives longer training)."""
    pair = calibrated_pair(results["calibrated_tau"][objective])
    default = results["design"]["taus"][0]
    longer = {
        "objective": objective,
        "setting": "supervised",
        "epochs": results["design"]["long_epochs"],
        "group": None,
        "temporal_layers": 0,
        "finetune": False,
    }
    gains = {}
    for mode in IMPORTANCE_MODES:
        calibrated = _by_seed(results["runs"], mode=mode, **longer, **tau_fields(*pair))
        at_default = _by_seed(results["runs"], mode=mode, **longer, **tau_fields(default, default))
        if calibrated and at_default:
            gains[mode] = analysis.paired_difference(
                {int(k): v for k, v in calibrated.items()},
                {int(k): v for k, v in at_default.items()},
            )
    return gains
