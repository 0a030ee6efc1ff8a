"""`python -m trainer check-data` on miniature datasets in their official layouts, written
here: the gate (exit 2 on bad files), partial downloads of every dataset, frame widths
decord cannot batch-decode, the default data root."""

import json
import os
import re
import subprocess
import sys

import decord
import pytest

from storyboard_common.classes import load_classes
from storyboard_common.errors import UserError
from testkit.cli import REPO
from testkit.videos import write_corrupt, write_frame_folder, write_video
from trainer.data import layouts
from trainer.data.check import check_splits
from trainer.data.dataset import ClipSpec, Skipped, VideoClipDataset
from trainer.data.frames import frame_file
from trainer.data.layouts import load_split
from trainer.data.video import open_video, read_frames


def trainer_cli(*args):
    """`python -m trainer ARGS` in this process -> (exit code, stdout, the UserError or None):
    a UserError is what the CLI prints as its one-line `error: ...` with exit status 2."""
    from typer.testing import CliRunner

    from trainer.__main__ import app

    done = CliRunner().invoke(app, [str(a) for a in args])
    error = done.exception if isinstance(done.exception, UserError) else None
    if done.exception is not None and error is None:
        raise done.exception
    return done.exit_code, done.stdout, error


def one_sentence_error(error, message: str) -> None:
    assert isinstance(error, UserError) and "\n" not in str(error), error
    assert message in str(error), str(error)


def test_check_data_reports_missing_unreadable_and_short(tmp_path):
    root = tmp_path / "mini"
    (root / "clips").mkdir(parents=True)
    (root / "classes.csv").write_text("id,name\n0,jump\n1,run\n")
    for name in ("a", "b", "c"):
        write_video(root / "clips" / f"{name}.mp4", frames=12, width=32, height=24)
    write_video(root / "clips" / "short.mp4", frames=3, width=32, height=24)
    write_corrupt(root / "clips" / "broken.mp4")
    (root / "train.txt").write_text(
        "clips/a.mp4 jump\nclips/b.mp4 run\nclips/short.mp4 run\nclips/gone.mp4 jump\n"
    )
    (root / "test.txt").write_text("clips/c.mp4 0\nclips/broken.mp4 1\n")
    cmd = [
        sys.executable,
        "-m",
        "trainer",
        "check-data",
        "--dataset",
        "list",
        "--root",
        str(root),
        "--frames",
        "8",
    ]
    done = subprocess.run([*cmd, "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr  # the report, then one sentence
    counts = "1 missing (--allow-missing 0), 1 unreadable and 1 short videos"
    assert done.stderr == f"error: list at {root}: {counts}; see the JSON report's lists.\n"
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert report["classes"] == 2
    assert report["splits"] == {"train": 3, "test": 2}  # gone.mp4 is not on disk
    assert report["missing"] == ["clips/gone"] or report["missing"][0].endswith("gone.mp4")
    assert [p.rsplit("/", 1)[-1] for p in report["unreadable"]] == ["broken.mp4"]
    assert [p.rsplit("/", 1)[-1] for p in report["short"]] == ["short.mp4"]
    assert report["missing_splits"] == ["val"]  # no val.txt: skipped, not refused
    (broken,) = report["unreadable"]
    assert report["unreadable_reasons"] == {broken: report["unreadable_reasons"][broken]}
    # FFmpeg's reason, which decord only logs: the log line itself stays off stderr
    reason = "cannot be opened (Invalid data found when processing input)"
    assert report["unreadable_reasons"][broken] == reason
    table = subprocess.run(
        [*cmd, "--allow-missing", "1"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert table.returncode == 2 and "jump" in table.stdout and "unreadable: 1" in table.stdout
    counts = "1 missing (--allow-missing 1), 1 unreadable and 1 short videos"
    assert table.stderr == f"error: list at {root}: {counts}; see the lists above.\n"
    assert "val: val.txt not found, skipped" in table.stdout.splitlines()
    assert f"  {broken}: {reason}" in table.stdout
    bad = subprocess.run(
        [*cmd[:-4], "--root", str(tmp_path / "nope")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--root folder not found" in bad.stderr


K_HEADER = "label,youtube_id,time_start,time_end,split\n"


def write_k400(root):
    """Kinetics-400 as usually downloaded to evaluate on validation: no test.csv."""
    rows = {"train": [("abseiling", "aaa"), ("air drumming", "bbb")], "val": [("abseiling", "ccc")]}
    for split, csv_name in (("train", "train.csv"), ("val", "validate.csv")):
        lines = [f"{label},{vid},0,10,{split}\n" for label, vid in rows[split]]
        (root / csv_name).parent.mkdir(parents=True, exist_ok=True)
        (root / csv_name).write_text(K_HEADER + "".join(lines))
        folder = "validate" if split == "val" else split
        for label, vid in rows[split]:
            write_video(root / folder / label / f"{vid}_000000_000010.mp4", frames=8)
    return root


def test_k400_without_test_csv_is_checked_with_a_note(tmp_path):
    root = write_k400(tmp_path / "k400")
    code, out, _ = trainer_cli(
        "check-data", "--dataset", "k400", "--root", root, "--frames", "4", "--json"
    )
    assert code == 0, out
    report = json.loads(out)
    assert report["splits"] == {"train": 2, "val": 1} and report["missing_splits"] == ["test"]
    assert report["missing"] == report["unreadable"] == report["short"] == []
    assert report["unreadable_reasons"] == {} and report["ok"] is True
    assert list(report)[:5] == ["classes", "splits", "missing", "unreadable", "short"]
    code, table, _ = trainer_cli("check-data", "--dataset", "k400", "--root", root, "--frames", "4")
    assert code == 0, table
    notes = [line for line in table.splitlines() if "skipped" in line]
    assert notes == ["test: test.csv not found, skipped"]

    # run and eval still need their own split, and say so in one sentence
    (root / "validate.csv").unlink()
    *_, run = trainer_cli(
        "run",
        "--dataset",
        "k400",
        "--root",
        root,
        "--out",
        tmp_path / "run",
        "--device",
        "cpu",
        "--workers",
        "0",
    )
    one_sentence_error(run, f"Kinetics-400 annotation file not found: {root / 'validate.csv'};")
    with pytest.raises(UserError, match=re.escape(f"not found: {root / 'validate.csv'};")):
        load_split("k400", root, layouts.test_split("k400"), None)  # what `eval` loads
    (root / "train.csv").unlink()  # no split at all: one clear error
    *_, none = trainer_cli("check-data", "--dataset", "k400", "--root", root)
    one_sentence_error(none, f"Kinetics-400 annotation file not found: {root / 'train.csv'};")


def write_hmdb51_fold1(root):
    """HMDB-51 with only fold 1's split files (all 51 classes, two videos on disk)."""
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for name in load_classes("hmdb51").names:
        (root / name).mkdir()
        (splits / f"{name}_test_split1.txt").write_text(f"{name}_a.avi 1 \n{name}_b.avi 2 \n")
    for tag in ("a", "b"):
        write_video(root / "brush_hair" / f"brush_hair_{tag}.avi", frames=8)
    return root


def test_hmdb51_with_only_fold_1(tmp_path):
    root = write_hmdb51_fold1(tmp_path / "hmdb51")
    check = ("check-data", "--dataset", "hmdb51", "--root", root, "--frames", "4")
    code, out, _ = trainer_cli(*check, "--json", "--allow-missing", "100")
    assert code == 0, out
    report = json.loads(out)
    assert report["classes"] == 51 and report["splits"] == {"train1": 1, "test1": 1}
    assert report["missing_splits"] == ["train2", "test2", "train3", "test3"]
    assert len(report["missing"]) == 100 and report["unreadable"] == report["short"] == []
    # the 100 videos not on disk fail the check unless accepted, all of them
    _, out, gate = trainer_cli(*check, "--json", "--allow-missing", "99")
    assert json.loads(out)["ok"] is False
    one_sentence_error(gate, "100 missing (--allow-missing 99), 0 unreadable and 0 short videos")
    _, table, gate = trainer_cli(*check)
    one_sentence_error(gate, f"hmdb51 at {root}: 100 missing (--allow-missing 0)")
    notes = [line for line in table.splitlines() if "skipped" in line]
    assert notes == [
        f"{s}{k}: testTrainMulti_7030_splits/<class>_test_split{k}.txt not found, skipped"
        for k in (2, 3)
        for s in ("train", "test")
    ]
    # asking for an absent fold is an error, as it is for run and eval
    *_, fold2 = trainer_cli("check-data", "--dataset", "hmdb51", "--root", root, "--split", "2")
    split_file = root / "testTrainMulti_7030_splits" / "brush_hair_test_split2.txt"
    one_sentence_error(fold2, f"HMDB-51 split file not found: {split_file};")
    with pytest.raises(UserError, match=re.escape(f"split file not found: {split_file};")):
        load_split("hmdb51", root, layouts.test_split("hmdb51"), 2)  # what `eval --split 2` loads


def test_a_video_check_data_calls_readable_is_read_by_training(tmp_path):
    root = tmp_path / "mini"
    (root / "classes.csv").parent.mkdir(parents=True)
    (root / "classes.csv").write_text("id,name\n0,jump\n")
    widths = (64, 32, 48, 24)  # decord batch-decodes 32 and 64 px wide frames, not 48 or 24
    for width in widths:
        write_video(root / f"w{width}.mp4", frames=8, width=width, height=32)
    (root / "train.txt").write_text("".join(f"w{w}.mp4 jump\n" for w in widths))
    split = load_split("list", root, "train")
    report = check_splits([split], frames=4, workers=2, show_progress=False)
    paths = {w: str(root.resolve() / f"w{w}.mp4") for w in widths}
    assert report.unreadable == [paths[24], paths[48]] and report.short == []
    for width in (24, 48):
        reason = report.unreadable_reasons[paths[width]]
        assert reason.startswith(f"is {width} px wide, a width decord cannot batch-decode")
    for train in (True, False):
        data = VideoClipDataset(
            split.items, 1, False, ClipSpec(frames=4, train=train, size=16, short_side=16)
        )
        read = {str(it.path): data[i] for i, it in enumerate(split.items)}
        for width in widths:
            sample = read[paths[width]]
            if paths[width] in report.unreadable:
                assert isinstance(sample, Skipped)
                assert report.unreadable_reasons[paths[width]] in sample.reason
            else:
                assert not isinstance(sample, Skipped) and sample["frames"].shape[:2] == (1, 4)
    # the reader itself: decord's get_batch on those frames, with and without the check
    reader, _ = open_video(paths[32])
    assert read_frames(reader, [0, 7]).shape == (2, 32, 32, 3)
    for width in (24, 48):
        with pytest.raises(Exception, match="from_size == to_size"):
            decord.VideoReader(paths[width], num_threads=1).get_batch([0, 7])


def check_json(*args):
    """check-data --json in this process -> (exit code, report, the UserError or None)."""
    code, out, error = trainer_cli("check-data", *args, "--frames", "4", "--json")
    return code, json.loads(out), error


def test_k600_with_the_validation_set_only(tmp_path):
    """Kinetics-600 downloaded for evaluation: every csv (test.csv without labels, as first
    released) but the validation videos only, then validate.csv alone."""
    root = tmp_path / "k600"
    val = [("yoga", "v1"), ("zumba", "v2"), ("abseiling", "v3"), ("zumba", "v4")]
    for label, vid in val[:3]:
        write_video(root / "validate" / label / f"{vid}_000000_000010.mp4", frames=8)
    (root / "validate.csv").write_text(
        K_HEADER + "".join(f"{label},{vid},0,10,validate\n" for label, vid in val)
    )
    (root / "train.csv").write_text(
        K_HEADER
        + "".join(f"{n},t{i},0,10,train\n" for i, n in enumerate(["zumba", "yoga"] * 2))
        + "abseiling,t9,0,10,train\n"
    )
    (root / "test.csv").write_text("youtube_id,time_start,time_end,split\nx1,0,10,test\n")
    args = ("--dataset", "k600", "--root", root)
    code, report, _ = check_json(*args, "--allow-missing", "1")
    assert code == 0 and report["ok"] is True
    assert report["classes"] == 3 and report["splits"] == {"val": 3}
    assert report["missing"] == ["v4_000000_000010"]
    assert report["missing_splits"] == ["train", "test"]
    _, table, _ = trainer_cli("check-data", *args, "--frames", "4", "--allow-missing", "1")
    assert [line for line in table.splitlines() if "skipped" in line] == [
        "train: video folder train/ not found, skipped",
        "test: labels in test.csv not found, skipped",
    ]
    assert "0 abseiling" in table and "2 zumba" in table  # train.csv's sorted labels
    # validate.csv alone: its labels give the classes, as for `eval` (its split loads)
    (root / "train.csv").unlink()
    (root / "test.csv").unlink()
    code, alone, _ = check_json(*args, "--allow-missing", "1")
    assert code == 0 and alone["splits"] == {"val": 3}
    assert alone["missing_splits"] == ["train", "test"]
    evaluated = load_split("k600", root, layouts.test_split("k600"), None)
    assert evaluated.class_names == ("abseiling", "yoga", "zumba")
    assert [it.label for it in evaluated.items] == [1, 2, 0]


def test_partial_ucf101_ssv2_and_charades_are_checked_with_a_note(tmp_path):
    ucf = tmp_path / "ucf101"
    (ucf / "ucfTrainTestlist").mkdir(parents=True)
    (ucf / "ucfTrainTestlist" / "classInd.txt").write_text("1 Archery\n2 YoYo\n")
    (ucf / "ucfTrainTestlist" / "trainlist01.txt").write_text("YoYo/v_YoYo_g08_c01.avi 2\n")
    (ucf / "ucfTrainTestlist" / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    write_video(ucf / "YoYo" / "v_YoYo_g08_c01.avi", frames=8)
    write_video(ucf / "Archery" / "v_Archery_g01_c01.avi", frames=8)
    code, report, _ = check_json("--dataset", "ucf101", "--root", ucf)
    assert code == 0 and report["splits"] == {"train1": 1, "test1": 1}
    assert report["missing_splits"] == ["train2", "test2", "train3", "test3"]

    ssv2 = tmp_path / "ssv2"
    (ssv2 / "labels").mkdir(parents=True)
    closing = {"id": "7", "label": "closing a box", "template": "Closing [something]"}
    (ssv2 / "labels" / "validation.json").write_text(json.dumps([closing]))
    write_video(ssv2 / "20bn-something-something-v2" / "7.mp4", frames=8)
    code, report, _ = check_json("--dataset", "ssv2", "--root", ssv2)
    assert code == 0 and report["classes"] == 174  # the shipped class list
    assert report["splits"] == {"val": 1} and report["missing_splits"] == ["train"]

    charades = tmp_path / "charades"
    charades.mkdir()
    (charades / "Charades_v1_classes.txt").write_text("c000 Holding some clothes\n")
    (charades / "Charades_v1_train.csv").write_text("id,actions\nAB12,c000 0.0 1.0\n")
    write_video(charades / "Charades_v1_480" / "AB12.mp4", frames=8)
    code, report, _ = check_json("--dataset", "charades", "--root", charades)
    assert code == 0 and report["splits"] == {"train": 1}
    assert report["missing_splits"] == ["test"]


def test_check_data_checks_frame_folders(tmp_path):
    root = tmp_path / "bike"
    root.mkdir()
    (root / "classes.csv").write_text("id,name\n0,abseiling\n1,air drumming\n")
    good = write_frame_folder(root / "abseiling" / "a", frames=12, fps=None)
    write_frame_folder(root / "abseiling" / "short", frames=3, fps=None)
    gap = write_frame_folder(root / "abseiling" / "gap", frames=12, fps=None)
    frame_file(gap, 2).unlink()
    broken = write_frame_folder(root / "abseiling" / "broken", frames=12, fps=None)
    frame_file(broken, 7).write_bytes(b"\xff\xd8 not a picture")  # in the 4-frame clip
    (root / "train.txt").write_text(
        "abseiling/a 12 0\nabseiling/short 3 1\nabseiling/gone 12 1\nabseiling/gap.mp4 1\n"
        "abseiling/broken 12 0\n"
    )
    code, report, error = check_json("--dataset", "list", "--root", root)
    assert code != 0 and report["ok"] is False
    one_sentence_error(error, "1 missing (--allow-missing 0), 2 unreadable and 1 short videos")
    assert report["missing"] == ["abseiling/gone"] and report["splits"] == {"train": 4}
    assert report["short"] == [str(root / "abseiling" / "short")]
    reasons = report["unreadable_reasons"]
    assert reasons == {
        str(gap): "has a gap: img_00003.jpg is missing before img_00012.jpg",
        str(broken): "has a frame that cannot be decoded (img_00008.jpg: Image is incomplete "
        "or truncated)",
    }
    assert str(good) not in report["unreadable"] + report["short"]
    # a list line whose count disagrees with its folder: one sentence before any probe
    (root / "train.txt").write_text("abseiling/a 13 0\n")
    code, out, error = trainer_cli("check-data", "--dataset", "list", "--root", root)
    assert code != 0 and out == ""
    one_sentence_error(error, f"line 1 gives 13 frames, but frame folder {good} holds 12;")


def test_the_default_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("STORYBOARD_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    *_, error = trainer_cli("check-data", "--dataset", "list")
    one_sentence_error(
        error,
        f"no --root given and {tmp_path / 'data' / 'list'} (the default data/ folder) does "
        "not exist: put list there, pass --root DIR, or set STORYBOARD_DATA=DIR to read DIR/list.",
    )
    root = tmp_path / "data" / "list"
    root.mkdir(parents=True)
    (root / "classes.csv").write_text("id,name\n0,jump\n")
    (root / "train.txt").write_text("a.mp4 jump\n")
    write_video(root / "a.mp4", frames=8)
    code, report, _ = check_json("--dataset", "list")
    assert code == 0 and report["splits"] == {"train": 1}
    elsewhere = tmp_path / "datasets"
    monkeypatch.setenv("STORYBOARD_DATA", str(elsewhere))
    *_, error = trainer_cli("check-data", "--dataset", "LIST")
    one_sentence_error(error, f"{elsewhere / 'list'} (from STORYBOARD_DATA) does not exist")
    root.rename(tmp_path / "list")
    elsewhere.mkdir()
    (tmp_path / "list").rename(elsewhere / "list")
    code, report, _ = check_json("--dataset", "list")
    assert code == 0 and report["splits"] == {"train": 1}


def test_the_repository_data_folder_documents_every_layout():
    readme = (REPO / "data" / "README.md").read_text()
    for dataset in layouts.DATASETS:
        assert f"\n  {dataset}/ " in readme
    for place in ("storyboard_common/data/<dataset>/classes.csv", "STORYBOARD_DATA", "artifacts/"):
        assert place in readme
    assert "STORYBOARD_ARTIFACTS" in readme and "runs/" in readme and "--out" in readme


def test_decord_log_is_kept_off_stderr_and_the_rest_passed_on(capfd):
    from trainer.data.video import _decord_log_caught

    with _decord_log_caught() as reasons:
        os.write(2, b"[12:00:00] /src/video/video_reader.cc:83: ERROR opening: a, b.mp4, ")
        os.write(2, b"No such file or directory\nanother thread's warning\n")
    assert reasons == ["No such file or directory"]
    assert capfd.readouterr().err == "another thread's warning\n"
