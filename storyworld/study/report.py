"""The study's report: `results.json`, its plots and `README.md` (tables generated from
the results, then the hand-written notes), and `read_results` for `--report-only`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_savefig, atomic_write_json, atomic_write_text

from . import analysis
from .collect import long_calibration_gains
from .design import BRANCHES, IMPORTANCE_MODES
from .tpp_groups import SET_KINDS, TPP_SCALINGS


def _cell(s: dict) -> str:
    """mean ± ci95 (or the mean alone, for one seed)."""
    if s["ci95"] is None:
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} ± {s['ci95']:.3f}"


def _wilson_cell(s: dict, trials: int) -> str:
    """One seed: the mean with its 95% Wilson interval over the test videos."""
    low, high = analysis.wilson_interval(round(s["mean"] * trials), trials)
    return f"{s['mean']:.3f} [{low:.2f}, {high:.2f}]"


def top1_table(results: dict, objective: str, key: str = "top1") -> list[str]:
    """Markdown rows: mode | 2-shot | supervised | zero-shot, with intervals, of the grid
    `key` (`top1`: tau = 0.01; `top1_calibrated`: the calibrated pair)."""
    seen = len(results["classes"]["seen"]) * results["test_videos_per_class"]
    unseen = len(results["classes"]["unseen"]) * results["test_videos_per_class"]
    one_seed = len(results["seeds"]) == 1
    lines = [
        "| aggregation | 2-shot (seen) | supervised (seen) | zero-shot (unseen) |",
        "|---|---|---|---|",
    ]
    for mode, cells in results[key][objective].items():
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


def _saved(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_results(results: dict, out: Path) -> list[Path]:
    """Bar charts of top-1 per mode (error bars: 95% intervals over seeds) and the
    temperature sweep; -> the PNG files written."""
    from storyboard_common.plots import pyplot

    plt = pyplot()
    objectives = list(results["top1"])
    written = [_plot_top1(plt, results, objectives, out)]
    if len(results["design"]["taus"]) > 1:
        written.append(_plot_tau(plt, results, objectives, out))
    grouped = {o: g for o, g in results.get("tpp_groups", {}).items() if g}
    if grouped:
        written.append(_plot_tpp(plt, results, grouped, out))
    tested = {o: t for o, t in results.get("tpp_rank_test", {}).items() if t and t["cells"]}
    if tested:
        written.append(_plot_random_tpp(plt, tested, out))
    return written


def _plot_top1(plt, results: dict, objectives: list[str], out: Path) -> Path:
    """top1.png: top-1 per mode and setting, one panel per world CLIP."""
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
    return _saved(plt, fig, out / "top1.png")


def _plot_tau(plt, results: dict, objectives: list[str], out: Path) -> Path:
    """tau.png: supervised top-1 of the learned modes across the temperature sweep."""
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
    return _saved(plt, fig, out / "tau.png")


def _plot_tpp(plt, results: dict, grouped: dict, out: Path) -> Path:
    """tpp.png: top-1 against mean TPP over the sub-text groups, per CLIP and reading."""
    fig, axes = plt.subplots(
        len(grouped), len(TPP_SCALINGS), figsize=(11, 4.2 * len(grouped)), squeeze=False
    )
    for row, (objective, groups) in zip(axes, grouped.items()):
        for ax, reading in zip(row, TPP_SCALINGS):
            x = [g["mean_tpp"][reading] for g in groups.values()]
            y = [g["top1"]["mean"] for g in groups.values()]
            errors = [g["top1"]["ci95"] or 0.0 for g in groups.values()]
            ax.errorbar(x, y, yerr=errors, fmt="o", capsize=3)
            for name, xi, yi in zip(groups, x, y):
                ax.annotate(name, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
            fit = results["tpp_accuracy_r2"][objective][reading]
            if fit["slope"] is not None:
                line = np.linspace(min(x), max(x), 2)
                ax.plot(line, fit["slope"] * line + fit["intercept"], "k--", lw=1)
            ax.set(
                xlabel=f"mean TPP ({reading})",
                ylabel="top-1 (coarse+fine, supervised)",
                title=f"world CLIP {objective}: r^2 {_maybe(fit['r2'])}",
            )
    return _saved(plt, fig, out / "tpp.png")


def _plot_random_tpp(plt, tested: dict, out: Path) -> Path:
    """tpp_random.png: each random group's top-1 (mean over seeds) against its mean TPP under
    each reading, one row per world CLIP, one colour per temperature."""
    fig, axes = plt.subplots(
        len(tested), len(TPP_SCALINGS), figsize=(11, 4.2 * len(tested)), squeeze=False
    )
    for row, (objective, test) in zip(axes, tested.items()):
        for ax, reading in zip(row, TPP_SCALINGS):
            for label, cell in test["cells"].items():
                names = list(cell["top1_by_seed"])
                x = [test["groups"][n]["mean_tpp"][reading] for n in names]
                y = [float(np.mean(list(cell["top1_by_seed"][n].values()))) for n in names]
                rho = cell["tests"][f"tpp_{reading}"]["rho"]
                ax.plot(x, y, "o", label=f"tau {label}: rho {_maybe(rho, '+.2f')}")
            ax.set(
                xlabel=f"mean TPP ({reading})",
                ylabel="top-1 (coarse+fine, supervised)",
                title=f"world CLIP {objective}",
            )
            ax.legend(fontsize=7)
    return _saved(plt, fig, out / "tpp_random.png")


def _signed(s: dict) -> str:
    """A difference: mean ± ci95, signed."""
    return f"{s['mean']:+.3f}" + ("" if s["ci95"] is None else f" ± {s['ci95']:.3f}")


def _largest(cell: dict) -> str:
    """coarse / fine mean largest weights (a spread or a number per branch; - if none)."""
    return " / ".join(
        "-" if b not in cell else f"{cell[b]['mean'] if isinstance(cell[b], dict) else cell[b]:.2f}"
        for b in BRANCHES
    )


def calibration_and_tpp_report(results: dict, o: str) -> list[str]:
    """Markdown for one world CLIP: the calibrated pair, the mode grid at 0.01 and at the
    calibrated pair side by side, the weights' spread before and after training, paired
    2-shot differences, and TPP against accuracy."""
    cal = results["calibrated_tau"][o]
    pair = (cal["coarse"], cal["fine"])
    default = f"{results['design']['taus'][0]:g}"
    grid = dict(zip(cal["taus"], zip(cal["largest_coarse"], cal["largest_fine"])))
    spreads = results["importance_spread"][o]
    lines = [
        "",
        f"## Calibrated temperatures and the mode grid side by side, world CLIP `{o}`",
        "",
        f"Calibrated on the frozen CLIP ({cal['frames']} evenly spaced frames of every seen "
        f"training video, the video's own class): tau_coarse = {pair[0]:g} (mean largest "
        f"weight {grid[pair[0]][0]:.3f}, target {cal['target_coarse']}), tau_fine = "
        f"{pair[1]:g} ({grid[pair[1]][1]:.3f}, target {cal['target_fine']}). At tau = "
        f"{default}: {_largest(spreads[default]['before'])} (coarse / fine).",
        "",
        "| aggregation | 2-shot, tau 0.01 | 2-shot, calibrated | supervised, tau 0.01 | "
        "supervised, calibrated | zero-shot, tau 0.01 | zero-shot, calibrated |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, cells in results["top1"][o].items():
        other = results["top1_calibrated"][o][mode]
        row = [_cell(c[k]) for k in ("2shot", "supervised", "zero-shot") for c in (cells, other)]
        lines.append(f"| {mode} | " + " | ".join(row) + " |")
    lines += [
        "",
        "`mean` weights no frames: its calibrated cells are its tau = 0.01 runs. 2-shot: "
        f"{results['fewshot_paired_differences'][o][default]['episodes']} episodes at tau "
        f"{default}, {results['fewshot_paired_differences'][o]['calibrated']['episodes']} at "
        "the calibrated pair; supervised and zero-shot: the seeds.",
        "",
        "Share of frame importance on own-action frames at the calibrated pair (supervised): "
        + ", ".join(
            f"{k} {v:.3f}" for k, v in results["importance_on_action_frames_calibrated"][o].items()
        )
        + ".",
        "",
        "Mean largest frame weight (coarse / fine; 4 frames, seen training videos), frozen "
        "CLIP before training and each mode's last checkpoint after (supervised, mean over "
        "seeds):",
        "",
        "| tau (coarse, fine) | before | " + " | ".join(IMPORTANCE_MODES) + " |",
        "|---|---|" + "---|" * len(IMPORTANCE_MODES),
    ]
    for label, spread_ in spreads.items():
        lines.append(
            f"| {label} ({spread_['tau_coarse']:g}, {spread_['tau_fine']:g}) | "
            f"{_largest(spread_['before'])} | "
            + " | ".join(_largest(spread_["after"][m]) for m in IMPORTANCE_MODES)
            + " |"
        )
    paired = results["fewshot_paired_differences"][o]
    lines += [
        "",
        "Paired 2-shot differences of top-1 over the same episodes (mean ± 95% half-width):",
        "",
        f"| difference | tau {default} | calibrated |",
        "|---|---|---|",
    ]
    for key, cell in paired[default]["differences"].items():
        lines.append(
            f"| {key} | {_signed(cell)} | {_signed(paired['calibrated']['differences'][key])} |"
        )
    lines += [
        "",
        "Calibrated minus tau = 0.01, same mode, paired: "
        + "; ".join(
            f"{setting}: " + ", ".join(f"{m} {_signed(c)}" for m, c in cells.items())
            for setting, cells in paired["calibrated - default tau"].items()
        )
        + ".",
    ]
    if results["tpp_groups"].get(o):
        lines += _tpp_groups_report(results, o)
    return lines


def _tpp_groups_report(results: dict, o: str) -> list[str]:
    """Markdown for one world CLIP's TPP test: each sub-text group's mean TPP and top-1, the
    fit of top-1 on mean TPP, and what TPP's choice costs against all-faithful sets."""
    groups = results["tpp_groups"][o]
    lines = [
        "",
        f"### TPP against accuracy, world CLIP `{o}`",
        "",
        "| sub-text group | mean TPP, complement | mean TPP, identity | top-1 "
        "(coarse+fine, supervised, calibrated) |",
        "|---|---|---|---|",
    ]
    for name, g in groups.items():
        lines.append(
            f"| {name} | {g['mean_tpp']['complement']:.3f} | "
            f"{g['mean_tpp']['identity']:.3f} | {_cell(g['top1'])} |"
        )
    fits = results["tpp_accuracy_r2"][o]
    cost = results["tpp_choice_minus_faithful"][o]
    lines += [
        "",
        "Mean TPP against top-1 over the groups: "
        + "; ".join(
            f"{reading}: r^2 {_maybe(f['r2'])}, slope {_maybe(f['slope'], '+.3f')}"
            for reading, f in fits.items()
        )
        + ". TPP's choice minus all-faithful (paired over seeds): "
        + ", ".join(f"{reading} {_signed(c)}" for reading, c in cost.items())
        + ".",
    ]
    return lines


DECISION = (
    "Decision rule (fixed before the runs): the paper's Fig. 2(b) is reproduced when "
    "Spearman's rho of top-1 on mean TPP is > 0 with one-sided permutation p < 0.05 under "
    "`complement` (the reading the project uses), with the token CLIP at the calibrated pair."
)


def figures_report(results: dict, o: str) -> list[str]:
    """Markdown for one world CLIP's tests of the paper's figures: the random-group TPP test
    (Fig. 2(b)), top-1 against the number of sub-texts (Fig. 2(a)), Table 6's key frames
    per video, and the longer runs."""
    return [
        *_rank_test_report(results, o),
        *_count_report(results, o),
        *_keyframe_report(results, o),
        *_long_training_report(results, o),
    ]


def _rank_test_report(results: dict, o: str) -> list[str]:
    lines: list[str] = []
    test = results.get("tpp_rank_test", {}).get(o)
    if test and test["cells"]:
        lines += [
            "",
            f"### TPP against accuracy over {len(test['groups'])} random sub-text groups "
            f"(Fig. 2(b)), world CLIP `{o}`",
            "",
            "Supervised `coarse+fine`, top-1 mean over "
            f"{len(results['design']['random_group_seeds'])} seeds per group; Spearman's rho "
            "with the one-sided permutation p-value and the seeds' bootstrap 95% interval.",
            "",
            "| tau | top-1 range over groups | TPP complement | TPP identity | mean sigma "
            "(Eq. 3) | mean delta (Eq. 4) |",
            "|---|---|---|---|---|---|",
        ]
        for label, cell in test["cells"].items():
            low, high = cell["top1_range"]
            tests = [cell["tests"][k] for k in ("tpp_complement", "tpp_identity", "sigma", "delta")]
            lines.append(
                f"| {label} | {low:.3f}-{high:.3f} | " + " | ".join(map(_rank, tests)) + " |"
            )
        lines += ["", DECISION]
    return lines


def _count_report(results: dict, o: str) -> list[str]:
    lines: list[str] = []
    counts = results.get("subtext_count", {}).get(o)
    if counts:
        lines += [
            "",
            f"### Top-1 against the number of sub-texts (Fig. 2(a)), world CLIP `{o}`",
            "",
            "| N | mean TPP complement | mean sigma | mean delta | top-1 (coarse+fine, "
            "supervised, calibrated) |",
            "|---|---|---|---|---|",
        ]
        for name, c in counts.items():
            n = name.rsplit("n", 1)[-1]
            lines.append(
                f"| {n} | {c['mean_tpp']['complement']:.3f} | {c['mean_sigma']:.3f} | "
                f"{c['mean_delta']:.3f} | {_cell(c['top1'])} |"
            )
    return lines


def _keyframe_report(results: dict, o: str) -> list[str]:
    lines: list[str] = []
    keyframe = results.get("keyframe", {}).get(o)
    if keyframe:
        lines += [
            "",
            "Table 6's key frames, per video (supervised `coarse+fine`): fine minus coarse "
            "share of own-class weight on own-action frames, mean over seeds ± 95% half-width "
            "(each seed's mean over its test videos), and the share of videos where fine is "
            "higher: "
            + "; ".join(
                f"tau {label} {_signed(k['over_seeds'])}, "
                f"{k['fine_above_coarse_share']['mean']:.2f} of videos"
                for label, k in keyframe.items()
                if k["by_seed"]
            )
            + ".",
        ]
    return lines


def _long_training_report(results: dict, o: str) -> list[str]:
    lines: list[str] = []
    longer = results.get("long_training", {}).get(o)
    if longer:
        epochs = results["design"]["long_epochs"]
        lines += [
            "",
            f"### Longer training, world CLIP `{o}`: {epochs} epochs against "
            f"{results['design']['epochs']}, supervised",
            "",
            "| tau | mode | top-1 | longer minus shorter (paired) | loss change, last fifth |",
            "|---|---|---|---|---|",
        ]
        for label, modes in longer.items():
            for mode, c in modes.items():
                gain = (
                    "-" if c["longer_minus_design"] is None else _signed(c["longer_minus_design"])
                )
                change = c["loss_change_last_fifth"]["mean"]
                lines.append(
                    f"| {label} | {mode} | {_cell(c['top1'])} | {gain} | "
                    f"{'-' if change is None else format(change, '+.1%')} |"
                )
        gains = long_calibration_gains(results, o)
        if gains:
            lines += [
                "",
                f"After {epochs} epochs, calibrated minus tau = "
                f"{results['design']['taus'][0]:g}, same mode, paired over seeds: "
                + ", ".join(f"{m} {_signed(g)}" for m, g in gains.items())
                + ".",
            ]
    return lines


def _rank(test: dict) -> str:
    """rho [bootstrap interval], p."""
    if test["rho"] is None:
        return "-"
    low, high = test["ci95"]
    return f"{test['rho']:+.2f} [{low:+.2f}, {high:+.2f}], p {test['p_one_sided']:.3f}"


def provenance_lines(results: dict) -> list[str]:
    parts = results.get("provenance")
    if not parts:
        return []
    return [
        "",
        "Code that trained each part (git commit, clean tree): "
        + "; ".join(
            f"{name}: {', '.join(c[:10] for c in p['commits'])}"
            + ("" if p["clean"] else " (not all from a clean tree)")
            for name, p in parts.items()
        )
        + ".",
    ]


def _maybe(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def read_results(out: Path) -> dict:
    path = Path(out) / "results.json"
    if not path.is_file():
        raise UserError(f"no {path}: run `python -m storyworld study --out {out}` first.")
    return json.loads(path.read_text())


def _summary(results: dict) -> list[str]:
    """The report's title and what its numbers are: seeds, videos, intervals, chance."""
    seeds = results["seeds"]
    one_seed = len(seeds) == 1
    interval = (
        "95% Wilson interval over the test videos (one seed)"
        if one_seed
        else f"mean ± half-width of the 95% t-interval over seeds {seeds} (2-shot: over "
        "its episodes, see the design)"
    )
    return [
        "# The storyboard study",
        "",
        "Generated by `python -m storyworld study` from `results.json`; the design and the "
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


def _clips_table(results: dict) -> list[str]:
    """One row per world CLIP: frame-caption accuracy, the probes, frozen zero-shot."""
    lines = [
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
    return lines


def _clip_section(results: dict, o: str) -> list[str]:
    """One world CLIP's section: its top-1 table, order-only pairs, temporal layers, frame
    importance, the temperature sweep, the fine-tuned and longer runs, TPP's kinds kept
    and the training's plateau."""
    lines = ["", f"## Top-1, world CLIP `{o}`", "", *top1_table(results, o)]
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
            f"{scaling}: " + ", ".join(f"{kind} {Counter(k.values())[kind]}" for kind in SET_KINDS)
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
    return lines


def write_report(results: dict, out: Path, notes: Path | None = None) -> Path:
    """`results.json`, the plots and `README.md` (tables generated from the results, then
    the hand-written `notes` file verbatim: design changes and findings)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results, indent=1)
    plots = plot_results(results, out)
    lines = [*_summary(results), *_clips_table(results)]
    for o in results["top1"]:
        lines += _clip_section(results, o)
    for o in results.get("calibrated_tau", {}):
        lines += calibration_and_tpp_report(results, o)
        lines += figures_report(results, o)
    lines += provenance_lines(results)
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots)]
    if notes is not None and notes.is_file():
        lines += ["", notes.read_text().rstrip()]
    path = out / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
