"""The official dataset layouts, read from miniature copies built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from storyboard_common.classes import load_classes
from storyboard_common.errors import UserError
from testkit.videos import write_frame_folder, write_video
from trainer.data.items import Segment
from trainer.data.layouts import (
    DATASETS,
    absent_files,
    available_splits,
    charades,
    hmdb51,
    kinetics,
    load_split,
    ucf101,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def tiny_video(path: Path) -> Path:
    return write_video(path, frames=8, width=32, height=24)


# --- HMDB-51 -------------------------------------------------------------------------------

HMDB_CLASSES = ("brush_hair", "cartwheel", "catch")  # the first three shipped classes
# tags of videos v0..v3 of every class, per fold: 1 = train, 2 = test, 0 = unused
HMDB_TAGS = {1: (1, 1, 2, 0), 2: (2, 1, 1, 1), 3: (1, 2, 0, 2)}


@pytest.fixture()
def hmdb_root(tmp_path):
    root = tmp_path / "hmdb51"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for name in HMDB_CLASSES:
        for i in range(4):
            video = root / name / f"{name}_v{i}.avi"
            tiny_video(video) if (name, i) == ("brush_hair", 0) else touch(video)
        for fold, tags in HMDB_TAGS.items():
            lines = "".join(f"{name}_v{i}.avi {tag} \n" for i, tag in enumerate(tags))
            (splits / f"{name}_test_split{fold}.txt").write_text(lines)
    return root


def test_hmdb51_folds_and_tags(hmdb_root):
    counts = {}
    for fold in (1, 2, 3):
        for split, tag in (("train", 1), ("test", 2)):
            result = hmdb51.load(hmdb_root, split, fold, class_names=HMDB_CLASSES)
            expected = [
                (c, f"{name}_v{i}")
                for c, name in enumerate(HMDB_CLASSES)
                for i, t in enumerate(HMDB_TAGS[fold])
                if t == tag
            ]
            assert [(it.label, it.video_id) for it in result.items] == expected
            assert result.class_names == HMDB_CLASSES and not result.multi_label
            assert result.split == split and result.fold == fold and result.dataset == "hmdb51"
            assert all(it.path.is_absolute() and it.path.is_file() for it in result.items)
            counts[split, fold] = len(result)
    assert counts == {
        ("train", 1): 6,
        ("test", 1): 3,
        ("train", 2): 9,
        ("test", 2): 3,
        ("train", 3): 3,
        ("test", 3): 6,
    }
    first = hmdb51.load(hmdb_root, "train", 1, class_names=HMDB_CLASSES).items[0]
    assert first.path == hmdb_root.resolve() / "brush_hair" / "brush_hair_v0.avi"


def test_hmdb51_missing_videos_and_mistakes(hmdb_root, tmp_path):
    (hmdb_root / "cartwheel" / "cartwheel_v1.avi").unlink()
    result = hmdb51.load(hmdb_root, "train", 1, class_names=HMDB_CLASSES)
    assert result.missing == ("cartwheel/cartwheel_v1.avi",) and len(result) == 5

    # the shipped list has 51 classes: the first one absent from the miniature is named
    with pytest.raises(UserError, match=r"split file not found: .*chew_test_split1\.txt"):
        load_split("hmdb51", hmdb_root)
    assert len(load_classes("hmdb51")) == 51

    (hmdb_root / "testTrainMulti_7030_splits" / "dance_test_split2.txt").write_text("x.avi 1\n")
    with pytest.raises(UserError, match="not HMDB-51 classes: dance"):
        hmdb51.load(hmdb_root, "train", 2, class_names=HMDB_CLASSES)
    with pytest.raises(UserError, match=r"class folder not found: .*brush_hair"):
        hmdb51.load(hmdb_root, "train", 1, videos=tmp_path, class_names=HMDB_CLASSES)
    with pytest.raises(UserError, match="--split 'val' does not exist for HMDB-51"):
        hmdb51.load(hmdb_root, "val", 1, class_names=HMDB_CLASSES)
    with pytest.raises(UserError, match="--fold 4 does not exist"):
        load_split("hmdb51", hmdb_root, fold=4)
    with pytest.raises(UserError, match="split folder not found"):
        load_split("hmdb51", tmp_path)


# --- UCF-101 -------------------------------------------------------------------------------


@pytest.fixture()
def ucf_root(tmp_path):
    root = tmp_path / "UCF-101"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    # lines out of order: ids come from the indices
    (lists / "classInd.txt").write_text("3 YoYo\r\n1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")
    tiny_video(root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi")
    touch(root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    # the release's folder is HandstandPushups, its files v_HandStandPushups_*
    touch(root / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi")
    touch(root / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi")
    touch(root / "YoYo" / "v_YoYo_g01_c01.avi")
    touch(root / "YoYo" / "v_YoYo_g08_c01.avi")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n"
        "HandStandPushups/v_HandstandPushups_g08_c01.avi 2\r\n"
        "YoYo/v_YoYo_g08_c01.avi 3\r\n"
        "YoYo/v_YoYo_g09_c01.avi 3\r\n"
    )
    (lists / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
        "HandStandPushups/v_HandStandPushups_g01_c01.avi\n"
        "YoYo/v_YoYo_g01_c01.avi\n"
    )
    (lists / "trainlist02.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\nYoYo/v_YoYo_g01_c01.avi 3\n"
    )
    (lists / "testlist02.txt").write_text("HandstandPushups/v_HandStandPushups_g08_c01.avi\n")
    return root


def test_ucf101_lists_ids_and_handstand_quirk(ucf_root):
    names = ("ApplyEyeMakeup", "HandstandPushups", "YoYo")
    train = load_split("ucf101", ucf_root, "train", 1)
    assert train.class_names == names and train.fold == 1 and not train.multi_label
    assert [(it.video_id, it.label) for it in train.items] == [
        ("v_ApplyEyeMakeup_g08_c01", 0),
        ("v_HandStandPushups_g08_c01", 1),
        ("v_HandstandPushups_g08_c01", 1),
        ("v_YoYo_g08_c01", 2),
    ]
    real = ucf_root.resolve() / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi"
    assert train.items[1].path == real and train.items[2].path == real
    assert train.missing == ("YoYo/v_YoYo_g09_c01.avi",)

    test = load_split("ucf101", ucf_root, "test", 1)
    assert [it.label for it in test.items] == [0, 1, 2] and test.missing == ()
    assert test.items[1].path.name == "v_HandStandPushups_g01_c01.avi"
    assert [it.video_id for it in load_split("ucf101", ucf_root, "train", 2).items] == [
        "v_ApplyEyeMakeup_g01_c01",
        "v_YoYo_g01_c01",
    ]
    assert [it.label for it in load_split("ucf101", ucf_root, "test", 2).items] == [1]
    assert len(ucf101.load(ucf_root, "train", 1, class_names=names)) == 4

    with pytest.raises(UserError, match=r"split file not found: .*trainlist03\.txt"):
        load_split("ucf101", ucf_root, "train", 3)
    with pytest.raises(UserError, match=r"2 HandstandPushups \(expected Handstand\)"):
        ucf101.load(ucf_root, class_names=("ApplyEyeMakeup", "Handstand", "YoYo"))
    (ucf_root / "ucfTrainTestlist" / "testlist03.txt").write_text("Juggle/v_Juggle_g01_c01.avi\n")
    with pytest.raises(UserError, match=r"testlist03\.txt line 1: 'Juggle/"):
        load_split("ucf101", ucf_root, "test", 3)


def test_ucf101_full_class_index_must_match_the_shipped_list(tmp_path):
    shipped = list(load_classes("ucf101").names)
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("")
    ind = [n.replace("HandstandPushups", "HandStandPushups") for n in shipped]
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(ind)))
    result = load_split("ucf101", tmp_path)
    assert result.class_names == tuple(shipped) and len(result) == 0
    ind[5] = "Ballet"
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(ind)))
    with pytest.raises(UserError, match=rf"6 Ballet \(expected {shipped[5]}\)"):
        load_split("ucf101", tmp_path)
    (lists / "classInd.txt").unlink()
    with pytest.raises(UserError, match=r"class index not found: .*classInd\.txt"):
        load_split("ucf101", tmp_path)


# --- Kinetics-400 --------------------------------------------------------------------------

K_HEADER = "label,youtube_id,time_start,time_end,split\n"


@pytest.fixture()
def k400_root(tmp_path, monkeypatch):
    monkeypatch.setattr(kinetics, "shipped_names", lambda shipped: None)  # no shipped list
    root = tmp_path / "k400"
    root.mkdir()
    (root / "train.csv").write_text(
        K_HEADER + "air drumming,aaa,10,20,train\n"
        "abseiling,b-b_b,0,10,train\n"
        '"abseiling",ccc,5,15,train\n'
        "air drumming,ddd,30.0,40.0,train\n"
        "air drumming,aaa,10,20,train\n"
    )
    tiny_video(root / "train" / "air drumming" / "aaa_000010_000020.mp4")
    touch(root / "train" / "abseiling" / "b-b_b_000000_000010.mp4")
    touch(root / "train" / "ddd_000030_000040.mkv")  # flat, another extension
    (root / "validate.csv").write_text(
        K_HEADER + "air_drumming,eee,1,11,val\nabseiling,fff,2,12,val\n"
    )
    touch(root / "validate" / "air_drumming" / "eee_000001_000011.mp4")
    touch(root / "validate" / "fff_000002_000012.webm")
    (root / "test.csv").write_text("youtube_id,time_start,time_end,split\nggg,0,10,test\n")
    return root


def test_k400_both_folder_layouts_and_missing_clips(k400_root, tmp_path):
    train = load_split("k400", k400_root, "train", fold=2)  # the fold is ignored
    assert train.class_names == ("abseiling", "air drumming") and train.fold is None
    assert [(it.video_id, it.label) for it in train.items] == [
        ("aaa_000010_000020", 1),
        ("b-b_b_000000_000010", 0),
        ("ddd_000030_000040", 1),
        ("aaa_000010_000020", 1),
    ]
    assert train.items[0].path == k400_root.resolve() / "train/air drumming/aaa_000010_000020.mp4"
    assert train.items[2].path.suffix == ".mkv"
    assert train.missing == ("ccc_000005_000015",)

    val = load_split("k400", k400_root, "val")
    assert [(it.video_id, it.label) for it in val.items] == [
        ("eee_000001_000011", 1),
        ("fff_000002_000012", 0),
    ]
    assert val.split == "val" and val.items[1].path.parent.name == "validate"

    # `val` instead of `validate`, flat, in a separate --videos folder
    videos = tmp_path / "clips"
    touch(videos / "val" / "eee_000001_000011.mp4")
    val = load_split("k400", k400_root, "validate", videos=videos)
    assert [it.video_id for it in val.items] == ["eee_000001_000011"]
    assert val.items[0].path.parent == videos.resolve() / "val"
    assert val.missing == ("fff_000002_000012",)


def test_k400_mistakes(k400_root, tmp_path):
    with pytest.raises(UserError, match=r"test\.csv has no label column"):
        load_split("k400", k400_root, "test")
    with pytest.raises(UserError, match=r"video folder not found: .*[/\\]train;"):
        load_split("k400", k400_root, "train", videos=tmp_path)
    with pytest.raises(UserError, match=r"video folder not found: .*clips; --videos"):
        load_split("k400", k400_root, "train", videos=tmp_path / "clips")
    (k400_root / "validate.csv").write_text(K_HEADER + "juggling balls,eee,1,11,val\n")
    with pytest.raises(UserError, match=r"validate\.csv line 2: label 'juggling balls'"):
        load_split("k400", k400_root, "val")
    (k400_root / "validate.csv").unlink()
    with pytest.raises(UserError, match=r"annotation file not found: .*validate\.csv"):
        load_split("k400", k400_root, "val")
    (k400_root / "train.csv").rename(k400_root / "val.csv")
    # val.csv stands in for validate.csv; without train.csv its labels give the classes
    val = load_split("k400", k400_root, "val")
    assert val.class_names == ("abseiling", "air drumming")
    assert len(val) == 0 and len(val.missing) == 5  # train rows, looked for in validate/
    val = kinetics.load(k400_root, "val", class_names=("air drumming", "abseiling", "yoga"))
    assert len(val.class_names) == 3 and len(val.missing) == 5


# --- Charades ------------------------------------------------------------------------------

CH_HEADER = (
    "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
)


def ch_row(video_id: str, actions: str) -> str:
    script = '"A person walks in, then, holding clothes,\nsits down."'
    return f'{video_id},HR43,Kitchen,6,7,Yes,{script},clothes;door,"A, B",{actions},30.00\n'


@pytest.fixture()
def charades_root(tmp_path):
    root = tmp_path / "Charades"
    root.mkdir()
    (root / "Charades_v1_classes.txt").write_text(
        "c000 Holding some clothes\nc001 Putting clothes somewhere\nc002 Taking a picture\n"
    )
    (root / "Charades_v1_train.csv").write_text(
        CH_HEADER
        + ch_row("AAA", '"c000 0.00 5.50;c002 3.00 9.00;c000 7.00 12.00"')
        + ch_row("BBB", "")
        + ch_row("CCC", '"c001 4.00 4.00;c001 1.00 2.00"')
        + ch_row("DDD", '"c000 0.0 1.0"')
        + ch_row("EEE", "nan")
    )
    (root / "Charades_v1_test.csv").write_text(CH_HEADER + ch_row("FFF", '"c002 1.5 2.5"'))
    tiny_video(root / "Charades_v1_480" / "AAA.mp4")
    for vid in ("BBB", "CCC", "EEE", "FFF"):
        touch(root / "Charades_v1_480" / f"{vid}.mp4")
    return root


def test_charades_videos_and_instances(charades_root, tmp_path):
    train = load_split("charades", charades_root)
    assert train.multi_label and train.fold is None and len(train.class_names) == 3
    assert train.class_names[2] == "Taking a picture"
    assert [(it.video_id, it.labels) for it in train.items] == [
        ("AAA", (0, 2)),
        ("BBB", ()),
        ("CCC", (1,)),
        ("EEE", ()),
    ]
    assert train.items[0].segments == (
        Segment(0, 0.0, 5.5),
        Segment(2, 3.0, 9.0),
        Segment(0, 7.0, 12.0),
    )
    assert train.items[0].interval is None
    assert train.items[0].path == charades_root.resolve() / "Charades_v1_480" / "AAA.mp4"
    assert train.missing == ("DDD",)

    inst = load_split("charades", charades_root, charades_instances=True)
    assert [(it.video_id, it.labels, it.interval) for it in inst.items] == [
        ("AAA@0", (0,), (0.0, 5.5)),
        ("AAA@1", (2,), (3.0, 9.0)),
        ("AAA@2", (0,), (7.0, 12.0)),
        ("CCC@1", (1,), (1.0, 2.0)),  # CCC@0 ends where it starts
    ]
    assert inst.items[1].segments == (Segment(2, 3.0, 9.0),) and inst.missing == ("DDD",)

    test = load_split("charades", charades_root, "test")
    assert [(it.video_id, it.labels) for it in test.items] == [("FFF", (2,))]

    videos = tmp_path / "elsewhere"
    touch(videos / "CCC.mp4")
    other = charades.load(charades_root, "train", videos=videos)
    assert [it.video_id for it in other.items] == ["CCC"]
    assert other.missing == ("AAA", "BBB", "DDD", "EEE")


def test_charades_mistakes(charades_root, tmp_path):
    with pytest.raises(UserError, match="--videos"):
        load_split("charades", charades_root, videos=tmp_path / "nope")
    with pytest.raises(UserError, match="--split 'val' does not exist for Charades"):
        load_split("charades", charades_root, "val")
    (charades_root / "Charades_v1_test.csv").write_text(CH_HEADER + ch_row("FFF", "c007 1 2"))
    with pytest.raises(UserError, match="action class c007 is not in Charades_v1_classes.txt"):
        load_split("charades", charades_root, "test")
    (charades_root / "Charades_v1_test.csv").unlink()
    with pytest.raises(UserError, match=r"annotation file not found: .*Charades_v1_test\.csv"):
        load_split("charades", charades_root, "test")


# --- generic lists -------------------------------------------------------------------------


@pytest.fixture()
def list_root(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "classes.csv").write_text("id,name\n0,cat\n1,dog\n2,bird\n")
    tiny_video(root / "clips" / "a.mp4")
    touch(root / "clips" / "my clip.mp4")
    touch(root / "clips" / "b.mp4")
    (root / "train.txt").write_text(
        "# path label\n\nclips/a.mp4 cat\nclips/my clip.mp4 1\nclips/absent.mp4 dog\n"
        "clips/a.mp4 cat\n"
    )
    (root / "test.txt").write_text("clips/a.mp4 dog,cat\nclips/b.mp4 bird\n")
    (root / "val.txt").write_text("clips/a.mp4 cat\n\nclips/b.mp4 horse\n")
    return root


def test_generic_lists(list_root):
    train = load_split("list", list_root)
    assert train.class_names == ("cat", "dog", "bird") and not train.multi_label
    assert [(it.video_id, it.labels) for it in train.items] == [
        ("clips/a", (0,)),
        ("clips/my clip", (1,)),
        ("clips/a", (0,)),
    ]
    assert train.items[1].path == list_root.resolve() / "clips" / "my clip.mp4"
    assert train.missing == ("clips/absent.mp4",)

    test = load_split("list", list_root, "test")
    assert test.multi_label and [it.labels for it in test.items] == [(0, 1), (2,)]

    with pytest.raises(UserError, match=r"val\.txt line 3: label 'horse'"):
        load_split("list", list_root, "val")
    (list_root / "val.txt").unlink()
    with pytest.raises(UserError, match=r"list file not found: .*val\.txt"):
        load_split("list", list_root, "val")


def test_a_frame_folder_list_reads_bike_and_mmaction2_lines(list_root):
    # TSN / BIKE / mmaction2 lists of extracted-frame folders: `folder total_frames label`
    write_frame_folder(list_root / "abseiling" / "xyz", frames=5, fps=None)
    write_frame_folder(list_root / "abseiling" / "uvw", frames=3, fps=None)
    (list_root / "train.txt").write_text(
        "# BIKE\nabseiling/xyz 5 0\nabseiling/uvw 3 dog\nabseiling/gone 300 1\n"
    )
    train = load_split("list", list_root)
    root = list_root.resolve()
    assert [(it.path, it.video_id, it.labels) for it in train.items] == [
        (root / "abseiling" / "xyz", "abseiling/xyz", (0,)),
        (root / "abseiling" / "uvw", "abseiling/uvw", (1,)),
    ]
    assert train.missing == ("abseiling/gone",)
    (list_root / "train.txt").write_text("abseiling/xyz 5 0\nabseiling/uvw 300 1\n")
    with pytest.raises(UserError) as refused:  # a list from another extraction
        load_split("list", list_root)
    assert str(refused.value) == (
        f"{root / 'train.txt'} line 2 gives 300 frames, but frame folder "
        f"{root / 'abseiling' / 'uvw'} holds 3; regenerate the list for these frames."
    )

    # a video whose name has a space and ends in a number is read when it is on disk
    touch(list_root / "clips" / "take 408")
    (list_root / "train.txt").write_text("clips/take 408 0\nclips/my clip.mp4 1\nclips/b.mp4 2\n")
    train = load_split("list", list_root)
    assert [(it.video_id, it.labels) for it in train.items] == [
        ("clips/take 408", (0,)),
        ("clips/my clip", (1,)),
        ("clips/b", (2,)),
    ]


# --- the registry --------------------------------------------------------------------------


def test_registry_and_common_mistakes(tmp_path):
    assert DATASETS == ("hmdb51", "ucf101", "k400", "k600", "ssv2", "charades", "list")
    assert available_splits("hmdb51")[:3] == [("train", 1), ("test", 1), ("train", 2)]
    assert len(available_splits("ucf101")) == 6
    assert available_splits("k400") == [("train", None), ("val", None), ("test", None)]
    assert available_splits("charades") == [("train", None), ("test", None)]
    with pytest.raises(UserError, match="unknown --dataset 'k700'; choose one of hmdb51"):
        load_split("k700", tmp_path)
    with pytest.raises(UserError, match="unknown --dataset"):
        available_splits("sports1m")
    for dataset in DATASETS:
        with pytest.raises(UserError, match=r"--root folder not found: .*nowhere"):
            load_split(dataset, tmp_path / "nowhere")
    with pytest.raises(UserError, match="--split 'dev' does not exist"):
        load_split("list", tmp_path, "dev")


# --- partial downloads: only the splits whose annotation files are there -------------------


def test_hmdb51_offers_only_the_folds_whose_split_files_are_there(hmdb_root, tmp_path):
    assert available_splits("hmdb51", hmdb_root) == available_splits("hmdb51")
    for path in (hmdb_root / "testTrainMulti_7030_splits").glob("*_test_split[23].txt"):
        path.unlink()
    assert available_splits("hmdb51", hmdb_root) == [("train", 1), ("test", 1)]
    assert absent_files("hmdb51", hmdb_root, "test", 2) == (
        "testTrainMulti_7030_splits/<class>_test_split2.txt"
    )
    assert len(hmdb51.load(hmdb_root, "test", 1, class_names=HMDB_CLASSES)) == 3
    # a fold of which some files are there is offered: loading names the missing one
    (hmdb_root / "testTrainMulti_7030_splits" / "catch_test_split1.txt").unlink()
    assert available_splits("hmdb51", hmdb_root) == [("train", 1), ("test", 1)]
    with pytest.raises(UserError, match=r"split file not found: .*catch_test_split1\.txt"):
        hmdb51.load(hmdb_root, "train", 1, class_names=HMDB_CLASSES)
    # no split at all: every pair, and loading says what is missing
    assert available_splits("hmdb51", tmp_path / "nowhere") == available_splits("hmdb51")


def test_ucf101_offers_only_the_lists_that_are_there(ucf_root):
    assert available_splits("ucf101", ucf_root) == [
        ("train", 1),
        ("test", 1),
        ("train", 2),
        ("test", 2),
    ]
    (ucf_root / "ucfTrainTestlist" / "testlist02.txt").unlink()
    assert available_splits("ucf101", ucf_root) == [("train", 1), ("test", 1), ("train", 2)]
    assert absent_files("ucf101", ucf_root, "test", 2) == "ucfTrainTestlist/testlist02.txt"
    assert absent_files("ucf101", ucf_root, "train", 2) is None


def test_k400_without_test_csv_offers_train_and_val(k400_root, tmp_path):
    # a test.csv of clip ids only is no split, as if it were absent
    assert available_splits("k400", k400_root) == [("train", None), ("val", None)]
    assert absent_files("k400", k400_root, "test", None) == "labels in test.csv"
    (k400_root / "test.csv").unlink()
    assert available_splits("k400", k400_root) == [("train", None), ("val", None)]
    assert absent_files("k400", k400_root, "test", None) == "test.csv"
    # the csv is there but not the split's video folder (validation videos only)
    clips = tmp_path / "clips"
    (clips / "val").mkdir(parents=True)
    assert available_splits("k400", k400_root, clips) == [("val", None)]
    assert absent_files("k400", k400_root, "train", None, clips) == "video folder train/"
    (clips / "val").rmdir()
    assert absent_files("k400", k400_root, "val", None, clips) == ("video folder val/ or validate/")
    assert available_splits("k400", k400_root, clips) == available_splits("k400")
    assert [len(load_split("k400", k400_root, s)) for s in ("train", "val")] == [4, 2]
    (k400_root / "validate.csv").rename(k400_root / "val.csv")  # the stand-in counts
    assert available_splits("k400", k400_root) == [("train", None), ("val", None)]
    (k400_root / "val.csv").unlink()
    assert absent_files("k400", k400_root, "val", None) == "validate.csv or val.csv"
    assert available_splits("k400", k400_root) == [("train", None)]


def test_charades_and_lists_offer_only_their_files(charades_root, list_root):
    (charades_root / "Charades_v1_test.csv").unlink()
    assert available_splits("charades", charades_root) == [("train", None)]
    assert absent_files("charades", charades_root, "test", None) == "Charades_v1_test.csv"
    (list_root / "val.txt").unlink()
    assert available_splits("list", list_root) == [("train", None), ("test", None)]
    assert absent_files("list", list_root, "val", None) == "val.txt"
    for name in ("train.txt", "test.txt"):
        (list_root / name).unlink()
    assert available_splits("list", list_root) == available_splits("list")


def test_the_registry_is_the_one_place_that_knows_splits_folds_and_the_test_split():
    from trainer.data.layouts import REGISTRY, available_splits, folds, has_folds, test_split

    assert sorted(REGISTRY) == sorted(
        ["hmdb51", "ucf101", "k400", "k600", "ssv2", "charades", "list"]
    )
    assert [n for n in REGISTRY if has_folds(n)] == ["hmdb51", "ucf101"]
    assert {n: test_split(n) for n in REGISTRY} == {
        "hmdb51": "test",
        "ucf101": "test",
        "k400": "val",
        "k600": "val",
        "ssv2": "val",
        "charades": "test",
        "list": "test",
    }
    for name, entry in REGISTRY.items():
        assert entry.test_split in entry.splits, name
    assert available_splits("HMDB51") == [
        (s, f) for f in (1, 2, 3) for s in REGISTRY["hmdb51"].splits
    ]
    assert folds("ucf101", "all") == [1, 2, 3] and folds("ucf101", "2") == [2]
    assert folds("k600", "all") == [None]


def test_the_registry_line_declares_the_shipped_class_list_and_the_split_choices():
    import dataclasses

    from storyboard_common.classes import shipped_datasets
    from trainer.data.layouts import REGISTRY, SPLIT_CHOICES, folds
    from trainer.settings import DataConfig, declared

    assert {n: e.classes for n, e in REGISTRY.items()} == {
        "hmdb51": "hmdb51",
        "ucf101": "ucf101",
        "k400": "k400",
        "k600": "k600",
        "ssv2": "ssv2",
        "charades": None,  # its own Charades_v1_classes.txt, as `list` its class list
        "list": None,
    }
    shipped = set(shipped_datasets())
    assert {n for n, e in REGISTRY.items() if e.classes in shipped} == {"hmdb51", "ucf101", "ssv2"}
    assert SPLIT_CHOICES == ("1", "2", "3", "all")  # the folds of hmdb51 and ucf101, or all
    (split,) = [f for f in dataclasses.fields(DataConfig) if f.name == "split"]
    assert declared(split).choices == SPLIT_CHOICES
    with pytest.raises(UserError, match=r"^--split must be 1, 2, 3 or all, not '4'\.$"):
        folds("hmdb51", "4")
