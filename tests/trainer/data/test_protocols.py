from pathlib import Path

import numpy as np
import pytest

from storyboard_common.errors import UserError
from trainer.data.items import Segment, SplitList, VideoItem
from trainer.data.protocols import (
    fewshot_items,
    half_class_splits,
    load_item_list,
    repeat_factor,
    restrict_classes,
    save_item_list,
)


def make_split(per_class=(5, 6, 7), shuffled=False) -> SplitList:
    items = [
        VideoItem(Path(f"/v/c{c}/v{c}_{i}.avi"), f"v{c}_{i}", (c,))
        for c, n in enumerate(per_class)
        for i in range(n)
    ]
    if shuffled:
        items = [items[i] for i in np.random.default_rng(5).permutation(len(items))]
    return SplitList("toy", "train", 1, ("a", "b", "c"), tuple(items))


def test_fewshot_is_identical_across_ranks_and_differs_across_seeds():
    # Two simulated DDP ranks build the split independently (here: in another file order).
    rank0 = fewshot_items(make_split(), shots=2, seed=7)
    rank1 = fewshot_items(make_split(shuffled=True), shots=2, seed=7)
    assert [it.video_id for it in rank0] == [it.video_id for it in rank1]
    assert [it.label for it in rank0] == [0, 0, 1, 1, 2, 2]
    assert len({it.video_id for it in rank0}) == 6
    other = fewshot_items(make_split(), shots=2, seed=8)
    assert [it.video_id for it in other] != [it.video_id for it in rank0]


def test_fewshot_errors():
    with pytest.raises(UserError, match=r"fewer videos: a \(5\)"):
        fewshot_items(make_split(), shots=6, seed=0)
    multi = SplitList("charades", "train", None, ("a",), (), multi_label=True)
    with pytest.raises(UserError, match="multi-label"):
        fewshot_items(multi, 2, 0)


def test_saved_list_round_trip_and_unknown_ids(tmp_path):
    split = make_split()
    chosen = fewshot_items(split, 2, 0)
    save_item_list(chosen, tmp_path / "fewshot.csv")
    assert load_item_list(tmp_path / "fewshot.csv", split) == chosen
    (tmp_path / "bad.csv").write_text("video_id,path,labels\nnope,/x,0\n")
    with pytest.raises(UserError, match="not in toy train: nope"):
        load_item_list(tmp_path / "bad.csv", split)


def test_repeat_factor_matches_the_full_epoch():
    assert repeat_factor(2 * 51, 3570) == 35  # HMDB-51 2-shot vs its split-1 train list
    assert repeat_factor(100, 50) == 1


def test_half_class_splits_are_seeded_halves():
    halves = half_class_splits(51, 10, seed=3)
    assert len(halves) == 10 and all(len(h) == 25 for h in halves)
    assert all((np.diff(h) > 0).all() and h.max() < 51 for h in halves)
    assert len({tuple(h) for h in halves}) == 10
    again = half_class_splits(51, 10, seed=3)
    assert all((a == b).all() for a, b in zip(halves, again))
    assert any((a != b).any() for a, b in zip(halves, half_class_splits(51, 10, seed=4)))


def test_restrict_classes_relabels_items_and_segments():
    items = (
        VideoItem(Path("/a"), "a", (0, 2), (Segment(0, 0, 1), Segment(2, 1, 2))),
        VideoItem(Path("/b"), "b", (1,), (Segment(1, 0, 1),)),
    )
    split = SplitList("x", "test", None, ("p", "q", "r"), items, multi_label=True)
    half = restrict_classes(split, [2, 0])
    assert half.class_names == ("r", "p")
    assert [it.video_id for it in half.items] == ["a"]
    assert half.items[0].labels == (1, 0)
    assert [s.class_id for s in half.items[0].segments] == [1, 0]
