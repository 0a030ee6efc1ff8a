"""The feature cache across processes (torchrun and spawned gloo ranks) and evaluation from a
cache (`eval --features`): the same rows and the same metrics as one process and the videos."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_save
from testkit.cli import REPO, TINY_CLIP_CONFIG
from testkit.list_runs import TEST_VIDEOS, TRAIN_VIDEOS, counting_encoder, frozen_config, make_cache
from testkit.torchrun import torchrun_cache_features
from trainer.cache import build as cache_build
from trainer.cache.store import read_index
from trainer.checkpoints import load_checkpoint
from trainer.evaluation import evaluate_checkpoint
from trainer.training import train

ROWS = {"train": TRAIN_VIDEOS * 2, "test": TEST_VIDEOS * 6}  # 2 views; 2 clips x 3 crops
KEY = ["split", "item", "view"]


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """What one process writes: float32, 2 training views, 2 clips x 3 crops."""
    out = tmp_path_factory.mktemp("one-process") / "features"
    make_cache(world, out, eval_clips=2, eval_crops=3)
    return out


def assert_same_cache(got, want) -> None:
    """Row for row: the same (split, item, view) keys, frames, labels and features."""
    a, b = (read_index(d).sort_values(KEY).reset_index(drop=True) for d in (got, want))
    assert a[KEY].values.tolist() == b[KEY].values.tolist()
    assert a["video_id"].tolist() == b["video_id"].tolist()
    assert [list(x) for x in a["frame_indices"]] == [list(x) for x in b["frame_indices"]]
    assert [list(x) for x in a["labels"]] == [list(x) for x in b["labels"]]

    def features(directory, rows):
        where = rows[["split", "shard", "offset"]].values
        return np.stack(
            [
                np.load(directory / "shards" / f"{split}-{shard:05d}.npy")[offset]
                for split, shard, offset in where
            ]
        )

    np.testing.assert_allclose(features(got, a), features(want, b), atol=1e-5, rtol=0)
    meta_a, meta_b = (json.loads((d / "meta.json").read_text()) for d in (got, want))
    assert meta_a == meta_b
    named = {f"{s}-{n:05d}.npy" for s, n in a[["split", "shard"]].values}
    assert {p.name for p in (got / "shards").iterdir()} == named  # no stray shard or temp file
    assert not (got / "index-parts").exists()


def torchrun(world, out, ranks: int) -> dict:
    """`torchrun --nproc_per_node RANKS -m trainer cache-features ... --json` (gloo, CPU):
    the settings of `reference`; -> rank 0's summary (the only one printed)."""
    flags = {
        "dataset": "list",
        "root": world["root"],
        "clip_model": TINY_CLIP_CONFIG,
        "clip_pretrained": world["ckpt"],
        "frames": 4,
        "clips": 2,
        "crops": 3,
        "views": 2,
        "seed": 1,
        "batch_size": 3,
        "workers": 0,
        "dtype": "float32",
        "out": out,
    }
    return torchrun_cache_features(ranks, flags, env={"OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_torchrun_ranks_write_the_cache_one_process_writes(world, reference, tmp_path):
    out = tmp_path / "features"
    summary = torchrun(world, out, ranks=2)
    assert summary["encoded"] == ROWS  # counted over both ranks
    assert_same_cache(out, reference)
    shards = sorted(p.name for p in (out / "shards").iterdir())
    # each rank wrote its own shard of each split (rank r numbers its shards r, r + 2, ...)
    assert shards == ["test-00000.npy", "test-00001.npy", "train-00000.npy", "train-00001.npy"]


def _killed_rank_worker(rank: int, port: int, world, out) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    if rank == 1:  # killed (SIGKILL, no clean-up) as it starts its third batch
        calls = []

        def encode_then_die(visual, clips):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(visual, clips)

        real = cache_build.encode_frames
        cache_build.encode_frames = encode_then_die
    make_cache(world, out, eval_clips=2, eval_crops=3)


@pytest.mark.slow
def test_a_killed_rank_loses_only_its_shard_in_flight(world, reference, tmp_path, monkeypatch):
    out = tmp_path / "features"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProcessException):
        mp.spawn(_killed_rank_worker, args=(port, world, out), nprocs=2, join=True)
    survived = read_index(out)
    # Rank 1 had encoded two batches of 3 training views: its first shard of 4 rows (shard
    # 1: rank 1's numbering) is indexed, the 2 rows held in memory are lost.
    rank_one = survived[(survived["split"] == "train") & (survived["shard"] % 2 == 1)]
    assert sorted(rank_one["offset"]) == [0, 1, 2, 3] and set(rank_one["shard"]) == {1}
    assert not (out / "index.parquet").exists()

    clips_encoded = counting_encoder(monkeypatch)  # rerun in one process
    summary = make_cache(world, out, eval_clips=2, eval_crops=3)
    assert sum(clips_encoded) == sum(ROWS.values()) - len(survived)
    assert sum(summary["encoded"].values()) == sum(ROWS.values()) - len(survived)
    assert_same_cache(out, reference)


@pytest.mark.slow
def test_torchrun_ranks_finish_what_one_process_started(world, reference, tmp_path, monkeypatch):
    out = tmp_path / "features"
    counting_encoder(monkeypatch, crash_after=3)
    with pytest.raises(RuntimeError, match="killed"):
        make_cache(world, out, eval_clips=2, eval_crops=3)
    assert len(read_index(out)) == 8  # two shards of 4 training views
    summary = torchrun(world, out, ranks=2)
    assert summary["encoded"] == {"train": ROWS["train"] - 8, "test": ROWS["test"]}
    assert_same_cache(out, reference)
    assert torchrun(world, out, ranks=2)["encoded"] == {"train": 0, "test": 0}


@pytest.fixture(scope="module")
def frozen_run(world, tmp_path_factory):
    """A frozen run trained from the videos, evaluated with 2 clips x 3 crops."""
    out = tmp_path_factory.mktemp("frozen") / "run"
    train(frozen_config(world, out=out, eval_clips=2, eval_crops=3), show_progress=False)
    return out


@pytest.mark.parametrize("zero_shot", [None, "half"])
def test_eval_from_the_cache_gives_the_metrics_of_the_videos(
    world, reference, frozen_run, zero_shot
):
    kwargs = dict(
        dataset="list",
        root=world["root"],
        zero_shot=zero_shot,
        device="cpu",
        workers=0,
        show_progress=False,
    )
    videos = evaluate_checkpoint(frozen_run, **kwargs)
    cached = evaluate_checkpoint(frozen_run, **kwargs, features=reference)
    assert set(cached) == set(videos)
    for key, value in videos.items():
        assert cached[key] == (
            value if not isinstance(value, float) else pytest.approx(value, abs=1e-6)
        ), key
    if zero_shot == "half":
        assert videos["runs"] == 10


@pytest.mark.slow
def test_eval_features_on_the_command_line_and_what_it_refuses(
    world, reference, frozen_run, tmp_path
):
    args = [
        sys.executable,
        "-m",
        "trainer",
        "eval",
        "--checkpoint",
        str(frozen_run),
        "--dataset",
        "list",
        "--root",
        str(world["root"]),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--json",
    ]
    from_videos = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    from_cache = subprocess.run(
        [*args, "--features", str(reference)], cwd=REPO, capture_output=True, text=True
    )
    assert from_cache.returncode == 0, from_cache.stderr
    assert json.loads(from_cache.stdout) == pytest.approx(json.loads(from_videos.stdout))

    one_crop = tmp_path / "one-crop"  # a cache with other evaluation views
    make_cache(world, one_crop, views=1)
    with pytest.raises(UserError, match=rf"{one_crop} was cached with eval_clips=1, not 2; "):
        evaluate_checkpoint(
            frozen_run,
            "list",
            world["root"],
            device="cpu",
            workers=0,
            show_progress=False,
            features=one_crop,
        )
    state = load_checkpoint(frozen_run / "checkpoints" / "best.pt", "cpu", "")
    tuned = tmp_path / "tuned"  # the same run, as if it had trained its visual tower
    (tuned / "checkpoints").mkdir(parents=True)
    state["config"]["freeze_backbone"] = False
    atomic_save(state, tuned / "checkpoints" / "best.pt")
    with pytest.raises(UserError, match=rf"--features: {tuned} trained its visual tower"):
        evaluate_checkpoint(
            tuned,
            "list",
            world["root"],
            device="cpu",
            workers=0,
            show_progress=False,
            features=reference,
        )
