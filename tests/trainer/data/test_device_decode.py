"""`--decode-device cuda`: loader workers hand over frame folders' JPEG bytes and each view's
drawn geometry, and the clips are decoded and cut on a device. Run here with device cpu
(the same functions), against the CPU path: the frames decoded one clip at a time in the
worker and `train_transform` / `eval_transform` drawn from the same seeds.

Tolerance: none. On the CPU both paths decode with the same libjpeg-turbo call and cut with
the same torchvision kernels, so any difference is a wrong crop box, flip or grey decision,
or wrong frames: the tests demand equality, pixel for pixel. On a GPU, nvJPEG's inverse DCT
and chroma upsampling round differently from libjpeg-turbo's (a few grey levels); that is the
only difference left, and what `make gpu-check` measures.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from storyboard_common.errors import UserError
from testkit.cli import run_app
from testkit.frame_folders import write_frame_folder
from testkit.list_runs import run_config
from testkit.videos import write_video
from trainer import training
from trainer.__main__ import app
from trainer.cache.build import cache_features
from trainer.data.dataset import ClipSpec, EpochSampler, VideoClipDataset, make_loader
from trainer.data.device_transforms import (
    ClipView,
    EncodedClips,
    centre_crop,
    crop_size,
    decode_clips,
    draw_crop_box,
    draw_train_view,
    eval_views,
    fallback_crop,
)
from trainer.data.frames import frame_file
from trainer.data.items import VideoItem
from trainer.data.transforms import CROP_RATIO, CROP_SCALE, train_transform
from trainer.evaluation import model_inputs
from trainer.run_data import check_decode_device

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Three frame folders of 12 frames, landscape, portrait and nearly square (at short
    side 32 it is 32 x 35: a centre crop rounds 1.5 px to 2)."""
    root = tmp_path_factory.mktemp("frames")
    sizes = [(48, 64), (72, 40), (40, 44)]
    return [
        write_frame_folder(root / f"f{i}", frames=12, height=h, width=w, seed=i)
        for i, (h, w) in enumerate(sizes)
    ]


def items(paths):
    return [VideoItem(Path(p), Path(p).name, (i % 2,)) for i, p in enumerate(paths)]


def test_crop_geometry_by_hand():
    # 100 x 200 frame, half its area at aspect 2: w = sqrt(10000 * 2) = 141.4, h = 70.7
    assert crop_size(100, 200, 0.5, 2.0) == (71, 141)
    assert crop_size(100, 200, 1.0, 4 / 3) is None  # 115 px high does not fit 100
    # too wide for 4/3: full height, width 4/3 of it; too tall: full width
    assert fallback_crop(10, 1000, (3 / 4, 4 / 3)) == (0, 493, 10, 13)
    assert fallback_crop(1000, 10, (3 / 4, 4 / 3)) == (493, 0, 13, 10)
    assert fallback_crop(40, 50, (3 / 4, 4 / 3)) == (0, 0, 40, 50)
    # a 48 x 64 frame to short side 36: 36 x 48; centre 32-px crop at (2, 8); three along width
    assert eval_views(48, 64, 32, 36, 1) == [ClipView(36, 48, 2, 8, 32, 32)]
    assert [(v.top, v.left) for v in eval_views(48, 64, 32, 36, 3)] == [(2, 0), (2, 8), (2, 16)]
    assert centre_crop(32, 35, 32) == (0, 2)  # torchvision rounds 1.5 half to even


@pytest.mark.parametrize("height,width", [(256, 340), (10, 1000), (1000, 3)])  # 2: fallbacks
def test_crop_boxes_are_torchvisions_draws_from_the_same_seed(height, width):
    crop = v2.RandomResizedCrop(32, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True)
    frame = torch.zeros(()).expand(3, height, width)  # a size, no pixels
    for seed in range(50):
        torch.manual_seed(seed)
        expected = crop.make_params([frame])
        torch.manual_seed(seed)
        assert draw_crop_box(height, width) == tuple(expected.values()), seed
        own = torch.Generator().manual_seed(seed)  # what a worker draws from
        assert draw_crop_box(height, width, own) == tuple(expected.values()), seed


def test_a_training_view_draws_what_train_transform_draws():
    clip = torch.zeros(2, 48, 64, 3, dtype=torch.uint8)
    flips, greys = set(), set()
    for seed in range(40):
        torch.manual_seed(seed)
        view = draw_train_view(48, 64)
        after_view = torch.get_rng_state()
        assert draw_train_view(48, 64, torch.Generator().manual_seed(seed)) == view
        torch.manual_seed(seed)
        train_transform(32)(clip)
        assert torch.equal(after_view, torch.get_rng_state())  # the same number of draws
        flips.add(view.flip)
        greys.add(view.grey)
    assert flips == {True, False} and greys == {True, False}


def decoded(sample: dict) -> torch.Tensor:
    return decode_clips(sample["jpegs"], CPU)


@pytest.mark.parametrize(
    "spec",
    [
        ClipSpec(frames=4, size=32),
        ClipSpec(frames=4, train=False, clips=2, crops=3, size=32, short_side=36),
        ClipSpec(frames=4, train=False, size=32, short_side=32),
    ],
    ids=["train", "eval-2x3", "eval-1x1"],
)
def test_device_clips_equal_the_cpu_path_pixel_for_pixel(folders, spec):
    cpu = VideoClipDataset(items(folders), 2, False, spec, seed=3)
    device = VideoClipDataset(items(folders), 2, False, spec, seed=3, encoded=True)
    epochs = range(12) if spec.train else [0]
    flipped = []
    for index in range(len(folders)):
        want, got = cpu.views(index, epochs), device.views(index, epochs)
        assert np.array_equal(want["frame_indices"], got["frame_indices"])
        assert len(got["jpegs"]) == len(want["frames"]) == len(epochs) * spec.views
        clips = decoded(got)
        assert clips.dtype == torch.uint8 and clips.shape == want["frames"].shape
        assert torch.equal(clips, want["frames"])
        flipped += [v.flip for v in got["jpegs"].views]
        # each distinct frame's bytes handed over once
        assert len(got["jpegs"].lengths) == len(np.unique(got["frame_indices"]))
    if spec.train:
        assert set(flipped) == {True, False}  # both decisions met and matched


def test_a_loader_batch_decodes_to_the_cpu_path_batch(folders):
    spec = ClipSpec(frames=4, train=False, clips=2, crops=3, size=32, short_side=36)
    batches = []
    for encoded, workers in ((False, 0), (True, 1)):  # a worker: the bytes cross processes
        data = VideoClipDataset(items(folders), 2, False, spec, encoded=encoded)
        loader = make_loader(data, 2, EpochSampler(len(data), False), workers)
        batches.append(list(loader))
    for want, got in zip(*batches, strict=True):
        assert isinstance(got["jpegs"], EncodedClips) and "frames" not in got
        assert got["video_ids"] == want["video_ids"]
        assert torch.equal(got["views"], want["views"])
        assert torch.equal(got["labels"], want["labels"])
        assert torch.equal(model_inputs(got, CPU), model_inputs(want, CPU))


def test_bad_frame_folders_are_skipped_naming_the_file(tmp_path):
    video = write_video(tmp_path / "v.mp4", frames=12)
    gap = write_frame_folder(tmp_path / "gap", frames=12)
    frame_file(gap, 5).unlink()  # 11 frames left; 8 centres of 11 take frame 5
    odd = write_frame_folder(tmp_path / "odd", frames=12)
    frame_file(odd, 8).write_bytes(b"not a jpeg at all")  # 8 centres of 12 take frame 8
    short = write_frame_folder(tmp_path / "short", frames=3)
    spec = ClipSpec(frames=8, train=False, size=32, short_side=32)
    data = VideoClipDataset(items([video, gap, odd, short]), 2, False, spec, encoded=True)
    reasons = [data.views(i, [0]).reason for i in range(4)]
    assert reasons == [
        f"video {video} is a video file, not a frame folder",
        f"frame folder {gap} has a gap: img_00006.jpg is missing before img_00012.jpg",
        f"video {frame_file(odd, 8)} is not a JPEG image",
        "has 3 frames in range, fewer than 8",
    ]


def test_a_jpeg_that_cannot_be_decoded_is_one_sentence_naming_the_video(tmp_path):
    folder = write_frame_folder(tmp_path / "broken", frames=4)
    whole = frame_file(folder, 2).read_bytes()
    frame_file(folder, 2).write_bytes(whole[: whole.index(b"\xff\xda") + 40])  # scan cut short
    spec = ClipSpec(frames=4, train=False, size=32, short_side=32)
    data = VideoClipDataset(items([folder]), 2, False, spec, encoded=True)
    with pytest.raises(UserError, match=r"^a JPEG frame of broken cannot be decoded \("):
        model_inputs(data.views(0, [0]), CPU)


def test_decode_device_cuda_needs_a_gpu_and_frame_folders(folders, tmp_path):
    video = write_video(tmp_path / "v.mp4", frames=12)
    gpu = torch.device("cuda")
    assert check_decode_device("cuda", gpu, items(folders)) is True
    assert check_decode_device("cpu", CPU, items([video])) is False
    with pytest.raises(UserError) as refused:
        check_decode_device("cuda", gpu, items([*folders, video]))
    assert str(refused.value) == (
        f"--decode-device cuda reads frame folders, and {video} is a video file: write frame "
        "folders with `python -m trainer prepare-videos --to frames` and pass their folder as "
        "--root, or leave --decode-device at cpu."
    )
    with pytest.raises(UserError, match=r"^--decode-device cuda decodes JPEGs on the run's GPU"):
        check_decode_device("cuda", CPU, items(folders))


def test_run_and_cache_features_refuse_decode_device_cuda_writing_nothing(world, tmp_path):
    out = tmp_path / "run"
    code, _, error = run_app(
        app,
        "run",
        *("--dataset", "list", "--root", world["root"], "--subtexts", world["subtexts"]),
        *("--clip-model", run_config(world, out).clip_model),
        *("--clip-pretrained", world["ckpt"], "--device", "cpu", "--out", out),
        *("--decode-device", "cuda"),
    )
    assert code != 0 and str(error).startswith("--decode-device cuda ")  # run_cli: exit 2
    assert not out.exists()
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match=r"^--decode-device cuda "):
        cache_features(
            run_config(world, None, freeze_backbone=True, decode_device="cuda", split="1"), cache
        )
    assert not cache.exists()
    with pytest.raises(UserError, match=r"^--decode-device must be cpu or cuda, not 'gpu'"):
        training.train(run_config(world, out, decode_device="gpu"), show_progress=False)
