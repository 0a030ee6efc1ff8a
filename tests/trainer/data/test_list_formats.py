"""The field's list files read as published by `--dataset list` with `--train-list`,
`--test-list` and `--class-list`: mmaction2's video and rawframe lists with its
`label_map.txt`, ViFi-CLIP's `id,name` label csv with a few-shot subset as the train list,
BIKE's frame-folder lists; written here in miniature."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storyboard_common.errors import UserError
from testkit.cli import run_app
from testkit.list_runs import CLASSES, run_config
from testkit.videos import write_frame_folder, write_video
from trainer.__main__ import app
from trainer.config import absolute_paths
from trainer.data.layouts import ListFiles, available_splits, load_split
from trainer.data.prepare import annotation_files

HMDB = ("brush_hair", "cartwheel", "catch")


@pytest.fixture()
def mmaction_root(tmp_path):
    """mmaction2's HMDB-51 layout: `videos/<class>/<name>.avi`, the split lists under
    `annotations/` (`path label`, labels as ids) and `label_map.txt` (line i = class i)."""
    root = tmp_path / "hmdb51"
    (root / "annotations").mkdir(parents=True)
    (root / "label_map.txt").write_text("\n".join(HMDB) + "\n")
    train, test = [], []
    for c, name in enumerate(HMDB):
        for i in range(2):
            rel = f"{name}/{name}_v{i}.avi"
            write_video(root / "videos" / rel, frames=8, width=32, height=24)
            (train if i == 0 else test).append(f"{rel} {c}")
    (root / "annotations" / "hmdb51_train_split_1_videos.txt").write_text("\n".join(train))
    (root / "annotations" / "hmdb51_val_split_1_videos.txt").write_text("\n".join(test) + "\n")
    return root


MMACTION = ListFiles(
    "annotations/hmdb51_train_split_1_videos.txt",
    "annotations/hmdb51_val_split_1_videos.txt",
    "label_map.txt",
)


def test_mmaction2_video_lists_and_label_map_read_unedited(mmaction_root):
    videos = mmaction_root / "videos"
    train = load_split("list", mmaction_root, "train", None, videos, lists=MMACTION)
    test = load_split("list", mmaction_root, "test", None, videos, lists=MMACTION)
    assert train.class_names == HMDB  # label_map.txt: line i is class i
    assert [(it.video_id, it.labels) for it in train.items] == [
        ("brush_hair/brush_hair_v0", (0,)),
        ("cartwheel/cartwheel_v0", (1,)),
        ("catch/catch_v0", (2,)),
    ]
    assert [it.labels for it in test.items] == [(0,), (1,), (2,)]
    assert test.items[2].path == videos.resolve() / "catch" / "catch_v1.avi"
    # the defaults are not there: without the flags, the split is absent
    assert available_splits("list", mmaction_root, videos) == available_splits("list")
    assert available_splits("list", mmaction_root, videos, MMACTION) == [
        ("train", None),
        ("test", None),
    ]


def test_check_data_reads_mmaction2_lists_through_the_flags(mmaction_root):
    flags = [
        "--train-list",
        MMACTION.train,
        "--test-list",
        MMACTION.test,
        "--class-list",
        MMACTION.classes,
    ]
    args = ["--dataset", "list", "--root", mmaction_root, "--videos", mmaction_root / "videos"]
    code, out, error = run_app(app, "check-data", *args, *flags, "--json", "--workers", "1")
    assert (code, error) == (0, None)
    report = json.loads(out)
    assert report["splits"] == {"train": 3, "test": 3} and report["classes"] == 3
    assert report["missing_splits"] == ["val"]

    gone = [*flags[:2], *flags[4:], "--test-list", "gone.txt"]
    code, out, error = run_app(app, "check-data", *args, *gone, "--workers", "1")
    assert (code, error) == (0, None) and "test: gone.txt not found, skipped" in out
    with pytest.raises(UserError) as refused:  # where a run needs it
        load_split(
            "list", mmaction_root, "test", lists=ListFiles(None, "gone.txt", "label_map.txt")
        )
    assert str(refused.value) == (
        f"list file not found: {mmaction_root.resolve() / 'gone.txt'}; --root must hold "
        "classes.csv (`id,name`) and the list files train.txt, val.txt, test.txt, or "
        "--test-list names it (lines `relative/path label[,label...]`)."
    )


def test_mmaction2_and_bike_rawframe_lists(tmp_path):
    """`folder total_frames label` lines over frame folders, the lists and label map given
    by absolute paths outside the root (read where they are)."""
    root = tmp_path / "rawframes"
    for name, frames in (("brush_hair/a", 9), ("cartwheel/b", 8), ("catch/c", 10)):
        write_frame_folder(root / name, frames=frames, width=32, height=24, fps=None)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "label_map_hmdb.txt").write_text("brush_hair\ncartwheel\ncatch\n")
    (lists / "train_rgb_split_1.txt").write_text("brush_hair/a 9 0\ncartwheel/b 8 1\n")
    (lists / "val_rgb_split_1.txt").write_text("catch/c 10 2\n")
    files = ListFiles(
        lists / "train_rgb_split_1.txt", lists / "val_rgb_split_1.txt", lists / "label_map_hmdb.txt"
    )
    train = load_split("list", root, "train", None, lists=files)
    test = load_split("list", root, "test", None, lists=files)
    assert [(it.path, it.labels) for it in train.items] == [
        (root.resolve() / "brush_hair" / "a", (0,)),
        (root.resolve() / "cartwheel" / "b", (1,)),
    ]
    assert [(it.video_id, it.labels) for it in test.items] == [("catch/c", (2,))]


def test_vificlip_label_csv_and_a_few_shot_list_as_the_train_list(tmp_path):
    """ViFi-CLIP's `id,name` label csv and lists of bare file names (`<name>.avi 20`), read
    from a flat folder of links to HMDB-51's class folders; its few-shot list is the train
    list's lines for K videos a class, passed as --train-list."""
    root = tmp_path / "hmdb51"
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in HMDB:
        for i in range(3):
            video = root / name / f"{name}_v{i}.avi"
            video.parent.mkdir(parents=True, exist_ok=True)
            video.touch()
            (flat / video.name).symlink_to(video)
    (root / "labels").mkdir()
    (root / "labels" / "hmdb_51_labels.csv").write_text(
        "id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(HMDB))
    )
    (root / "splits").mkdir()
    lines = [f"{n}_v{i}.avi {c}" for c, n in enumerate(HMDB) for i in range(3)]
    (root / "splits" / "val1.txt").write_text("\n".join(lines) + "\n")
    (root / "splits" / "train1_few_shot_2.txt").write_text(
        "\n".join(line for line in lines if "_v2." not in line) + "\n"
    )
    files = ListFiles(
        "splits/train1_few_shot_2.txt", "splits/val1.txt", "labels/hmdb_51_labels.csv"
    )
    train = load_split("list", root, "train", None, flat, lists=files)
    assert train.class_names == HMDB and not train.missing
    counts = [sum(it.labels == (c,) for it in train.items) for c in range(3)]
    assert counts == [2, 2, 2]
    assert train.items[0].path == flat.resolve() / "brush_hair_v0.avi"
    assert len(load_split("list", root, "test", None, flat, lists=files).items) == 9


def test_label_map_names_a_label_that_is_not_an_id(mmaction_root):
    (mmaction_root / "label_map.txt").write_text("brush_hair\ncartwheel\n")  # one class short
    with pytest.raises(UserError, match=r"line 3: label '2' is neither a name nor an id in .*"):
        load_split("list", mmaction_root, "train", None, mmaction_root / "videos", lists=MMACTION)


def test_a_run_records_its_list_files_from_its_root(tmp_path):
    """Relative list files are the root's, recorded absolute, so eval and --resume find them
    from any folder; an absolute one stays as given."""
    root = tmp_path / "data"
    root.mkdir()
    elsewhere = tmp_path / "labels.txt"
    cfg = absolute_paths(
        run_config(
            {"root": root, "subtexts": None, "ckpt": "none"},
            tmp_path / "run",
            train_list=Path("annotations/train.txt"),
            class_list=elsewhere,
        )
    )
    assert cfg.train_list == root.resolve() / "annotations" / "train.txt"
    assert cfg.class_list == elsewhere.resolve() and cfg.test_list is None


def test_prepare_copies_the_list_files_under_the_root(mmaction_root, tmp_path):
    outside = tmp_path / "test.txt"
    outside.write_text("x 0\n")
    files = ListFiles(MMACTION.train, outside, MMACTION.classes)
    assert annotation_files("list", mmaction_root, files) == [
        "annotations/hmdb51_train_split_1_videos.txt",
        "label_map.txt",
    ]


def test_a_run_and_its_eval_on_mmaction2_lists(world, tmp_path):
    """The tiny world's videos under mmaction2's list files: a run trains, records the
    lists, and `eval` of the run finds them without flags."""
    from trainer.evaluation import evaluate_checkpoint
    from trainer.training import train_folds

    root = tmp_path / "mm"
    root.mkdir()
    (root / "label_map.txt").write_text("\n".join(CLASSES) + "\n")
    for split, name in (("train", "world_train_list_videos.txt"), ("test", "world_val.txt")):
        (root / name).write_text((world["root"] / f"{split}.txt").read_text())
    cfg = run_config(
        world,
        tmp_path / "run",
        root=root,
        videos=world["root"],
        train_list=Path("world_train_list_videos.txt"),
        test_list=Path("world_val.txt"),
        class_list=Path("label_map.txt"),
    )
    result = train_folds(cfg, show_progress=False)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["test_list"] == str(root.resolve() / "world_val.txt")
    again = evaluate_checkpoint(tmp_path / "run", device="cpu", workers=0, show_progress=False)
    assert again["n"] == result["n"] == 3 and again["top1"] == pytest.approx(result["top1"])

    (root / "world_val.txt").rename(root / "moved_val.txt")
    with pytest.raises(UserError) as refused:
        evaluate_checkpoint(tmp_path / "run", device="cpu", workers=0, show_progress=False)
    assert str(refused.value) == (
        f"the run's recorded --test-list {root.resolve() / 'world_val.txt'} no longer exists; "
        "pass --test-list FILE (where the test list is now)."
    )
    moved = evaluate_checkpoint(
        tmp_path / "run", device="cpu", workers=0, show_progress=False, test_list="moved_val.txt"
    )
    assert moved["top1"] == pytest.approx(result["top1"])


def test_a_prepared_copy_of_mmaction2_lists_reads_with_the_same_flags(mmaction_root, tmp_path):
    from trainer.data.prepare import prepare_videos

    out = tmp_path / "frames"
    videos = mmaction_root / "videos"
    summary = prepare_videos(
        "list",
        mmaction_root,
        out,
        videos,
        workers=1,
        show_progress=False,
        to="frames",
        lists=MMACTION,
    )
    assert sorted(summary.annotation_files) == [
        "annotations/hmdb51_train_split_1_videos.txt",
        "annotations/hmdb51_val_split_1_videos.txt",
        "label_map.txt",
    ]
    source = load_split("list", mmaction_root, "test", None, videos, lists=MMACTION)
    copy = load_split("list", out, "test", lists=MMACTION)
    assert len(source.items) == 3 and not copy.missing
    assert [it.video_id for it in copy.items] == [it.video_id for it in source.items]
    assert all(it.path.is_dir() and it.path.is_relative_to(out) for it in copy.items)
