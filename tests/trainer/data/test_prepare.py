"""`prepare-videos`: every layout copied (as videos and as frame folders) so that `--root OUT`
reads the same items, the copies' frames, rate, size and keyframes, unreadable sources,
resume and the refusals."""

from __future__ import annotations

import json
import shutil
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from storyboard_common.classes import load_classes
from storyboard_common.errors import UserError
from testkit.cli import run_app
from testkit.videos import frame_level, write_corrupt, write_frame_folder, write_video
from trainer.__main__ import app
from trainer.data import prepare
from trainer.data.frames import FPS_FILE, folder_name, frame_file
from trainer.data.layouts import available_splits, load_split
from trainer.data.prepare import LOCK, MARKER, VERIFIED, output_size, partial_path, prepare_videos
from trainer.data.video import open_video, read_frames


def tiny(path: Path, frames: int = 8) -> Path:
    return write_video(path, frames=frames, width=64, height=48)


def tiny_webm(path: Path) -> Path:
    """SSv2's `<id>.webm`: mpeg4 in Matroska (WebM's container) under the .webm name; the
    readers go by content, and no VP9 encoder opens once decord is loaded."""
    tiny(path.with_suffix(".mkv")).rename(path)
    return path


def write_hmdb51(root: Path) -> None:
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for name in load_classes("hmdb51").names:  # the layout needs all 51 classes' files
        (root / name).mkdir()
        lines = f"{name}_a.avi 1 \n{name}_b.avi 2 \n"
        for fold in (1, 2):
            (splits / f"{name}_test_split{fold}.txt").write_text(lines)
    for tag in ("a", "b"):
        tiny(root / "brush_hair" / f"brush_hair_{tag}.avi")
    tiny(root / "cartwheel" / "cartwheel_a.avi")


def write_ucf101(root: Path) -> None:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nYoYo/v_YoYo_g08_c01.avi 2\n"
    )
    (lists / "testlist01.txt").write_text("YoYo/v_YoYo_g01_c01.avi\n")
    for rel in (
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01",
        "YoYo/v_YoYo_g08_c01",
        "YoYo/v_YoYo_g01_c01",
    ):
        tiny(root / f"{rel}.avi")


K_HEADER = "label,youtube_id,time_start,time_end,split\n"


def write_kinetics(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "train.csv").write_text(
        K_HEADER + "abseiling,aaa,0,10,train\nzumba,bbb,5,15,train\nzumba,gone,0,10,train\n"
    )
    (root / "validate.csv").write_text(K_HEADER + "abseiling,ccc,1,11,val\n")
    (root / "test.csv").write_text("youtube_id,time_start,time_end,split\nddd,0,10,test\n")
    tiny(root / "train" / "abseiling" / "aaa_000000_000010.mp4")
    tiny(root / "train" / "bbb_000005_000015.mkv")  # flat, another container
    tiny(root / "validate" / "abseiling" / "ccc_000001_000011.mp4")


def write_ssv2(root: Path) -> None:
    labels = root / "labels"
    labels.mkdir(parents=True)
    (labels / "labels.json").write_text(json.dumps({"Closing something": "0", "Opening it": "1"}))
    closing = {"id": "7", "label": "closing a box", "template": "Closing [something]"}
    opening = {"id": "8", "label": "opening it", "template": "Opening it"}
    (labels / "train.json").write_text(json.dumps([closing, opening]))
    (labels / "validation.json").write_text(json.dumps([{**opening, "id": "9"}]))
    (labels / "test.json").write_text(json.dumps([{"id": "10"}]))
    for vid in ("7", "8", "9"):
        tiny_webm(root / "20bn-something-something-v2" / f"{vid}.webm")


CH_HEADER = (
    "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
)


def write_charades(root: Path, videos: Path | None = None) -> None:
    root.mkdir(parents=True)
    (root / "Charades_v1_classes.txt").write_text(
        "c000 Holding some clothes\nc001 Taking a picture\n"
    )
    row = '{},HR43,Kitchen,6,7,Yes,walks in,clothes,a,"{}",30.00\n'
    (root / "Charades_v1_train.csv").write_text(
        CH_HEADER + row.format("AAA", "c000 0.00 0.50;c001 0.25 0.75") + row.format("BBB", "")
    )
    (root / "Charades_v1_test.csv").write_text(CH_HEADER + row.format("CCC", "c001 0.1 0.6"))
    for vid in ("AAA", "BBB", "CCC"):
        tiny((videos or root / "Charades_v1_480") / f"{vid}.mp4")


def write_list(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "classes.csv").write_text("id,name\n0,cat\n1,dog\n")
    (root / "train.txt").write_text("# path label\nclips/a.mp4 cat\nclips/sub/b.avi dog\n")
    (root / "test.txt").write_text("clips/a.mp4 dog,cat\nclips/c.mov 1\n")
    for rel in ("clips/a.mp4", "clips/sub/b.avi", "clips/c.mov"):
        tiny(root / rel)


WRITERS = {
    "hmdb51": write_hmdb51,
    "ucf101": write_ucf101,
    "k400": write_kinetics,
    "k600": write_kinetics,
    "ssv2": write_ssv2,
    "charades": write_charades,
    "list": write_list,
}


def described(split, root: Path, to: str = "videos") -> list[tuple]:
    """A split's items with paths relative to `root`, to compare a copy with its source
    (`to` frames: the source's paths as frame folders, without their extensions)."""
    return [
        (as_copy(it.path.relative_to(root), to), it.video_id, it.labels, it.segments, it.interval)
        for it in split.items
    ]


def as_copy(path: Path, to: str) -> Path:
    return path.with_name(folder_name(path.name)) if to == "frames" else path


def assert_same_splits(
    dataset: str,
    root: Path,
    out: Path,
    videos: Path | None = None,
    home: str = "",
    to: str = "videos",
) -> None:
    """The copy `out` reads as `root` (with `videos`) does; its videos lie in `out/home`."""
    pairs = available_splits(dataset, root, videos)
    assert pairs == available_splits(dataset, out)
    for split, fold in pairs:
        source = load_split(dataset, root, split, fold, videos)
        copy = load_split(dataset, out, split, fold)
        assert copy.class_names == source.class_names
        assert copy.missing == source.missing
        assert described(copy, out.resolve() / home) == described(
            source, (videos or root).resolve(), to
        )


def frame_files(folder: Path, frames: int) -> set[Path]:
    return {frame_file(folder, i) for i in range(frames)} | {folder / FPS_FILE}


@pytest.mark.parametrize("to", ["videos", "frames"])
@pytest.mark.parametrize("dataset", sorted(WRITERS))
def test_every_layout_reads_the_same_items_from_its_prepared_copy(dataset, to, tmp_path):
    root, out = tmp_path / "raw", tmp_path / "fast"
    WRITERS[dataset](root)
    summary = prepare_videos(dataset, root, out, workers=1, show_progress=False, to=to)
    assert summary.prepared == summary.videos > 0, summary.to_json()
    assert summary.unreadable == summary.mismatched == {}
    assert_same_splits(dataset, root, out, to=to)
    for name in summary.annotation_files:
        assert (out / name).read_bytes() == (root / name).read_bytes()
    copied = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    annotations = {Path(n) for n in summary.annotation_files}
    videos = {p.relative_to(root) for p in root.rglob("*") if p.is_file()} - annotations
    if to == "videos":  # every video and annotation file, nothing else
        assert copied == videos | annotations | {Path(MARKER), Path(VERIFIED), Path(LOCK)}
        for video in videos:
            with av.open(str(out / video)) as copy:  # H.264 in MP4 whatever the extension
                assert copy.format.name.startswith("mov,mp4")
                assert copy.streams.video[0].codec_context.name == "h264"
    else:  # a folder of the 8 frames and their rate per video, the annotation files
        folders = [as_copy(video, to) for video in videos]
        assert copied == annotations | {Path(MARKER), Path(VERIFIED), Path(LOCK)} | {
            f for folder in folders for f in frame_files(folder, 8)
        }
        for folder in folders:
            reader, info = open_video(out / folder)
            assert (info.num_frames, info.fps, info.height, info.width) == (8, 8.0, 48, 64)
            assert [frame_level(f) for f in read_frames(reader, [7, 0, 3])] == [7, 0, 3]
    made = json.loads((out / MARKER).read_text())
    assert (made["dataset"], made["to"]) == (dataset, to)
    verified = [json.loads(line) for line in (out / VERIFIED).read_text().splitlines()]
    outputs = [as_copy(video, to).as_posix() for video in videos]
    assert sorted(entry["output"] for entry in verified) == sorted(outputs)


@pytest.mark.parametrize("dataset", ["charades", "ssv2", "k400"])
def test_videos_from_elsewhere_go_where_the_layout_looks_under_the_copy(dataset, tmp_path):
    root, elsewhere, out = tmp_path / "raw", tmp_path / "disk2", tmp_path / "fast"
    WRITERS[dataset](root)
    home = {"charades": "Charades_v1_480", "ssv2": "20bn-something-something-v2"}.get(dataset, "")
    moved = root / home
    for path in [p for p in moved.rglob("*") if p.is_file() and p.suffix != ".csv"]:
        target = elsewhere / path.relative_to(moved)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    summary = prepare_videos(dataset, root, out, elsewhere, workers=1, show_progress=False)
    assert summary.prepared == summary.videos == 3
    assert_same_splits(dataset, root, out, elsewhere, home)  # the copy needs no --videos


def write_cuts(path: Path, frames: int) -> Path:
    """A video of unrelated noise images: a scene cut at every frame."""
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def keyframes(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [i for i, f in enumerate(container.decode(video=0)) if f.key_frame]


def test_a_copy_keeps_every_frame_at_its_rate_with_a_keyframe_every_k(tmp_path):
    root = tmp_path / "raw"
    write_list(root)
    write_cuts(root / "clips" / "c.mov", frames=20)  # no keyframe at its cuts in the copy
    rate = Fraction(30000, 1001)  # a rate that is no integer: Charades' seconds must hold
    source = write_video(
        root / "clips" / "a.mp4", frames=28, width=200, height=150, fps=rate, audio=True
    )
    summary = prepare_videos(
        "list", root, tmp_path / "fast", short_side=96, keyframe_every=8, show_progress=False
    )
    assert summary.prepared == 3 and summary.unreadable == {}
    copy = tmp_path / "fast" / "clips" / "a.mp4"
    _, before = open_video(source)
    reader, after = open_video(copy)
    assert (after.num_frames, after.height, after.width) == (28, 96, 128)
    assert after.fps == pytest.approx(before.fps, abs=1e-6) and before.fps == pytest.approx(
        29.97, abs=0.01
    )
    indices = [27, 3, 8, 15, 16, 0, 21]  # frame i of the copy is frame i of the source
    assert [frame_level(f) for f in read_frames(reader, indices)] == indices
    with av.open(str(source)) as container:
        assert len(container.streams.audio) == 1
    with av.open(str(copy)) as container:
        frames = list(container.decode(video=0))
        assert len(container.streams.audio) == 0
    assert [i for i, f in enumerate(frames) if f.key_frame] == [0, 8, 16, 24]
    assert keyframes(root / "clips" / "c.mov") == list(range(20))
    assert keyframes(tmp_path / "fast" / "clips" / "c.mov") == [0, 8, 16]
    assert [float(f.time) for f in frames[:3]] == pytest.approx([0, 1001 / 30000, 2002 / 30000])
    assert summary.bytes_before == sum(p.stat().st_size for p in (root / "clips").rglob("*.*"))


def test_frame_folders_keep_every_frame_and_the_rate_at_the_short_side(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "frames"
    write_list(root)
    rate = Fraction(30000, 1001)  # Charades' seconds must map to the same frames
    source = write_video(root / "clips" / "a.mp4", frames=28, width=200, height=150, fps=rate)
    summary = prepare_videos(
        "list", root, out, short_side=96, keyframe_every=8, show_progress=False, to="frames"
    )
    assert summary.prepared == 3 and summary.unreadable == summary.mismatched == {}
    frame_bytes = sum(p.stat().st_size for p in out.rglob("img_*.jpg"))
    assert summary.bytes_after == frame_bytes
    assert summary.bytes_before == sum(p.stat().st_size for p in (root / "clips").rglob("*.*"))
    video, before = open_video(source, short_side=96)
    folder, after = open_video(out / "clips" / "a")
    assert (after.num_frames, after.height, after.width) == (28, 96, 128)  # 150x200 -> 96
    assert after.fps == before.fps == pytest.approx(29.97, abs=0.01)  # exactly the reader's
    indices = [27, 3, 8, 15, 16, 0, 21]  # frame i of the folder is frame i of the source
    frames = read_frames(folder, indices)
    assert [frame_level(f) for f in frames] == indices
    # the reader's own resize of the source, within JPEG's rounding at quality 90
    assert (frames.float() - read_frames(video, indices).float()).abs().mean() < 2
    _, small = open_video(out / "clips" / "c")  # 64x48 under the short side: never scaled up
    assert (small.height, small.width) == (48, 64)


def test_output_sizes():
    assert output_size(720, 1280, 256) == (256, 454)  # torchvision's truncation, then even
    assert output_size(1280, 720, 320) == (568, 320)
    assert output_size(101, 151, 256) == (100, 150)  # never scaled up; only made even
    assert output_size(48, 64, 256) == (48, 64)


def test_unreadable_sources_are_listed_and_the_job_goes_on(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "fast"
    write_list(root)
    write_corrupt(root / "clips" / "a.mp4")
    code, output, error = run_app(
        app, "prepare-videos", "--dataset", "list", "--root", root, "--out", out,
        "--workers", "2", "--json",
    )  # fmt: skip
    assert code == 0 and error is None, output
    report = json.loads(output)
    bad = str((root / "clips" / "a.mp4").resolve())
    assert report["unreadable"] == [bad] and "cannot be opened" in report["unreadable_reasons"][bad]
    assert report["prepared"] == 2 and report["videos"] == 3 and report["mismatched"] == []
    assert report["missing_splits"] == ["val"]
    assert (
        not (out / "clips" / "a.mp4").exists()
        and not partial_path(out / "clips" / "a.mp4").exists()
    )
    assert (out / "clips" / "c.mov").is_file() and (out / "clips" / "sub" / "b.avi").is_file()


@pytest.mark.parametrize("to, writer", [("videos", "prepare_video"), ("frames", "prepare_frames")])
def test_a_killed_job_redoes_only_the_files_in_flight(tmp_path, monkeypatch, to, writer):
    root, out = tmp_path / "raw", tmp_path / "fast"
    write_list(root)
    prepare_videos("list", root, out, workers=1, show_progress=False, to=to)
    done = as_copy(out / "clips" / "a.mp4", to)
    kept = done.stat().st_mtime_ns, done.stat().st_ino
    # killed while two copies were in flight: one partial output left, one not started
    in_flight = [as_copy(out / "clips" / "sub" / "b.avi", to), as_copy(out / "clips" / "c.mov", to)]
    for target in in_flight:
        shutil.rmtree(target) if to == "frames" else target.unlink()
    if to == "frames":  # half the frames, one of them cut short
        write_frame_folder(partial_path(in_flight[0]), frames=4, fps=None)
        frame_file(partial_path(in_flight[0]), 3).write_bytes(b"\xff\xd8half")
    else:
        partial_path(in_flight[0]).write_bytes(b"half a video")
    encoded = []
    real = getattr(prepare, writer)
    monkeypatch.setattr(
        prepare, writer, lambda src, dst, *a: encoded.append(dst) or real(src, dst, *a)
    )
    summary = prepare_videos("list", root, out, workers=1, show_progress=False, to=to)
    assert sorted(encoded) == sorted(in_flight)
    assert (summary.prepared, summary.already_prepared) == (2, 1)
    assert (done.stat().st_mtime_ns, done.stat().st_ino) == kept
    assert not list(out.rglob("*.partial"))
    assert_same_splits("list", root, out, to=to)
    if to == "frames":
        assert {p.name for p in in_flight[0].iterdir()} == {
            p.name for p in frame_files(in_flight[0], 8)
        }


def test_a_copy_with_other_frame_count_is_reported_and_not_kept(tmp_path, monkeypatch):
    root, out = tmp_path / "raw", tmp_path / "fast"
    write_list(root)
    real = prepare._decoded
    monkeypatch.setattr(prepare, "_decoded", lambda *a: list(real(*a))[:-2])  # 2 frames lost
    summary = prepare_videos("list", root, out, workers=1, show_progress=False)
    assert summary.prepared == 0 and len(summary.mismatched) == 3
    assert set(summary.mismatched.values()) == {"its copy has 6 frames, the source 8"}
    assert not [p for p in out.rglob("*") if p.suffix in (".mp4", ".avi", ".mov", ".partial")]
    monkeypatch.setattr(prepare, "_decoded", lambda *a: list(real(*a))[:-1])  # within one
    assert prepare_videos("list", root, out, workers=1, show_progress=False).prepared == 3


def one_sentence(error, text: str) -> None:
    assert error is not None and "\n" not in str(error) and text in str(error), error


def test_refusals_are_one_sentence_and_write_nothing(tmp_path):
    root = tmp_path / "raw"
    write_list(root)
    before = sorted(root.rglob("*"))

    def prepare_into(out, *flags):
        code, _, error = run_app(
            app, "prepare-videos", "--dataset", "list", "--root", root, "--out", out, *flags
        )
        assert code != 0  # a UserError: `run_cli` prints it and exits 2
        return error

    inside = root / "fast"
    one_sentence(
        prepare_into(inside), f"--out {inside.resolve()} is inside --root {root.resolve()};"
    )
    assert sorted(root.rglob("*")) == before

    one_sentence(prepare_into(tmp_path / "gifs", "--to", "gifs"), "--to must be videos or frames")
    assert not (tmp_path / "gifs").exists()

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    error = prepare_into(other)
    one_sentence(error, f"--out {other} holds files but is not a folder prepare-videos wrote")
    assert [p.name for p in other.iterdir()] == ["notes.txt"]

    out = tmp_path / "fast"
    prepare_videos("list", root, out, workers=1, show_progress=False)
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    error = prepare_into(out, "--keyframe-every", "8")
    one_sentence(
        error,
        f"--out {out} was prepared with --dataset list --short-side 256 --keyframe-every 16; "
        "rerun with those settings to resume, or choose another --out.",
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == written
    _, output, error = run_app(
        app, "prepare-videos", "--dataset", "list", "--root", root, "--out", out
    )
    assert error is None and "0 prepared now" in output and "3 already prepared" in output
    assert f"use --root {out}" in output

    error = prepare_into(out, "--to", "frames")
    one_sentence(
        error,
        f"--out {out} was prepared with --dataset list --short-side 256 --keyframe-every 16;",
    )
    frames = tmp_path / "frames"
    prepare_videos("list", root, frames, workers=1, show_progress=False, to="frames")
    one_sentence(
        prepare_into(frames),
        f"--out {frames} was prepared with --dataset list --to frames --short-side 256; rerun",
    )


def test_a_marker_from_before_frames_reads_as_video_copies(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "fast"
    write_list(root)
    prepare_videos("list", root, out, workers=1, show_progress=False)
    made = json.loads((out / MARKER).read_text())
    del made["to"]
    (out / MARKER).write_text(json.dumps(made))
    assert prepare_videos("list", root, out, show_progress=False).already_prepared == 3


def test_one_writer_at_a_time(tmp_path):
    import fcntl

    root, out = tmp_path / "raw", tmp_path / "fast"
    write_list(root)
    prepare_videos("list", root, out, workers=1, show_progress=False, to="frames")
    shutil.rmtree(out / "clips" / "a")
    with open(out / LOCK, "w") as other:  # another prepare-videos writing this folder
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, error = run_app(
            app, "prepare-videos", "--dataset", "list", "--root", root, "--out", out,
            "--to", "frames",
        )  # fmt: skip
        assert code != 0  # a UserError: `run_cli` prints it and exits 2
        one_sentence(error, f"another `prepare-videos` is writing {out}; wait for it")
    assert not (out / "clips" / "a").exists()


def test_another_source_is_refused_and_the_source_is_recorded(tmp_path):
    """A second dataset into a copy would replace the first's lists while its videos
    stayed: the copy's recorded `--root` (and `--videos`) must be the one given."""
    root, other, out = tmp_path / "raw", tmp_path / "other", tmp_path / "fast"
    write_list(root)
    write_list(other)
    (other / "classes.csv").write_text("id,name\n0,bird\n1,fish\n")
    prepare_videos("list", root, out, workers=1, show_progress=False)
    made = json.loads((out / MARKER).read_text())
    assert (made["source"], made["videos"]) == (str(root.resolve()), None)
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, _, error = run_app(
        app, "prepare-videos", "--dataset", "list", "--root", other, "--out", out
    )
    assert code != 0
    one_sentence(
        error,
        f"--out {out} is a copy of --root {root.resolve()}, not of --root {other.resolve()}; "
        "rerun with that source to resume, or choose another --out.",
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == written
    assert (out / "classes.csv").read_text() == (root / "classes.csv").read_text()

    # --videos is part of the source: Charades' videos from one folder, then another
    videos, elsewhere, copy = tmp_path / "vids", tmp_path / "vids2", tmp_path / "ch"
    write_charades(tmp_path / "charades", videos)
    shutil.copytree(videos, elsewhere)
    prepare_videos("charades", tmp_path / "charades", copy, videos, workers=1, show_progress=False)
    with pytest.raises(UserError) as caught:
        prepare_videos("charades", tmp_path / "charades", copy, elsewhere, show_progress=False)
    assert f"--videos {videos.resolve()}, not of --root {(tmp_path / 'charades').resolve()} " in (
        str(caught.value)
    )
    with pytest.raises(UserError, match="is a copy of"):  # without --videos: another source
        prepare_videos("charades", tmp_path / "charades", copy, show_progress=False)

    # a marker written before --videos was recorded gets it; one of another root is refused
    del made["videos"]
    (out / MARKER).write_text(json.dumps(made))
    assert prepare_videos("list", root, out, show_progress=False).already_prepared == 3
    assert json.loads((out / MARKER).read_text())["videos"] is None
    with pytest.raises(UserError, match=f"is a copy of --root {root.resolve()}, not"):
        prepare_videos("list", other, out, show_progress=False)


def damage_outputs(out: Path, to: str) -> list[Path]:
    """Two outputs changed after they were verified: for video copies one truncated and one
    rewritten in place with its size kept; for frame folders one frame lost and one cut."""
    a, b = as_copy(out / "clips" / "a.mp4", to), as_copy(out / "clips" / "c.mov", to)
    if to == "frames":
        frame_file(a, 7).unlink()
        last = frame_file(b, 3)
        last.write_bytes(last.read_bytes()[:100])
    else:
        a.write_bytes(a.read_bytes()[: a.stat().st_size // 2])
        data = bytearray(b.read_bytes())
        data[-1] ^= 1
        time.sleep(0.01)  # a later modification time on filesystems with coarse clocks
        b.write_bytes(bytes(data))
    return [a, b]


@pytest.mark.parametrize("to", ["videos", "frames"])
def test_an_output_changed_after_it_was_verified_is_prepared_again(tmp_path, to):
    root, out = tmp_path / "raw", tmp_path / "fast"
    write_list(root)
    prepare_videos("list", root, out, workers=1, show_progress=False, to=to)
    kept = as_copy(out / "clips" / "sub" / "b.avi", to)
    kept_when = kept.stat().st_mtime_ns
    damaged = damage_outputs(out, to)
    code, output, error = run_app(
        app, "prepare-videos", "--dataset", "list", "--root", root, "--out", out,
        "--to", to, "--json",
    )  # fmt: skip
    assert code == 0 and error is None, output
    report = json.loads(output)
    assert report["changed_since_verified"] == sorted(str(p) for p in damaged)
    assert (report["prepared"], report["already_prepared"]) == (2, 1)
    assert kept.stat().st_mtime_ns == kept_when
    for copy in damaged:  # whole again: every frame reads
        reader, info = open_video(copy)
        assert info.num_frames == 8 and len(read_frames(reader, range(8))) == 8
    assert_same_splits("list", root, out, to=to)
    again = prepare_videos("list", root, out, workers=1, show_progress=False, to=to)
    assert (again.prepared, again.already_prepared, again.changed) == (0, 3, [])


def test_a_copy_from_before_outputs_were_recorded_is_recorded_as_found(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "fast"
    write_list(root)
    prepare_videos("list", root, out, workers=1, show_progress=False)
    (out / VERIFIED).unlink()  # an older version's copy
    summary = prepare_videos("list", root, out, workers=1, show_progress=False)
    assert (summary.prepared, summary.already_prepared) == (0, 3)
    assert len((out / VERIFIED).read_text().splitlines()) == 3
    damaged = damage_outputs(out, "videos")
    summary = prepare_videos("list", root, out, workers=1, show_progress=False)
    assert sorted(summary.changed) == sorted(map(str, damaged)) and summary.prepared == 2


def test_a_second_writer_of_a_new_copy_is_refused_and_writes_nothing(tmp_path):
    import fcntl

    root, out = tmp_path / "raw", tmp_path / "fast"
    write_list(root)
    out.mkdir()
    with open(out / LOCK, "w") as first:  # the first `prepare-videos` has just begun
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError) as caught:
            prepare_videos("list", root, out, workers=1, show_progress=False)
    one_sentence(caught.value, f"another `prepare-videos` is writing {out}; wait for it")
    assert [p.name for p in out.iterdir()] == [LOCK]
