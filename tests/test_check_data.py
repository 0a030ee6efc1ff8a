"""`python -m trainer check-data` on miniature datasets in their official layouts, written
here: bad files, partial downloads, frame widths decord cannot batch-decode."""

import json
import re
import subprocess
import sys

import decord
import pytest

from storyboard_common.errors import UserError
from subtext_gen.classes import load_classes
from testkit.videos import write_corrupt, write_video
from trainer.data import layouts
from trainer.data.check import check_splits
from trainer.data.dataset import ClipSpec, Skipped, VideoClipDataset
from trainer.data.layouts import load_split
from trainer.data.video import open_video, read_frames

from .conftest import REPO


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
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["classes"] == 2
    assert report["splits"] == {"train": 3, "test": 2}  # gone.mp4 is not on disk
    assert report["missing"] == ["clips/gone"] or report["missing"][0].endswith("gone.mp4")
    assert [p.rsplit("/", 1)[-1] for p in report["unreadable"]] == ["broken.mp4"]
    assert [p.rsplit("/", 1)[-1] for p in report["short"]] == ["short.mp4"]
    assert report["missing_splits"] == ["val"]  # no val.txt: skipped, not refused
    (broken,) = report["unreadable"]
    assert report["unreadable_reasons"] == {broken: report["unreadable_reasons"][broken]}
    assert report["unreadable_reasons"][broken].startswith("cannot be opened (")
    table = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "jump" in table.stdout and "unreadable: 1" in table.stdout
    assert "val: val.txt not found, skipped" in table.stdout.splitlines()
    assert f"  {broken}: cannot be opened (" in table.stdout
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
    assert report["unreadable_reasons"] == {}
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
    code, out, _ = trainer_cli(
        "check-data", "--dataset", "hmdb51", "--root", root, "--frames", "4", "--json"
    )
    assert code == 0, out
    report = json.loads(out)
    assert report["classes"] == 51 and report["splits"] == {"train1": 1, "test1": 1}
    assert report["missing_splits"] == ["train2", "test2", "train3", "test3"]
    assert len(report["missing"]) == 100 and report["unreadable"] == report["short"] == []
    _, table, _ = trainer_cli("check-data", "--dataset", "hmdb51", "--root", root, "--frames", "4")
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
