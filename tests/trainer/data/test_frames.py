"""Frame folders (`trainer/data/frames.py`) through the one video reader: what it counts and
returns (the same JPEGs decoded by torchvision), its one-sentence refusals, and the data
loader and the feature cache's views reading them where videos would be."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import decode_jpeg, encode_jpeg, read_file

from testkit.videos import frame_level, write_frame_folder, write_video
from trainer.data.dataset import ClipSpec, EpochSampler, VideoClipDataset, make_loader
from trainer.data.frames import (
    FPS_FILE,
    first_gap,
    folder_name,
    frame_file,
    frame_numbers,
    jpeg_size,
    read_frame_bytes,
)
from trainer.data.items import VideoItem
from trainer.data.video import VideoError, VideoInfo, open_video, read_frames, video_info


def noise_folder(folder: Path, frames: int, height: int = 30, width: int = 40) -> Path:
    """A frame folder of random pictures (JPEG quality 90), so a decode has work to match."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(frames):
        image = torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))
        frame_file(folder, i).write_bytes(encode_jpeg(image, quality=90).numpy().tobytes())
    return folder


def test_frame_names_gaps_and_the_folder_of_a_video():
    assert frame_file(Path("f"), 0) == Path("f/img_00001.jpg")
    names = ["img_00002.jpg", "fps.txt", "img_00001.jpg", "img_1.jpg", "img_00003.png", "x"]
    assert frame_numbers([*names, "img_100000.jpg"]) == [1, 2, 100000]
    assert first_gap([1, 2, 3]) is None and first_gap([]) is None
    assert first_gap([1, 2, 4, 5]) == 3 and first_gap([2, 3]) == 1
    assert folder_name("v_YoYo_g01_c01.avi") == "v_YoYo_g01_c01" and folder_name("7") == "7"
    assert folder_name("a.b.mp4") == "a.b"


def test_jpeg_size_reads_the_header_only():
    data = encode_jpeg(torch.zeros(3, 30, 41, dtype=torch.uint8)).numpy().tobytes()
    assert jpeg_size(data) == (30, 41)
    assert jpeg_size(data[:200]) == (30, 41)  # the header comes before the picture
    assert jpeg_size(b"\x89PNG\r\n") is None and jpeg_size(b"\xff\xd8\xff\xda\x00\x02") is None
    assert jpeg_size(b"") is None


def test_the_reader_returns_the_same_jpegs_decoded(tmp_path):
    folder = noise_folder(tmp_path / "clip", frames=9)
    (folder / FPS_FILE).write_text("29.97002997002997\n")
    assert video_info(folder) == VideoInfo(num_frames=9, fps=29.97002997002997, height=30, width=40)
    reader, info = open_video(folder)
    wanted = [8, 0, 3, 3, 5]
    decoded = torch.stack([decode_jpeg(read_file(str(frame_file(folder, i)))) for i in wanted])
    frames = read_frames(reader, wanted)
    assert frames.dtype == torch.uint8 and frames.is_contiguous()
    assert torch.equal(frames, decoded.permute(0, 2, 3, 1))
    assert [b.numel() for b in read_frame_bytes(folder, wanted)] == [
        frame_file(folder, i).stat().st_size for i in wanted
    ]
    # at a short side: the decoded frames resized as a video's are (torch, antialiased)
    reader, info = open_video(folder, short_side=15)
    assert (info.height, info.width) == (15, 20)
    resized = TF.resize(decoded, [15, 20], antialias=True).permute(0, 2, 3, 1)
    assert torch.equal(read_frames(reader, wanted), resized)
    with pytest.raises(IndexError):
        read_frames(reader, [9])


def test_a_folder_without_fps_has_rate_zero_and_grey_frames_read_back(tmp_path):
    folder = write_frame_folder(tmp_path / "bike", frames=6, fps=None)
    reader, info = open_video(folder)
    assert (info.num_frames, info.fps) == (6, 0.0)
    assert [frame_level(f) for f in read_frames(reader, [5, 1])] == [5, 1]


def one_sentence(error: VideoError, text: str) -> None:
    assert "\n" not in str(error) and str(error) == text, str(error)


def test_bad_folders_are_one_sentence_naming_the_folder(tmp_path):
    gap = write_frame_folder(tmp_path / "gap", frames=6)
    frame_file(gap, 2).unlink()
    with pytest.raises(VideoError) as bad:
        open_video(gap)
    one_sentence(
        bad.value, f"frame folder {gap} has a gap: img_00003.jpg is missing before img_00006.jpg"
    )
    short = write_frame_folder(tmp_path / "short", frames=3)
    with pytest.raises(VideoError) as bad:
        open_video(short, min_frames=8)
    one_sentence(bad.value, f"frame folder {short} has 3 frames, fewer than 8")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError) as bad:
        open_video(empty)
    one_sentence(bad.value, f"frame folder {empty} has no frames (no img_00001.jpg)")
    corrupt = write_frame_folder(tmp_path / "corrupt", frames=4)
    frame_file(corrupt, 0).write_bytes(b"GIF89a")
    with pytest.raises(VideoError) as bad:
        open_video(corrupt)
    one_sentence(
        bad.value, f"frame folder {corrupt} has a first frame that is not a JPEG (img_00001.jpg)"
    )
    truncated = write_frame_folder(tmp_path / "truncated", frames=4)
    frame_file(truncated, 2).write_bytes(frame_file(truncated, 2).read_bytes()[:150])
    reader, _ = open_video(truncated)
    with pytest.raises(VideoError) as bad:
        read_frames(reader, [0, 2])
    one_sentence(
        bad.value,
        f"frame folder {truncated} has a frame that cannot be decoded (img_00003.jpg: "
        "Image is incomplete or truncated)",
    )
    assert pickle.loads(pickle.dumps(bad.value)).args == bad.value.args  # loader workers
    (truncated / FPS_FILE).write_text("fast")
    with pytest.raises(VideoError, match=f"frame folder {truncated} has a bad fps.txt"):
        open_video(truncated)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    good = [write_frame_folder(root / f"v{i}", frames=24) for i in range(2)]
    gap = write_frame_folder(root / "gap", frames=24)
    frame_file(gap, 10).unlink()
    return {"good": good, "gap": gap, "short": write_frame_folder(root / "short", frames=3)}


SMALL = dict(size=32, short_side=36)


def levels(clip: torch.Tensor) -> list[int]:  # uint8 [T, 3, S, S]
    return [frame_level(frame) for frame in clip.numpy()]


def test_the_loader_reads_frame_folders_and_skips_bad_ones(clips):
    paths = [*clips["good"], clips["gap"], clips["short"]]
    items = [VideoItem(p, p.name, (i % 2,)) for i, p in enumerate(paths)]
    ds = VideoClipDataset(items, 2, False, ClipSpec(frames=4, **SMALL))
    batch = next(iter(make_loader(ds, 4, EpochSampler(4, shuffle=False), workers=0)))
    assert batch["video_ids"] == ["v0", "v1"] and batch["frames"].shape == (2, 4, 3, 32, 32)
    assert all(6 * k <= f < 6 * (k + 1) for k, f in enumerate(levels(batch["frames"][0])))
    reasons = {s.video_id: s.reason for s in batch["skipped"]}
    assert reasons.keys() == {"gap", "short"}
    assert "has a gap: img_00011.jpg is missing" in reasons["gap"]


def test_views_and_charades_intervals_read_frame_folders_as_videos(clips, tmp_path):
    """The feature cache's views and the instance intervals (seconds at fps.txt's rate)
    give the same frames from a folder as from the video it was made of."""
    video = write_video(tmp_path / "v.mp4", frames=24, width=64, height=48, fps=8)
    folder = clips["good"][0]  # 24 frames, 8 fps, the same grey levels
    spec = ClipSpec(frames=4, **SMALL)
    for path in (video, folder):
        item = VideoItem(path, "c@0", (0,), interval=(1.0, 2.0))  # 8 fps: frames [8, 16)
        ds = VideoClipDataset([item], 2, True, spec, seed=5)
        views = ds.views(0, [0, 1, 2])
        got = [levels(clip) for clip in views["frames"]]
        assert all(8 <= f < 16 for clip in got for f in clip)
        if path == video:
            from_video = got
    assert got == from_video


def test_a_bike_style_frame_folder_list_trains_and_evaluates(world, tmp_path):
    """The world's list dataset as frame folders with BIKE's list lines (`folder
    total_frames label`): a run reads every clip of it (none skipped)."""
    from testkit.cli import TINY_CLIP_CONFIG
    from trainer.data.prepare import prepare_videos
    from trainer.settings import RunConfig
    from trainer.training import train

    frames = tmp_path / "frames"
    summary = prepare_videos("list", world["root"], frames, show_progress=False, to="frames")
    assert summary.prepared == summary.videos == 12
    for split in ("train", "test"):
        lines = (world["root"] / f"{split}.txt").read_text().split("\n")
        bike = [
            f"{Path(p).with_suffix('')} 12 {label}"
            for p, label in map(str.split, filter(None, lines))
        ]
        (frames / f"{split}.txt").write_text("\n".join(bike) + "\n")
    run = tmp_path / "run"
    cfg = RunConfig(
        dataset="list", root=frames, subtexts=world["subtexts"],
        clip_model=str(TINY_CLIP_CONFIG), clip_pretrained=str(world["ckpt"]),
        frames=4, epochs=1, batch_size=3, warmup_epochs=0, workers=0, device="cpu", out=run,
    )  # fmt: skip
    metrics = train(cfg, show_progress=False)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (epoch,) = [line for line in logged if "train_loss" in line]
    assert epoch["skipped"] == 0 and np.isfinite(epoch["train_loss"])
    assert metrics  # evaluated on the test folders
