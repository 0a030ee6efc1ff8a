"""The sub-text groups of the study's TPP test (the paper's Fig. 2(b) in the world).

Each group is a rule fixed in advance that picks, for every class, one set of sub-texts
from a pool built from the world's actions: the shipped faithful, unrelated and
near-duplicate sets (`data/world/candidates.json`), TPP's choice among them under each
reading of alpha/beta, and mixtures of the faithful and unrelated sets (a share of the
classes faithful; sets with k of N items faithful). Pure: names and texts in, sets out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SET_KINDS = ("faithful", "unrelated", "near-duplicate")  # the order of the shipped sets
TPP_SCALINGS = ("complement", "identity")
MAIN_GROUP = "tpp-complement"  # the main runs' sub-texts: TPP's choice, default reading


def group_names(shares: Sequence[float], items: int) -> list[str]:
    """Every group, in the order of the report."""
    return [
        *SET_KINDS,
        *(f"tpp-{s}" for s in TPP_SCALINGS),
        *(f"faithful-{round(100 * share)}%" for share in shares),
        *(f"{k}-of-{items}-faithful" for k in range(1, items)),
    ]


def faithful_classes(classes: Sequence[str], share: float, seed: int) -> set[str]:
    """The round(share * C) classes that keep their faithful set: the first of one seeded
    permutation of the classes, so a larger share keeps every class of a smaller one."""
    order = np.random.default_rng(seed).permutation(len(classes))
    return {classes[i] for i in order[: round(share * len(classes))]}


def k_faithful(faithful: list[str], unrelated: list[str], k: int, rng_key: list[int]) -> list[str]:
    """k items of the faithful set (chosen by one seeded permutation per class, so the
    k items are among the k + 1 items) and the first N - k of the unrelated set."""
    order = np.random.default_rng(rng_key).permutation(len(faithful))
    return [faithful[i] for i in sorted(order[:k])] + unrelated[: len(faithful) - k]


def group_sets(
    classes: Sequence[str],
    shipped: dict[str, list[list[str]]],
    kept: dict[str, dict[str, str]],
    shares: Sequence[float],
    seed: int,
) -> dict[str, dict[str, list[str]]]:
    """{group: {class: its sub-texts}} for the `classes`, from the shipped sets ({class:
    [faithful, unrelated, near-duplicate]}) and the kind TPP keeps per reading ({reading:
    {class: kind}})."""
    if not classes:
        raise ValueError("TPP groups need at least one class")
    items = len(shipped[classes[0]][0])

    def kind(name: str, c: str) -> list[str]:
        return list(shipped[c][SET_KINDS.index(name)])

    groups: dict[str, dict[str, list[str]]] = {
        k: {c: kind(k, c) for c in classes} for k in SET_KINDS
    }
    for scaling in TPP_SCALINGS:
        groups[f"tpp-{scaling}"] = {c: kind(kept[scaling][c], c) for c in classes}
    for share in shares:
        chosen = faithful_classes(classes, share, seed)
        groups[f"faithful-{round(100 * share)}%"] = {
            c: kind("faithful" if c in chosen else "unrelated", c) for c in classes
        }
    for k in range(1, items):
        groups[f"{k}-of-{items}-faithful"] = {
            c: k_faithful(kind("faithful", c), kind("unrelated", c), k, [seed, i])
            for i, c in enumerate(classes)
        }
    return {name: groups[name] for name in group_names(shares, items)}


def random_group_name(index: int) -> str:
    return f"random-{index:02d}"


def random_groups(
    pools: dict[str, dict[str, list[str]]], count: int, items: int, seed: int
) -> dict[str, dict[str, list[str]]]:
    """`count` groups whose TPP varies continuously (the paper's Fig. 2(b)): group
    g draws pool weights from a flat Dirichlet over `SET_KINDS` (one seeded generator per
    group), then each of a class's `items` sub-texts picks a kind by those weights and a
    not yet chosen item of that kind's pool (a kind whose pool is spent passes to the next
    kind). A group equal to an earlier one, class for class, is drawn again with the next
    key. `pools`: {class: {kind: items}}. -> {`random_group_name(g)`: {class: sub-texts}}."""
    groups: dict[str, dict[str, list[str]]] = {}
    seen: set[tuple] = set()
    key = 0
    while len(groups) < count:
        rng = np.random.default_rng([seed, key])
        key += 1
        weights = rng.dirichlet(np.ones(len(SET_KINDS)))
        sets = {c: _draw_items(pool, weights, items, rng) for c, pool in pools.items()}
        signature = tuple(frozenset(texts) for texts in sets.values())
        if signature not in seen:
            seen.add(signature)
            groups[random_group_name(len(groups))] = sets
    return groups


def _draw_items(
    pool: dict[str, list[str]], weights: np.ndarray, items: int, rng: np.random.Generator
) -> list[str]:
    chosen: list[str] = []
    for _ in range(items):
        start = int(rng.choice(len(SET_KINDS), p=weights))
        for step in range(len(SET_KINDS)):
            kind = SET_KINDS[(start + step) % len(SET_KINDS)]
            candidates = [t for t in pool[kind] if t not in chosen]
            if candidates:
                chosen.append(candidates[int(rng.integers(len(candidates)))])
                break
    if len(chosen) < items:
        raise ValueError(f"the pools hold fewer than {items} distinct sub-texts")
    return chosen


def count_group_name(n: int) -> str:
    return f"faithful-n{n}"


def count_groups(
    faithful: dict[str, list[str]], counts: Sequence[int]
) -> dict[str, dict[str, list[str]]]:
    """Sub-text sets of N faithful items per class for each N of `counts` (the paper's
    Fig. 2(a)): the first N of the class's faithful pool (ordered so that they cover its
    actions evenly), so a larger N keeps every item of a smaller one."""
    short = [c for c, pool in faithful.items() if len(pool) < max(counts)]
    if short:
        raise ValueError(f"faithful pools shorter than {max(counts)} items: {short}")
    return {count_group_name(n): {c: pool[:n] for c, pool in faithful.items()} for n in counts}
