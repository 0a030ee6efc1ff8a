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
from storyworld.study.collect import long_calibration_gains
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
        if run["group"] is not None or run["temporal_layers"] != layers or run["epochs"]:
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


# ---------------------------------------------------------------- the figure parts


def rank_test(r: dict, objective: str, cell_: str, reading: str) -> dict:
    return r["tpp_rank_test"][objective]["cells"][cell_]["tests"][reading]


def keyframe(r: dict, objective: str, cell_: str) -> tuple[dict, float]:
    """Fine minus coarse share per video (spread over seeds) and the share of videos where
    fine is higher."""
    k = r["keyframe"][objective][cell_]
    return k["over_seeds"], k["fine_above_coarse_share"]["mean"]


def group_seeds(r: dict, objective: str, group: str) -> dict[int, float]:
    """{seed: top-1} of the supervised `coarse+fine` runs of one sub-text group at the
    calibrated pair."""
    pair = r["calibrated_tau"][objective]
    return {
        run["seed"]: run["top1"]
        for run in r["runs"]
        if run["objective"] == objective
        and run["group"] == group
        and (run["tau"], run["tau_fine"]) == (pair["coarse"], pair["fine"])
    }


def count_range(r: dict, objective: str) -> tuple[float, float]:
    means = [g["top1"]["mean"] for g in r["subtext_count"][objective].values()]
    return min(means), max(means)


def longer(r: dict, objective: str, tau: str, mode: str) -> dict:
    return r["long_training"][objective][tau][mode]


def long_gain(r: dict, objective: str, mode: str) -> dict:
    return long_calibration_gains(r, objective)[mode]


def highest_supervised(r: dict, objective: str) -> float:
    """The highest supervised mean top-1 of any cell of one CLIP (every length, tau,
    temporal setting)."""
    means = [
        c["supervised"]["mean"]
        for key in ("top1", "top1_calibrated")
        for c in r[key][objective].values()
    ]
    means += [c["mean"] for cells in r["tau_sweep"][objective].values() for c in cells.values()]
    means += [c["top1"]["mean"] for c in r["temporal"][objective].values()]
    means += [
        c["top1"]["mean"]
        for cells in r["long_training"][objective].values()
        for c in cells.values()
    ]
    return max(means)


def both(first: float, second: float) -> float:
    """One number the text gives for two results: both must round to it."""
    assert round(first, 2) == round(second, 2), (first, second)
    return first


def pooled_gains_everywhere(r: dict) -> tuple[dict, dict]:
    """`pooled` `global` and `fine`, calibrated minus 0.01, resolved in every setting; ->
    their supervised gains."""
    for mode in ("global", "fine"):
        all_resolved(
            [gain(r, POOLED, s, mode) for s in ("2shot", "supervised")]
            + [zero_shot_cal(r, POOLED, mode)]
        )
    return gain(r, POOLED, "supervised", "global"), gain(r, POOLED, "supervised", "fine")


# ---------------------------------------------------------------- the claims

TAU = 0.01  # BIKE's tau, the design's default: quoted as a setting, not a result
CLAIMS = [
    # README.md, "What it shows" (the token CLIP at its calibrated pair)
    Claim(
        README,
        "in 2-shot `coarse+fine` is above `global` (+0.078 ± 0.021), `fine` (+0.048 ± 0.014) "
        "and the frozen `mean` (+0.036 ± 0.025)",
        lambda r: tuple(
            fewshot(r, TOKEN, "calibrated", f"coarse+fine - {m}")
            for m in ("global", "fine", "mean")
        ),
        resolved=True,
    ),
    Claim(
        README,
        "but not resolved above `coarse` (+0.016 ± 0.017); supervised, `coarse` and "
        "`coarse+fine` do not differ (-0.006 ± 0.021), and on the unseen classes `coarse+fine` "
        "is not resolved above the frozen CLIP's zero-shot (+0.015 ± 0.026)",
        lambda r: (
            fewshot(r, TOKEN, "calibrated", "coarse+fine - coarse"),
            paired(r, TOKEN, ("coarse+fine", CALIBRATED), ("coarse", CALIBRATED)),
            paired(r, TOKEN, ("coarse+fine", CALIBRATED), ("mean", 0.01), "zero_shot_top1"),
        ),
        resolved=False,
    ),
    Claim(
        README,
        "(Spearman's rho +0.04 over 32 sub-text groups, p = 0.410)",
        lambda r: (
            rank_test(r, TOKEN, "calibrated", "tpp_complement")["rho"],
            rank_test(r, TOKEN, "calibrated", "tpp_complement")["p_one_sided"],
        ),
    ),
    Claim(
        README,
        "(-0.078 ± 0.029 per video)",
        lambda r: keyframe(r, TOKEN, "calibrated")[:1],
        resolved=True,
    ),
    # notes.md, design changes
    Claim(
        NOTES,
        "with that CLIP no cell is resolved lower at the calibrated pair than at 0.01 (the "
        "lowest, `coarse+fine` supervised, is -0.013 ± 0.016, paired over seeds)",
        lambda r: (
            *assert_counts(calibration_gains(r, TOKEN), higher=7, lower=0, of=12),
            TAU,
            gain(r, TOKEN, "supervised", "coarse+fine"),
        ),
        resolved=False,
    ),
    # notes.md, findings: the paper's figures
    Claim(
        NOTES,
        "Spearman's rho of top-1 on mean TPP over 32 random groups is +0.04 (seed bootstrap "
        "-0.14 to +0.10), p = 0.410",
        lambda r: (
            (t := rank_test(r, TOKEN, "calibrated", "tpp_complement"))["rho"],
            *t["ci95"],
            t["p_one_sided"],
        ),
    ),
    Claim(
        NOTES,
        "With the token CLIP no reading and neither of TPP's terms reaches p < 0.05 at either "
        "temperature",
        lambda r: (
            *(
                ()
                for c in r["tpp_rank_test"][TOKEN]["cells"].values()
                for t in c["tests"].values()
                if (assert_(t["p_one_sided"] >= 0.05))
            ),
            0.05,
        ),
    ),
    Claim(
        NOTES,
        "at 0.01 `complement` gives +0.34 (p = 0.028), at its calibrated pair -0.17 (p = "
        "0.832), where `identity` gives +0.49 (p = 0.002) and mean delta -0.58",
        lambda r: (
            TAU,
            rank_test(r, POOLED, "0.01", "tpp_complement")["rho"],
            rank_test(r, POOLED, "0.01", "tpp_complement")["p_one_sided"],
            rank_test(r, POOLED, "calibrated", "tpp_complement")["rho"],
            rank_test(r, POOLED, "calibrated", "tpp_complement")["p_one_sided"],
            rank_test(r, POOLED, "calibrated", "tpp_identity")["rho"],
            rank_test(r, POOLED, "calibrated", "tpp_identity")["p_one_sided"],
            rank_test(r, POOLED, "calibrated", "delta")["rho"],
        ),
    ),
    Claim(
        NOTES,
        "over the 32 groups it spans 0.552-0.604 (token CLIP, calibrated)",
        lambda r: tuple(r["tpp_rank_test"][TOKEN]["cells"]["calibrated"]["top1_range"]),
    ),
    Claim(
        NOTES,
        "r^2 0.14 under `complement` with both CLIPs",
        lambda r: (
            both(
                r["tpp_accuracy_r2"][TOKEN]["complement"]["r2"],
                r["tpp_accuracy_r2"][POOLED]["complement"]["r2"],
            ),
        ),
    ),
    Claim(
        NOTES,
        "2 faithful sub-texts beat 1 by +0.023 ± 0.010",
        lambda r: (
            paired_difference(
                group_seeds(r, TOKEN, "faithful-n2"), group_seeds(r, TOKEN, "faithful-n1")
            ),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "more add nothing resolved (6 against 4: +0.006 ± 0.008)",
        lambda r: (
            paired_difference(
                group_seeds(r, TOKEN, "faithful-n6"), group_seeds(r, TOKEN, "faithful-n4")
            ),
        ),
        resolved=False,
    ),
    Claim(
        NOTES,
        "top-1 stays within 0.577-0.587 for every N",
        lambda r: count_range(r, POOLED),
    ),
    Claim(
        NOTES,
        "fine minus coarse -0.078 ± 0.029 (fine higher on 0.15 of the videos)",
        lambda r: keyframe(r, TOKEN, "calibrated"),
        resolved=True,
    ),
    Claim(
        NOTES,
        "at 0.01 -0.013 ± 0.081 (not resolved)",
        lambda r: (TAU, keyframe(r, TOKEN, "0.01")[0]),
        resolved=False,
    ),
    Claim(
        NOTES,
        "(+0.081 ± 0.020, fine higher on 0.61 of the videos) and contradicts it at 0.01 "
        "(-0.387 ± 0.031)",
        lambda r: (*keyframe(r, POOLED, "calibrated"), TAU, keyframe(r, POOLED, "0.01")[0]),
        resolved=True,
    ),
    Claim(
        NOTES,
        "the loss still fell by up to 6% over the last fifth",
        lambda r: (
            *(
                ()
                for cells in r["long_training"].values()
                for c in cells.values()
                for m in c.values()
                if assert_(-0.065 < m["loss_change_last_fifth"]["mean"] <= 0.0005)
            ),
        ),
    ),
    Claim(
        NOTES,
        "Token-CLIP `coarse+fine` gains +0.036 ± 0.012 at the calibrated pair and +0.034 ± "
        "0.030 at 0.01",
        lambda r: (
            longer(r, TOKEN, "calibrated", "coarse+fine")["longer_minus_design"],
            longer(r, TOKEN, "0.01", "coarse+fine")["longer_minus_design"],
            TAU,
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "resolved only for `global` with the token CLIP (+0.038 ± 0.006) and for `global` "
        "(+0.187 ± 0.013) and `fine` (+0.239 ± 0.012) with the `pooled` CLIP",
        lambda r: (
            long_gain(r, TOKEN, "global"),
            long_gain(r, POOLED, "global"),
            long_gain(r, POOLED, "fine"),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "`coarse+fine` with the `pooled` CLIP is lower at the calibrated pair (-0.030 ± 0.028)",
        lambda r: (long_gain(r, POOLED, "coarse+fine"),),
        resolved=True,
    ),
    Claim(
        NOTES,
        "(`coarse+fine` -0.010 ± 0.050)",
        lambda r: (
            *(
                ()
                for m in ("coarse", "fine", "coarse+fine")
                if assert_(not resolves(long_gain(r, TOKEN, m)))
            ),
            long_gain(r, TOKEN, "coarse+fine"),
        ),
        resolved=False,
    ),
    Claim(
        NOTES,
        "`coarse+fine` at tau = 0.1 with the `pooled` CLIP, 0.652 ± 0.011",
        lambda r: (
            0.1,
            assert_returns(
                longer(r, POOLED, "0.1", "coarse+fine")["top1"],
                lambda c: c["mean"] == highest_supervised(r, POOLED),
            ),
        ),
    ),
    Claim(
        NOTES,
        "the same runs (0.642 ± 0.010) and `coarse+fine` with 2 temporal layers (0.643 ± "
        "0.072) are the highest",
        lambda r: (
            longer(r, TOKEN, "0.1", "coarse+fine")["top1"],
            assert_returns(
                r["temporal"][TOKEN]["coarse+fine"]["top1"],
                lambda c: c["mean"] == highest_supervised(r, TOKEN),
            ),
        ),
    ),
    # notes.md, findings: the mode grid
    Claim(
        NOTES,
        "tau_coarse = 0.133 and tau_fine = 0.422 for the token CLIP, 0.42 and 1.78 for the "
        "`pooled` one",
        lambda r: (
            r["calibrated_tau"][TOKEN]["coarse"],
            r["calibrated_tau"][TOKEN]["fine"],
            r["calibrated_tau"][POOLED]["coarse"],
            r["calibrated_tau"][POOLED]["fine"],
        ),
    ),
    Claim(
        NOTES,
        "(0.587 of test frames find their caption by word tokens, against 0.902 for the token "
        "CLIP)",
        lambda r: (
            r["frame_caption_accuracy"][POOLED]["word_tokens"],
            r["frame_caption_accuracy"][TOKEN]["word_tokens"],
        ),
    ),
    Claim(
        NOTES,
        "Calibrated against 0.01 (300 steps).** Token CLIP: supervised `global` +0.022 ± 0.004 "
        "and `fine` +0.065 ± 0.005 are resolved",
        lambda r: (
            TAU,
            gain(r, TOKEN, "supervised", "global"),
            gain(r, TOKEN, "supervised", "fine"),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "`coarse` +0.018 ± 0.023 and `coarse+fine` -0.013 ± 0.016 are not",
        lambda r: (
            gain(r, TOKEN, "supervised", "coarse"),
            gain(r, TOKEN, "supervised", "coarse+fine"),
        ),
        resolved=False,
    ),
    Claim(
        NOTES,
        "zero-shot `fine` rises by +0.267 ± 0.024 and `coarse+fine` by +0.152 ± 0.035 (0.758 "
        "to 0.910)",
        lambda r: (
            zero_shot_cal(r, TOKEN, "fine"),
            zero_shot_cal(r, TOKEN, "coarse+fine"),
            cell(r, TOKEN, "coarse+fine", "zero-shot", "top1"),
            cell(r, TOKEN, "coarse+fine", "zero-shot"),
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "(supervised +0.179 ± 0.030 and +0.246 ± 0.026)",
        pooled_gains_everywhere,
        resolved=True,
    ),
    Claim(
        NOTES,
        "`coarse+fine` is above `global` by +0.078 ± 0.021, `fine` by +0.048 ± 0.014 and the "
        "frozen `mean` by +0.036 ± 0.025",
        lambda r: tuple(
            fewshot(r, TOKEN, "calibrated", f"coarse+fine - {m}")
            for m in ("global", "fine", "mean")
        ),
        resolved=True,
    ),
    Claim(
        NOTES,
        "over `coarse` +0.016 ± 0.017 is not resolved",
        lambda r: (fewshot(r, TOKEN, "calibrated", "coarse+fine - coarse"),),
        resolved=False,
    ),
    Claim(
        NOTES,
        "Supervised, `coarse` (0.590) and `coarse+fine` (0.584) do not differ (-0.006 ± 0.021)",
        lambda r: (
            cell(r, TOKEN, "coarse", "supervised"),
            cell(r, TOKEN, "coarse+fine", "supervised"),
            paired(r, TOKEN, ("coarse+fine", CALIBRATED), ("coarse", CALIBRATED)),
        ),
        resolved=False,
    ),
    Claim(
        NOTES,
        "on the unseen classes `coarse+fine` is not resolved above the frozen zero-shot "
        "(+0.015 ± 0.026)",
        lambda r: (
            paired(r, TOKEN, ("coarse+fine", CALIBRATED), ("mean", 0.01), "zero_shot_top1"),
        ),
        resolved=False,
    ),
    Claim(
        NOTES,
        "`global` is below `mean` in 2-shot (-0.042 ± 0.019)",
        lambda r: (fewshot(r, TOKEN, "calibrated", "global - mean"),),
        resolved=True,
    ),
    Claim(
        NOTES,
        "exactly the frozen zero-shot (0.444 token CLIP, 0.187 `pooled`) on every seed, "
        "episode and length",
        lambda r: (exactly_frozen(r, TOKEN), exactly_frozen(r, POOLED)),
    ),
    Claim(
        NOTES,
        "The linear probe on mean-pooled frames reaches 0.612 / 0.586",
        lambda r: (r["linear_probe"][TOKEN]["test"], r["linear_probe"][POOLED]["test"]),
    ),
    Claim(
        NOTES,
        "With 2 temporal layers `mean` reaches 0.591 ± 0.037 (token CLIP) and `coarse+fine` "
        "0.643 ± 0.072",
        lambda r: (
            r["temporal"][TOKEN]["mean"]["top1"],
            r["temporal"][TOKEN]["coarse+fine"]["top1"],
        ),
    ),
    Claim(
        NOTES,
        "they score 0.532 ± 0.018 and 0.526 ± 0.046, no better than `coarse` without them "
        "(0.526 ± 0.007)",
        lambda r: (
            r["temporal"][TOKEN]["mean"]["order_only_top1"],
            r["temporal"][TOKEN]["coarse+fine"]["order_only_top1"],
            r["order_only_top1"][TOKEN]["coarse"],
        ),
    ),
    # docs/design.md
    Claim(
        DESIGN,
        "the largest of 4 frame weights is then 0.27-0.33 against 0.25 for uniform weights",
        lambda r: (
            min(largest_at_tau_1(r)),
            max(largest_at_tau_1(r)),
            1 / r["calibrated_tau"][TOKEN]["frames"],
        ),
    ),
]


def assert_(condition: bool) -> bool:
    """An assertion usable inside a claim's expression; -> False (adds no value)."""
    assert condition
    return False


def assert_returns(value, check: Callable) -> object:
    assert check(value), value
    return value


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
    "After 900 steps, calibrated minus 0.01",
    "tokens make 0.01 near one-hot",
]


def summaries() -> list[tuple[Path, str]]:
    """The text whose every number must be claimed: notes.md's findings and the README's
    summary of the study."""
    notes, readme = page_text(NOTES), page_text(README)
    start = readme.index("What it shows")
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
