"""Every number README.md, docs/study/notes.md and docs/design.md quote about the study's results is
docs/study/results.json's, and every difference they state says what its paired 95% interval
says: "beats", "above", "leads" only when the interval excludes 0, "not resolved" when it
holds 0. After a new study, rewrite the findings and edit `CLAIMS`: one row per quoted
sentence part."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from storyworld.study.analysis import paired_difference
from testkit.cli import REPO

NOTES = REPO / "docs" / "study" / "notes.md"
README = REPO / "README.md"
DESIGN = REPO / "docs" / "design.md"
TOKEN, POOLED = "pooled+tokens", "pooled"
CALIBRATED = "calibrated"  # `supervised(..., tau=CALIBRATED)`: the CLIP's calibrated pair

# A decimal as the text writes it, optionally with its 95% half-width ("+0.027 ± 0.047");
# a sign counts only where it is not a range's dash ("0.49-0.56").
NUMBER = re.compile(r"(?<![\d.])([+-]?\d+\.\d+)(?:\s*±\s*(\d+\.\d+))?")
# Words that state a difference: a claim using them with an interval must say whether its
# interval resolves it.
DIFFERENCE_WORDS = re.compile(r"\b(beats?|above|below|leads?|rises|falls|higher|lower)\b")


@dataclass(frozen=True)
class Claim:
    """`quote` as it stands on `page` (line breaks read as spaces); `values` gives, from
    results.json, one value per decimal of the quote in order: a number, or a spread
    ({mean, ci95}) for "mean ± ci95". `resolved` (for differences): True where the text
    says one is larger (every spread's interval must exclude 0), False where it says not
    resolved (every interval must hold 0)."""

    page: Path
    quote: str
    values: Callable[[dict], tuple]
    resolved: bool | None = None


# ---------------------------------------------------------------- reading results.json


def cell(results: dict, objective: str, mode: str, setting: str, key="top1_calibrated") -> dict:
    """The spread of one cell of the mode grid (`top1` is tau = 0.01)."""
    return results[key][objective][mode][setting]


def runs_by_seed(
    results: dict,
    objective: str,
    mode: str,
    *,
    tau: float | str = CALIBRATED,
    layers: int = 0,
    key: str = "top1",
) -> dict[int, float]:
    """{seed: `key`} of the supervised runs of one mode (the main sub-texts), at tau_coarse =
    tau_fine = `tau` or at the CLIP's calibrated pair: what a paired difference pairs."""
    pair = results["calibrated_tau"][objective]
    values = {}
    for run in results["runs"]:
        if (run["objective"], run["setting"], run["mode"]) != (objective, "supervised", mode):
            continue
        if run["group"] is not None or run["temporal_layers"] != layers:
            continue
        if tau == CALIBRATED:
            if (run["tau"], run["tau_fine"]) != (pair["coarse"], pair["fine"]):
                continue
        elif run["tau_fine"] is not None or run["tau"] != tau:
            continue
        values[run["seed"]] = run[key]
    assert values, f"no supervised {objective} {mode} run at tau {tau}"
    return values


def paired(results: dict, objective: str, first: tuple, second: tuple, key="top1") -> dict:
    """first - second, paired over seeds; each side (mode, tau[, temporal layers])."""

    def side(spec: tuple) -> dict[int, float]:
        mode, tau, *layers = spec
        tau = 0.01 if mode == "mean" else tau  # `mean` weighs no frames: it runs at 0.01 only
        return runs_by_seed(results, objective, mode, tau=tau, layers=sum(layers), key=key)

    return paired_difference(side(first), side(second))


def fewshot(results: dict, objective: str, temperature: str, pair: str) -> dict:
    """A 2-shot paired difference between two modes over the same episodes."""
    return results["fewshot_paired_differences"][objective][temperature]["differences"][pair]


def gain(results: dict, objective: str, setting: str, mode: str) -> dict:
    """Calibrated minus tau = 0.01, paired over episodes (2-shot) or seeds (supervised)."""
    return results["fewshot_paired_differences"][objective]["calibrated - default tau"][setting][
        mode
    ]


def group_top1(results: dict, objective: str, group: str) -> dict[int, float]:
    return {int(k): v for k, v in results["tpp_groups"][objective][group]["top1_by_seed"].items()}


def spread_after(results: dict, objective: str, tau: str, mode: str, branch: str) -> float:
    """The mean largest frame weight of a branch after training."""
    return results["importance_spread"][objective][tau]["after"][mode][branch]["mean"]


def faithful_minus(results: dict, objective: str) -> tuple[dict, dict]:
    """All-faithful minus all-unrelated and minus all-near-duplicate, paired over seeds."""
    faithful = group_top1(results, objective, "faithful")
    return tuple(
        paired_difference(faithful, group_top1(results, objective, other))
        for other in ("unrelated", "near-duplicate")
    )


def largest_at_tau_1(results: dict) -> list[float]:
    """Both branches' mean largest frame weight on both frozen CLIPs at tau = 1."""
    values = []
    for grid in results["calibrated_tau"].values():
        at = grid["taus"].index(1.0)
        values += [grid["largest_coarse"][at], grid["largest_fine"][at]]
    return values


def all_resolved(spreads: list[dict]) -> dict:
    """The smallest of differences the text calls resolved together; each must be."""
    for one in spreads:
        assert abs(one["mean"]) > one["ci95"], f"{one} is not resolved"
    return min(spreads, key=lambda one: one["mean"])


def above_frozen_zero_shot(r: dict) -> tuple:
    """Token-CLIP `coarse+fine` at the calibrated pair minus the frozen zero-shot on the
    unseen classes (paired over seeds), its lowest and highest seed, and the frozen one."""
    seeds = runs_by_seed(r, TOKEN, "coarse+fine", key="zero_shot_top1")
    frozen = r["zero_shot_class_texts"][TOKEN]["unseen"]
    difference = paired(r, TOKEN, ("coarse+fine", CALIBRATED), ("mean", 0.01), "zero_shot_top1")
    return difference, min(seeds.values()), max(seeds.values()), frozen


def coarse_fine_over_coarse(r: dict) -> tuple[dict, dict]:
    """Token-CLIP `coarse+fine` minus `coarse` at the calibrated pair, supervised and
    zero-shot, paired over seeds."""
    first, second = ("coarse+fine", CALIBRATED), ("coarse", CALIBRATED)
    return paired(r, TOKEN, first, second), paired(r, TOKEN, first, second, "zero_shot_top1")


def exactly_frozen(r: dict, objective: str) -> float:
    """The frozen zero-shot on the seen classes, after checking that every `mean` run
    (every seed, episode and setting, tau = 0.01 and no temporal layer) scored exactly it."""
    frozen = r["zero_shot_class_texts"][objective]["seen"]
    mean_runs = [
        run["top1"]
        for run in r["runs"]
        if (run["objective"], run["mode"], run["temporal_layers"]) == (objective, "mean", 0)
    ]
    assert mean_runs and all(top1 == frozen for top1 in mean_runs)
    return frozen


def order_only_best(r: dict, setting: str) -> float:
    """The best top-1 on the order-only pairs' classes of any run at tau = 0.01 (no
    temporal layer) in `setting`."""
    return max(
        run["order_only_top1"]
        for run in r["runs"]
        if run["setting"] == setting
        and (run["tau"], run["tau_fine"], run["temporal_layers"]) == (0.01, None, 0)
    )


def calibration_gains(r: dict, objective: str) -> list[dict]:
    """Calibrated minus 0.01 for every learned mode in 2-shot, supervised and zero-shot."""
    modes = ("global", "coarse", "fine", "coarse+fine")
    return [gain(r, objective, s, m) for s in ("2shot", "supervised") for m in modes] + [
        zero_shot_cal(r, objective, m) for m in modes
    ]


def assert_counts(differences: list[dict], higher: int, lower: int, of: int) -> tuple:
    """Checks how many differences are resolved above and below 0; a quote of counts only
    has no decimal to compare, so -> ()."""
    assert len(differences) == of
    assert sum(resolves(d) and d["mean"] > 0 for d in differences) == higher
    assert sum(resolves(d) and d["mean"] < 0 for d in differences) == lower
    return ()


def zero_shot_cal(r: dict, objective: str, mode: str) -> dict:
    return paired(r, objective, (mode, CALIBRATED), (mode, 0.01), key="zero_shot_top1")


# ---------------------------------------------------------------- the claims

CLAIMS = [
    # README.md, "What it shows" (the token CLIP at its calibrated pair)
    Claim(
        README,
        "over `coarse` the paired difference is resolved only in 2-shot (+0.023 ± 0.018",
        lambda r: (fewshot(r, TOKEN, "calibrated", "coarse+fine - coarse"),),
        resolved=True,
    ),
    Claim(
        README,
        "supervised (+0.027 ± 0.047) and zero-shot (+0.023 ± 0.038) 3 seeds do not resolve it",
        coarse_fine_over_coarse,
        resolved=False,
    ),
    Claim(
        README,
        "2-shot it is above the frozen `mean` by +0.076 ± 0.028",
        lambda r: (fewshot(r, TOKEN, "calibrated", "coarse+fine - mean"),),
        resolved=True,
    ),
    Claim(
        README,
        "above the frozen CLIP's zero-shot by +0.040 ± 0.025 (0.93-0.95 against 0.900",
        above_frozen_zero_shot,
        resolved=True,
    ),
    Claim(
        README,
        "9 of the 12 learned-mode cells are resolved lower than at the calibrated pair, none "
        "resolved higher",
        lambda r: assert_counts(calibration_gains(r, TOKEN), higher=9, lower=0, of=12),
    ),
    # notes.md, design changes
    Claim(
        NOTES,
        "the lowest, `global` supervised, is -0.007 ± 0.007, paired over seeds",
        lambda r: (gain(r, TOKEN, "supervised", "global"),),
        resolved=False,
    ),
    Claim(
        NOTES,
        "(e.g. `pooled` `coarse` 0.428 against 0.455), within their intervals; the world and the "
        "CLIPs are the same to the last digit (frame-caption accuracies 0.898 / 0.611 and 0.911 "
        "/ 0.906",
        lambda r: (
            cell(r, POOLED, "coarse", "supervised", "top1")["mean"],
            0.455,  # the earlier study's (commit b132e96), not in this results.json
            r["frame_caption_accuracy"][POOLED]["pooled"],
            r["frame_caption_accuracy"][POOLED]["word_tokens"],
            r["frame_caption_accuracy"][TOKEN]["pooled"],
            r["frame_caption_accuracy"][TOKEN]["word_tokens"],
        ),
    ),
    # notes.md, findings of issue 22
    Claim(
        NOTES,
        "reached on the token CLIP at tau_coarse = 0.133 and tau_fine = 0.422 (measured "
        "0.425 and 0.304); at tau = 0.01 the largest weight is 0.53 (coarse) and 0.78 (fine)",
        lambda r: (
            r["calibrated_tau"][TOKEN]["coarse"],
            r["calibrated_tau"][TOKEN]["fine"],
            r["importance_spread"][TOKEN]["calibrated"]["before"]["coarse"],
            r["importance_spread"][TOKEN]["calibrated"]["before"]["fine"],
            0.01,
            r["importance_spread"][TOKEN]["0.01"]["before"]["coarse"],
            r["importance_spread"][TOKEN]["0.01"]["before"]["fine"],
        ),
    ),
    Claim(
        NOTES,
        "CLIP needs tau_coarse = 0.42 and tau_fine = 1.78 (at 0.01: 0.76 and 0.91, nearly "
        "one-hot): its word tokens' cosines with frames spread widely although they find the "
        "right frame poorly (0.61)",
        lambda r: (
            r["calibrated_tau"][POOLED]["coarse"],
            r["calibrated_tau"][POOLED]["fine"],
            0.01,
            r["importance_spread"][POOLED]["0.01"]["before"]["coarse"],
            r["importance_spread"][POOLED]["0.01"]["before"]["fine"],
            r["frame_caption_accuracy"][POOLED]["word_tokens"],
        ),
    ),
    Claim(
        NOTES,
        "every learned mode gains, supervised +0.06 (`coarse+fine`) to +0.22 (`fine`) and "
        "2-shot +0.07 to +0.20, all intervals above 0",
        lambda r: (
            gain(r, POOLED, "supervised", "coarse+fine")["mean"],
            gain(r, POOLED, "supervised", "fine")["mean"],
            all_resolved(
                [gain(r, POOLED, "2shot", m) for m in ("global", "coarse", "fine", "coarse+fine")]
            )["mean"],
            gain(r, POOLED, "2shot", "fine")["mean"],
        ),
    ),
    Claim(
        NOTES,
        "rises for `global` (0.34 -> 0.59, +0.253 ± 0.072) and `fine` (0.31 -> 0.56, +0.253 ± "
        "0.038) and falls for `coarse+fine` (0.707 -> 0.603, -0.103 ± 0.029)",
        lambda r: (
            cell(r, POOLED, "global", "zero-shot", "top1")["mean"],
            cell(r, POOLED, "global", "zero-shot")["mean"],
            zero_shot_cal(r, POOLED, "global"),
            cell(r, POOLED, "fine", "zero-shot", "top1")["mean"],
            cell(r, POOLED, "fine", "zero-shot")["mean"],
            zero_shot_cal(r, POOLED, "fine"),
            cell(r, POOLED, "coarse+fine", "zero-shot", "top1")["mean"],
            cell(r, POOLED, "coarse+fine", "zero-shot")["mean"],
            zero_shot_cal(r, POOLED, "coarse+fine"),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "`coarse` falls by -0.057 ± 0.087 (not resolved)",
        lambda r: (zero_shot_cal(r, POOLED, "coarse"),),
        resolved=False,
    ),
    Claim(
        NOTES,
        "Token CLIP: `fine` +0.095 ± 0.054 and `coarse+fine` +0.063 ± 0.047 supervised",
        lambda r: (
            gain(r, TOKEN, "supervised", "fine"),
            gain(r, TOKEN, "supervised", "coarse+fine"),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "(`coarse` +0.015 ± 0.054 and `global` -0.007 ± 0.007: not resolved)",
        lambda r: (
            gain(r, TOKEN, "supervised", "coarse"),
            gain(r, TOKEN, "supervised", "global"),
        ),
        resolved=False,
    ),
    Claim(
        NOTES,
        "every learned mode about +0.03 in 2-shot (+0.028 to +0.035, all intervals above 0)",
        lambda r: (
            0.03,
            all_resolved(
                [gain(r, TOKEN, "2shot", m) for m in ("global", "coarse", "fine", "coarse+fine")]
            )["mean"],
            gain(r, TOKEN, "2shot", "global")["mean"],
        ),
    ),
    Claim(
        NOTES,
        "zero-shot `coarse+fine` 0.797 -> 0.940 (+0.143 ± 0.038) and `fine` 0.497 -> 0.793 "
        "(+0.297 ± 0.052)",
        lambda r: (
            cell(r, TOKEN, "coarse+fine", "zero-shot", "top1")["mean"],
            cell(r, TOKEN, "coarse+fine", "zero-shot")["mean"],
            zero_shot_cal(r, TOKEN, "coarse+fine"),
            cell(r, TOKEN, "fine", "zero-shot", "top1")["mean"],
            cell(r, TOKEN, "fine", "zero-shot")["mean"],
            zero_shot_cal(r, TOKEN, "fine"),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "zero-shot `coarse` +0.023 ± 0.038 (not resolved)",
        lambda r: (zero_shot_cal(r, TOKEN, "coarse"),),
        resolved=False,
    ),
    Claim(
        NOTES,
        "The highest supervised cell of the mode grid is token-CLIP `coarse+fine` at the "
        "calibrated pair, 0.613 ± 0.026 (the linear probe's 0.590 lies inside that interval)",
        lambda r: (cell(r, TOKEN, "coarse+fine", "supervised"), r["linear_probe"][TOKEN]["test"]),
    ),
    Claim(
        NOTES,
        "higher means for `coarse+fine` at tau = 0.1 in the sweep (0.628 ± 0.068; +0.015 ± "
        "0.054 over the calibrated pair, paired over seeds) and with 2 temporal layers at 0.01 "
        "(0.633 ± 0.100; +0.020 ± 0.078): neither difference is resolved",
        lambda r: (
            0.1,
            r["tau_sweep"][TOKEN]["0.1"]["coarse+fine"],
            paired(r, TOKEN, ("coarse+fine", 0.1), ("coarse+fine", CALIBRATED)),
            0.01,
            r["temporal"][TOKEN]["coarse+fine"]["top1"],
            paired(r, TOKEN, ("coarse+fine", 0.01, 2), ("coarse+fine", CALIBRATED)),
        ),
        resolved=False,
    ),
    Claim(
        NOTES,
        "`coarse+fine` is above `coarse` by +0.027 ± 0.047 supervised and +0.023 ± 0.038 "
        "zero-shot (not resolved)",
        coarse_fine_over_coarse,
        resolved=False,
    ),
    Claim(
        NOTES,
        "and +0.023 ± 0.018 in 2-shot (resolved)",
        lambda r: (fewshot(r, TOKEN, "calibrated", "coarse+fine - coarse"),),
        resolved=True,
    ),
    Claim(
        NOTES,
        "calibration narrows the modes to 0.49-0.56 supervised and 0.40-0.44 2-shot",
        lambda r: tuple(
            f(
                cell(r, POOLED, m, setting)["mean"]
                for m in ("global", "coarse", "fine", "coarse+fine")
            )
            for setting in ("supervised", "2shot")
            for f in (min, max)
        ),
    ),
    Claim(
        NOTES,
        "largest weight after training is the frozen one by construction (token CLIP, "
        "calibrated: 0.425 and 0.304)",
        lambda r: (
            spread_after(r, TOKEN, "calibrated", "global", "coarse"),
            spread_after(r, TOKEN, "calibrated", "fine", "fine"),
        ),
    ),
    Claim(
        NOTES,
        "(token CLIP: 0.42 -> 0.53 at the calibrated pair, 0.53 -> 0.63 at 0.01; `pooled`: "
        "0.44 -> 0.48) and token-CLIP `coarse` alone a little (0.42 -> 0.46); with the "
        "`pooled` CLIP `coarse` softens (0.44 -> 0.41 calibrated, 0.76 -> 0.67 at 0.01)",
        lambda r: (
            r["importance_spread"][TOKEN]["calibrated"]["before"]["coarse"],
            spread_after(r, TOKEN, "calibrated", "coarse+fine", "coarse"),
            r["importance_spread"][TOKEN]["0.01"]["before"]["coarse"],
            spread_after(r, TOKEN, "0.01", "coarse+fine", "coarse"),
            0.01,
            r["importance_spread"][POOLED]["calibrated"]["before"]["coarse"],
            spread_after(r, POOLED, "calibrated", "coarse+fine", "coarse"),
            r["importance_spread"][TOKEN]["calibrated"]["before"]["coarse"],
            spread_after(r, TOKEN, "calibrated", "coarse", "coarse"),
            r["importance_spread"][POOLED]["calibrated"]["before"]["coarse"],
            spread_after(r, POOLED, "calibrated", "coarse", "coarse"),
            r["importance_spread"][POOLED]["0.01"]["before"]["coarse"],
            spread_after(r, POOLED, "0.01", "coarse", "coarse"),
            0.01,
        ),
    ),
    Claim(
        NOTES,
        "`coarse+fine` beats `mean` (the frozen zero-shot, 0.410) by +0.076 ± 0.028, `global` "
        "by +0.084 ± 0.026, `fine` by +0.049 ± 0.018 and `coarse` by +0.023 ± 0.018; `coarse` "
        "beats `global` (+0.061 ± 0.019) and `fine` (+0.026 ± 0.016)",
        lambda r: (
            r["zero_shot_class_texts"][TOKEN]["seen"],
            fewshot(r, TOKEN, "calibrated", "coarse+fine - mean"),
            fewshot(r, TOKEN, "calibrated", "coarse+fine - global"),
            fewshot(r, TOKEN, "calibrated", "coarse+fine - fine"),
            fewshot(r, TOKEN, "calibrated", "coarse+fine - coarse"),
            fewshot(r, TOKEN, "calibrated", "coarse - global"),
            negated(fewshot(r, TOKEN, "calibrated", "fine - coarse")),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "`global` does not beat `mean` (-0.008 ± 0.020)",
        lambda r: (fewshot(r, TOKEN, "calibrated", "global - mean"),),
        resolved=False,
    ),
    Claim(
        NOTES,
        "At 0.01 `coarse+fine` is above `mean` (+0.044 ± 0.030), `global` (+0.087 ± 0.032) and "
        "`fine` (+0.048 ± 0.032)",
        lambda r: (
            (0.01,)
            + tuple(
                fewshot(r, TOKEN, "0.01", f"coarse+fine - {m}") for m in ("mean", "global", "fine")
            )
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "but not resolved over `coarse` (+0.020 ± 0.026)",
        lambda r: (fewshot(r, TOKEN, "0.01", "coarse+fine - coarse"),),
        resolved=False,
    ),
    Claim(
        NOTES,
        "`global` is below `mean` (-0.043 ± 0.020)",
        lambda r: (fewshot(r, TOKEN, "0.01", "global - mean"),),
        resolved=True,
    ),
    Claim(
        NOTES,
        "`fine` level with it (-0.004 ± 0.026)",
        lambda r: (fewshot(r, TOKEN, "0.01", "fine - mean"),),
        resolved=False,
    ),
    Claim(
        NOTES,
        "With the `pooled` CLIP every learned mode beats `mean` (its frozen zero-shot is 0.150)",
        lambda r: (
            all_resolved(
                [
                    fewshot(r, POOLED, t, f"{m} - mean")
                    for t in ("0.01", "calibrated")
                    for m in ("global", "coarse", "fine", "coarse+fine")
                ]
            )
            and r["zero_shot_class_texts"][POOLED]["seen"],
        ),
    ),
    Claim(
        NOTES,
        "at 0.01 `coarse+fine` leads every other mode (over `coarse` by +0.039 ± 0.019, the "
        "closest)",
        lambda r: (
            0.01,
            all_resolved(
                [
                    fewshot(r, POOLED, "0.01", f"coarse+fine - {m}")
                    for m in ("mean", "global", "coarse", "fine")
                ]
            ),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "the modes sit within 0.035 of each other (`coarse+fine` above `global` by +0.034 ± "
        "0.015 and `fine` by +0.013 ± 0.011)",
        lambda r: (
            0.035,
            fewshot(r, POOLED, "calibrated", "coarse+fine - global"),
            fewshot(r, POOLED, "calibrated", "coarse+fine - fine"),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "token CLIP, `complement` r^2 = 0.46 with a positive slope (+0.015 top-1 per TPP unit; "
        "the groups span 4.2-6.8); `identity` r^2 = 0.58 with a *negative* slope",
        lambda r: (
            r["tpp_accuracy_r2"][TOKEN]["complement"]["r2"],
            r["tpp_accuracy_r2"][TOKEN]["complement"]["slope"],
            min(g["mean_tpp"]["complement"] for g in r["tpp_groups"][TOKEN].values()),
            max(g["mean_tpp"]["complement"] for g in r["tpp_groups"][TOKEN].values()),
            r["tpp_accuracy_r2"][TOKEN]["identity"]["r2"],
        ),
    ),
    Claim(
        NOTES,
        "`pooled` CLIP: no correlation under either reading (r^2 0.01 and 0.06, slopes "
        "slightly negative)",
        lambda r: tuple(r["tpp_accuracy_r2"][POOLED][k]["r2"] for k in ("complement", "identity")),
    ),
    Claim(
        NOTES,
        "The whole range of top-1 over the groups is small (0.558-0.607 `pooled`, 0.560-0.613 "
        "token) next to the seed intervals (up to ± 0.06)",
        lambda r: (
            tuple(
                f(g["top1"]["mean"] for g in r["tpp_groups"][objective].values())
                for objective in (POOLED, TOKEN)
                for f in (min, max)
            )
            + (
                max(
                    g["top1"]["ci95"] for o in (POOLED, TOKEN) for g in r["tpp_groups"][o].values()
                ),
            )
        ),
    ),
    Claim(
        NOTES,
        "all-faithful is above all-unrelated by +0.028 ± 0.007 and all-near-duplicate by "
        "+0.042 ± 0.019 with the `pooled` CLIP",
        lambda r: faithful_minus(r, POOLED),
        resolved=True,
    ),
    Claim(
        NOTES,
        "with the token CLIP by +0.025 ± 0.076 and +0.040 ± 0.057, not resolved",
        lambda r: faithful_minus(r, TOKEN),
        resolved=False,
    ),
    Claim(
        NOTES,
        "`complement` -0.048 ± 0.014 with the `pooled` CLIP (a real cost",
        lambda r: (r["tpp_choice_minus_faithful"][POOLED]["complement"],),
        resolved=True,
    ),
    Claim(
        NOTES,
        "+0.013 ± 0.038 with the token CLIP (no cost seen; its choice has the highest mean TPP "
        "of all groups and the highest top-1, 0.613); `identity` -0.030 ± 0.037 and -0.040 ± "
        "0.057 (not resolved by 3 seeds)",
        lambda r: (
            r["tpp_choice_minus_faithful"][TOKEN]["complement"],
            max(g["top1"]["mean"] for g in r["tpp_groups"][TOKEN].values()),
            r["tpp_choice_minus_faithful"][POOLED]["identity"],
            r["tpp_choice_minus_faithful"][TOKEN]["identity"],
        ),
        resolved=False,
    ),
    # notes.md, the earlier study's findings on this invocation's numbers
    Claim(
        NOTES,
        "pooled embeddings for 0.911 (`pooled+tokens`) and 0.898 (`pooled`) of frames, chance "
        "0.100; the `pooled` CLIP misses the 0.9 target by 0.002. Word tokens find it for 0.906 "
        "with the token-level objective and only 0.611 without it",
        lambda r: (
            r["frame_caption_accuracy"][TOKEN]["pooled"],
            r["frame_caption_accuracy"][POOLED]["pooled"],
            r["chance"]["frame_caption"],
            0.9,
            0.9 - r["frame_caption_accuracy"][POOLED]["pooled"],
            r["frame_caption_accuracy"][TOKEN]["word_tokens"],
            r["frame_caption_accuracy"][POOLED]["word_tokens"],
        ),
    ),
    Claim(
        NOTES,
        "2-shot with the token CLIP at 0.01, `global` (0.367) and `fine` (0.406) do not beat it "
        "(0.410)",
        lambda r: (
            0.01,
            cell(r, TOKEN, "global", "2shot", "top1")["mean"],
            cell(r, TOKEN, "fine", "2shot", "top1")["mean"],
            r["zero_shot_class_texts"][TOKEN]["seen"],
        ),
    ),
    Claim(
        NOTES,
        "Against the linear probe** (0.585 / 0.590, what bag-of-frames reaches on mean-pooled "
        "features): at tau = 0.01 and 300 steps only `coarse` with the token CLIP gets near it "
        "(0.572 ± 0.056); at the calibrated pair token-CLIP `coarse+fine` reaches it (0.613 ± "
        "0.026, an interval that holds the probe's 0.590)",
        lambda r: (
            r["linear_probe"][POOLED]["test"],
            r["linear_probe"][TOKEN]["test"],
            0.01,
            cell(r, TOKEN, "coarse", "supervised", "top1"),
            cell(r, TOKEN, "coarse+fine", "supervised"),
            r["linear_probe"][TOKEN]["test"],
        ),
    ),
    Claim(
        NOTES,
        "The text-anchored probe (0.595 / 0.575) reaches as much as the free one",
        lambda r: tuple(r["text_anchored_probe"][o]["test"] for o in (POOLED, TOKEN)),
    ),
    Claim(
        NOTES,
        "At tau = 0.01 `global` and `fine` stay far below with the `pooled` CLIP (0.285 and "
        "0.287), and their frame weights land on the video's own action frames *less* often "
        "than uniform weights (0.32 and 0.51 against 0.80); with the token CLIP 0.59 "
        "(`global`), 0.94 (`coarse`) and 0.89 (`fine`). Calibration removes most of the "
        "`pooled` CLIP's gap (`global` 0.487, `fine` 0.508)",
        lambda r: (
            0.01,
            cell(r, POOLED, "global", "supervised", "top1")["mean"],
            cell(r, POOLED, "fine", "supervised", "top1")["mean"],
            r["importance_on_action_frames"][POOLED]["global (coarse)"],
            r["importance_on_action_frames"][POOLED]["fine"],
            r["importance_on_action_frames"][POOLED]["uniform"],
            r["importance_on_action_frames"][TOKEN]["global (coarse)"],
            r["importance_on_action_frames"][TOKEN]["coarse"],
            r["importance_on_action_frames"][TOKEN]["fine"],
            cell(r, POOLED, "global", "supervised")["mean"],
            cell(r, POOLED, "fine", "supervised")["mean"],
        ),
    ),
    Claim(
        NOTES,
        "resolved over `global` and `fine` at 0.01 (paired over seeds; the smallest, token-CLIP "
        "`coarse+fine` over `global`, +0.053 ± 0.019)",
        lambda r: (
            0.01,
            all_resolved(
                [
                    paired(r, objective, (first, 0.01), (second, 0.01))
                    for objective in (POOLED, TOKEN)
                    for first in ("coarse", "coarse+fine")
                    for second in ("global", "fine")
                ]
            ),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "(`coarse+fine` over `fine` +0.050 ± 0.062, not resolved). `fine` is the weakest "
        "zero-shot at 0.01 (0.307 / 0.497 against the frozen 0.690 / 0.900)",
        lambda r: (
            paired(r, POOLED, ("coarse+fine", CALIBRATED), ("fine", CALIBRATED)),
            0.01,
            cell(r, POOLED, "fine", "zero-shot", "top1")["mean"],
            cell(r, TOKEN, "fine", "zero-shot", "top1")["mean"],
            r["zero_shot_class_texts"][POOLED]["unseen"],
            r["zero_shot_class_texts"][TOKEN]["unseen"],
        ),
        resolved=False,
    ),
    Claim(
        NOTES,
        "with the token CLIP at the calibrated pair, `coarse+fine`'s coarse weights put 0.924 "
        "of their mass on the video's own-action frames and its fine weights 0.848 (uniform "
        "weights: 0.802)",
        lambda r: (
            r["importance_on_action_frames_calibrated"][TOKEN]["coarse+fine (coarse)"],
            r["importance_on_action_frames_calibrated"][TOKEN]["coarse+fine (fine)"],
            r["importance_on_action_frames"][TOKEN]["uniform"],
        ),
    ),
    Claim(
        NOTES,
        "`coarse+fine` has its highest mean at 0.1 (0.628 ± 0.068, an interval that holds its "
        "other cells)",
        lambda r: (0.1, r["tau_sweep"][TOKEN]["0.1"]["coarse+fine"]),
    ),
    Claim(
        NOTES,
        "`coarse+fine` is above it by +0.040 ± 0.025 paired over seeds (0.93-0.95 against "
        "0.900: 3 to 5 of the 100 unseen test videos)",
        above_frozen_zero_shot,
        resolved=True,
    ),
    Claim(
        NOTES,
        "`coarse` is not resolved (0.917 ± 0.029)",
        lambda r: (cell(r, TOKEN, "coarse", "zero-shot"),),
    ),
    Claim(
        NOTES,
        "with the `pooled` CLIP `coarse+fine` is below it (-0.087 ± 0.038)",
        lambda r: (
            paired(r, POOLED, ("coarse+fine", CALIBRATED), ("mean", 0.01), "zero_shot_top1"),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "Two temporal layers trained 300 steps on frozen features bring `mean` there (0.52 / "
        "0.48) and token-CLIP `coarse+fine` to 0.54 ± 0.04",
        lambda r: (
            r["temporal"][POOLED]["mean"]["order_only_top1"]["mean"],
            r["temporal"][TOKEN]["mean"]["order_only_top1"]["mean"],
            r["temporal"][TOKEN]["coarse+fine"]["order_only_top1"],
        ),
    ),
    Claim(
        NOTES,
        "what the sub-texts say moves supervised top-1 by at most about 0.05",
        lambda r: (
            max(
                max(tops) - min(tops)
                for tops in (
                    [g["top1"]["mean"] for g in r["tpp_groups"][o].values()]
                    for o in (POOLED, TOKEN)
                )
            ),
        ),
    ),
    Claim(
        NOTES,
        "ends well above the frozen zero-shot on the seen classes and above chance (0.125)",
        lambda r: (r["chance"]["seen"],),
    ),
    Claim(
        NOTES,
        "so its top-1 is exactly the frozen zero-shot (0.150 and 0.410), on every seed, episode "
        "and setting",
        lambda r: tuple(exactly_frozen(r, o) for o in (POOLED, TOKEN)),
    ),
    Claim(
        NOTES,
        "does not beat the frozen `mean` (0.690 / 0.900) beyond its interval at 0.01",
        lambda r: tuple(r["zero_shot_class_texts"][o]["unseen"] for o in (POOLED, TOKEN)) + (0.01,),
    ),
    Claim(
        NOTES,
        "no supervised run at 0.01 exceeds 0.55 top-1 (one 2-shot episode of `coarse` reaches "
        "0.57)",
        lambda r: (0.01, order_only_best(r, "supervised"), order_only_best(r, "2shot")),
    ),
    # docs/design.md, why the temperatures depart from the paper
    Claim(
        DESIGN,
        "the largest of 4 frame weights is then 0.27-0.33 against 0.25 for uniform weights",
        lambda r: (
            min(largest_at_tau_1(r)),
            max(largest_at_tau_1(r)),
            1 / r["calibrated_tau"][TOKEN]["frames"],
        ),
    ),
    Claim(
        NOTES,
        "With 2 temporal layers, `mean` learns (0.578 / 0.555)",
        lambda r: tuple(r["temporal"][o]["mean"]["top1"]["mean"] for o in (POOLED, TOKEN)),
    ),
]


def negated(difference: dict) -> dict:
    """second - first from first - second: the same interval, the other sign."""
    return {**difference, "mean": -difference["mean"]}


# ---------------------------------------------------------------- the checks


def page_text(page: Path) -> str:
    """The page with line breaks and runs of spaces read as one space."""
    return " ".join(page.read_text().split())


def shown_numbers(quote: str) -> list[tuple[str, str | None]]:
    """The quote's decimals in order, each with its half-width where it has one."""
    return [(match.group(1), match.group(2)) for match in NUMBER.finditer(quote)]


def agrees(shown: str, value: float) -> bool:
    """`value` rounded to the digits `shown` has is `shown` (half a last digit of slack, for
    values on a rounding boundary)."""
    digits = len(shown.split(".")[1])
    return abs(float(shown) - value) <= 0.5 * 10**-digits + 1e-9


def resolves(difference: dict) -> bool:
    """A paired difference whose 95% interval excludes 0."""
    return abs(difference["mean"]) > difference["ci95"]


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads((REPO / "docs" / "study" / "results.json").read_text())


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda claim: claim.quote[:50])
def test_each_quoted_number_is_the_results(claim, results):
    assert " ".join(claim.quote.split()) in page_text(claim.page), (
        f"{claim.page.name} no longer says: {claim.quote!r} (update CLAIMS with the findings)"
    )
    shown, values = shown_numbers(claim.quote), claim.values(results)
    assert len(shown) == len(values), f"{len(shown)} numbers in the quote, {len(values)} values"
    for (mean, half_width), value in zip(shown, values):
        if half_width is None:
            value = value["mean"] if isinstance(value, dict) else value
            assert agrees(mean, value), f"{mean} is {value:.4f} in results.json"
            continue
        assert isinstance(value, dict), f"{mean} ± {half_width} needs a spread"
        assert agrees(mean, value["mean"]) and agrees(half_width, value["ci95"]), (
            f"{mean} ± {half_width} is {value['mean']:.4f} ± {value['ci95']:.4f}"
        )
        if mean[0] in "+-":  # a difference
            assert resolves(value) == claim.resolved, (
                f"{mean} ± {half_width}: the text says it is "
                f"{'' if claim.resolved else 'not '}resolved"
            )


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda claim: claim.quote[:50])
def test_every_stated_difference_declares_whether_it_is_resolved(claim):
    """A difference is written with its sign ("+0.027 ± 0.047"); a quote holding one states
    it as resolved ("beats", "above", "falls") or not ("not resolved"), and declares which,
    so that the check above holds every interval to it."""
    if any(mean[0] in "+-" and half_width for mean, half_width in shown_numbers(claim.quote)):
        assert claim.resolved is not None, "a stated difference needs resolved=True or False"
    if "not resolved" in claim.quote or "do not resolve" in claim.quote:
        assert claim.resolved is not True


# Numbers of the findings that are not results of this results.json: the paper's, the
# design's, and the earlier study's (commit b132e96), quoted as they stand on the page.
NOT_THIS_STUDYS = [
    "largest weight over 4 frames: 0.43 coarse, 0.30 fine",
    "most where 0.01 was worst** (paired, calibrated minus 0.01)",
    "2-shot half-width is <= 0.03 at both",
    "The paper's r^2 = 0.79",
    "with both CLIPs at 0.01 (0.59-0.64)",
    "`fine` gains from 0.01 to 0.1",
    "the storyboard modes (0.43-0.515) above `mean` (0.285)",
    "At BIKE's tau = 0.01",
]


def summaries() -> list[tuple[Path, str]]:
    """The text whose every number must be claimed: notes.md's findings and the README's
    summary of the study."""
    notes, readme = page_text(NOTES), page_text(README)
    start = readme.index("What it shows:")
    return [
        (NOTES, notes[notes.index("## Findings") :]),
        (README, readme[start : readme.index("## Commands", start)]),
    ]


def test_every_number_of_the_findings_is_claimed():
    """A number added to the findings (or the README's summary) without a row in `CLAIMS`
    (or, if it is not this study's result, in `NOT_THIS_STUDYS`) fails."""
    for page, text in summaries():
        spans = []
        for quote in [c.quote for c in CLAIMS if c.page == page] + NOT_THIS_STUDYS:
            quote = " ".join(quote.split())
            start = text.find(quote)
            while start >= 0:
                spans.append((start, start + len(quote)))
                start = text.find(quote, start + 1)
        loose = [
            text[max(0, m.start() - 60) : m.end()]
            for m in NUMBER.finditer(text)
            if not any(a <= m.start() < b for a, b in spans)
        ]
        assert not loose, f"{page.name}: numbers no claim checks:\n" + "\n".join(loose)


def test_the_checks_read_numbers_as_the_text_writes_them():
    """A wrong last digit fails; a range's dash is not a minus; a sign and a half-width are
    read with their number."""
    assert agrees("0.613", 0.61333) and not agrees("0.613", 0.6145)
    assert shown_numbers("0.49-0.56 and +0.027 ± 0.047, (-0.008 ± 0.020)") == [
        ("0.49", None),
        ("0.56", None),
        ("+0.027", "0.047"),
        ("-0.008", "0.020"),
    ]
    assert resolves({"mean": 0.023, "ci95": 0.018}) and not resolves({"mean": 0.027, "ci95": 0.047})
