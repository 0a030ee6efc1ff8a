"""The frozen-feature cache: round trip, index, resume, refusal, and cached runs that match
uncached ones (tiny CLIP, the tiny list dataset of `conftest.world`)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from storyboard_common.errors import UserError
from testkit.cli import REPO, TINY_CLIP_CONFIG
from testkit.list_runs import TEST_VIDEOS, TRAIN_VIDEOS, counting_encoder, frozen_config, make_cache
from testkit.videos import write_corrupt
from trainer import run_data, run_models, training
from trainer.cache.dataset import train_view
from trainer.cache.store import INDEX_SCHEMA, FeatureCache, cache_identity, read_index, read_split
from trainer.distributed import init_distributed
from trainer.training import train


@pytest.fixture(scope="module")
def cached(world, tmp_path_factory):
    """A float32 cache of 2 training views and 2 clips x 3 crops of evaluation views."""
    out = tmp_path_factory.mktemp("cache") / "features"
    make_cache(world, out, eval_clips=2, eval_crops=3)
    return {"out": out}


def test_cached_features_are_the_towers_frame_embeddings(world, cached):
    cfg = frozen_config(world, eval_clips=2, eval_crops=3)
    built = run_models.build(cfg, init_distributed("cpu"), world["subtexts"])
    data = run_data.prepare_data(cfg, world["root"], None)
    train_set, test_set = run_data.clip_datasets(
        cfg, data.train, list(data.train.items), data.test, built.image_size
    )
    identity = cache_identity("list", None, built.clip_id, train_set, test_set)
    cache = FeatureCache(cached["out"], identity, {"train": TRAIN_VIDEOS, "test": TEST_VIDEOS})
    index = read_index(cached["out"])
    for split, dataset, key, views in (
        ("train", train_set, (1, 4), [1]),
        ("test", test_set, (0, 2), range(6)),
    ):
        sample = dataset[key]
        with torch.no_grad():
            expected = built.model.encode_frames(sample["frames"])
        got = cache.read(split, key[1], views)
        assert got.dtype == np.float32 and got.shape == (len(views), 4, 32)
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)
        rows = index[(index["split"] == split) & (index["item"] == key[1])].sort_values("view")
        rows = rows[rows["view"].isin(list(views))]
        assert [list(r) for r in rows["frame_indices"]] == sample["frame_indices"].tolist()


def test_read_split_gives_every_row_in_item_view_order(world, cached):
    index = read_index(cached["out"])
    rows = read_split(cached["out"], "test")
    assert rows.features.shape == (TEST_VIDEOS * 6, 4, 32)
    assert list(zip(rows.items, rows.views)) == [
        (p, v) for p in range(TEST_VIDEOS) for v in range(6)
    ]
    first = read_split(cached["out"], "train", view=1)
    assert first.items.tolist() == list(range(TRAIN_VIDEOS)) and set(first.views) == {1}
    for i in (0, TRAIN_VIDEOS - 1):
        row = index[(index["split"] == "train") & (index["item"] == i) & (index["view"] == 1)]
        shard = np.load(cached["out"] / "shards" / f"train-{int(row['shard'].iloc[0]):05d}.npy")
        np.testing.assert_array_equal(first.features[i], shard[int(row["offset"].iloc[0])])
        assert first.video_ids[i] == row["video_id"].iloc[0]
        assert first.frame_indices[i] == list(row["frame_indices"].iloc[0])
    with pytest.raises(UserError, match="holds no train rows of view 9"):
        read_split(cached["out"], "train", view=9)


def test_index_has_a_row_per_view_and_shards_of_fixed_rows(world, cached):
    out = cached["out"]
    index = pd.read_parquet(out / "index.parquet")
    assert list(index.columns) == INDEX_SCHEMA.names
    train_rows, test_rows = index[index["split"] == "train"], index[index["split"] == "test"]
    assert len(train_rows) == TRAIN_VIDEOS * 2 and len(test_rows) == TEST_VIDEOS * 6
    assert sorted(zip(train_rows["item"], train_rows["view"])) == [
        (p, v) for p in range(TRAIN_VIDEOS) for v in range(2)
    ]
    assert set(train_rows["video_id"]) == {f"clips/c{c}_{i}" for c in range(3) for i in range(3)}
    assert all(len(f) == 4 for f in index["frame_indices"])
    assert (index["labels"].map(len) == 1).all()
    shards = sorted((out / "shards").glob("*.npy"))
    assert [s.name for s in shards] == [f"test-0000{i}.npy" for i in range(5)] + [
        f"train-0000{i}.npy" for i in range(5)
    ]
    sizes = [len(np.load(s, mmap_mode="r")) for s in shards]
    assert sizes == [4, 4, 4, 4, 2, 4, 4, 4, 4, 2]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["views"] == 2 and meta["frames"] == 4 and meta["dtype"] == "float32"
    assert meta["skipped"] == {"train": [], "test": []}
    assert not (out / "index-parts").exists()


def test_resume_after_a_crash_encodes_only_what_is_missing(world, cached, tmp_path, monkeypatch):
    out = tmp_path / "features"
    counting_encoder(monkeypatch, crash_after=3)  # batches of 3 training views
    with pytest.raises(RuntimeError, match="killed"):
        make_cache(world, out, eval_clips=2, eval_crops=3)
    survived = read_index(out)
    assert len(survived) == 8  # two full shards of 4 training views; the 9th row was lost
    before = {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*.npy")}

    clips_encoded = counting_encoder(monkeypatch)
    summary = make_cache(world, out, eval_clips=2, eval_crops=3)
    assert sum(clips_encoded) == TRAIN_VIDEOS * 2 + TEST_VIDEOS * 6 - 8
    assert summary["encoded"] == {"train": TRAIN_VIDEOS * 2 - 8, "test": TEST_VIDEOS * 6}
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # committed shards kept
    resumed, straight = read_index(out), read_index(cached["out"])
    key = ["split", "item", "view"]
    resumed, straight = resumed.sort_values(key), straight.sort_values(key)
    assert resumed[key].values.tolist() == straight[key].values.tolist()
    sizes = {"train": TRAIN_VIDEOS, "test": TEST_VIDEOS}
    identity = json.loads((out / "meta.json").read_text())
    a, b = FeatureCache(out, identity, sizes), FeatureCache(cached["out"], identity, sizes)
    for p in range(TRAIN_VIDEOS):
        np.testing.assert_allclose(
            a.read("train", p, [0, 1]), b.read("train", p, [0, 1]), atol=1e-6
        )  # other batches: GEMM blocking may differ

    clips_encoded.clear()  # finished: a rerun encodes nothing
    assert make_cache(world, out, eval_clips=2, eval_crops=3)["encoded"] == {"train": 0, "test": 0}
    assert clips_encoded == []


def test_refuses_a_cache_made_with_other_frames_or_another_clip(world, cached, tmp_path):
    out = cached["out"]
    with pytest.raises(UserError, match=rf"{out} was cached with frames=4, not 2; "):
        make_cache(world, out, eval_clips=2, eval_crops=3, frames=2)
    with pytest.raises(
        UserError,
        match=r"was cached with clip_pretrained=clip.pt@\w+, "
        r"not none",
    ):
        make_cache(world, out, eval_clips=2, eval_crops=3, clip_pretrained="none")
    with pytest.raises(UserError, match=r"was cached with views=2, not 3"):
        make_cache(world, out, views=3, eval_clips=2, eval_crops=3)
    with pytest.raises(UserError, match=rf"{out} was cached with eval_crops=3, not 1; "):
        train(
            frozen_config(world, features=out, out=tmp_path / "run", eval_clips=2),
            show_progress=False,
        )
    (tmp_path / "notes.txt").write_text("not a cache")
    with pytest.raises(UserError, match=rf"{tmp_path} is not empty and not a feature cache"):
        make_cache(world, tmp_path)
    with pytest.raises(UserError, match="is not a feature cache"):
        train(frozen_config(world, features=tmp_path, out=tmp_path / "run2"), show_progress=False)


def test_an_unfinished_cache_is_refused_by_a_run(world, tmp_path, monkeypatch):
    out = tmp_path / "features"
    counting_encoder(monkeypatch, crash_after=3)
    with pytest.raises(RuntimeError, match="killed"):
        make_cache(world, out)
    # 4 training videos have both views (two shards of 4 rows); 5 + 3 test videos lack some
    with pytest.raises(UserError, match=r"is incomplete \(8 videos not encoded yet\); rerun"):
        train(frozen_config(world, features=out, out=tmp_path / "run"), show_progress=False)


def metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_cached_frozen_run_matches_the_uncached_one_and_resumes(world, tmp_path, monkeypatch):
    cache = tmp_path / "features"
    make_cache(world, cache, views=3)
    straight = train(frozen_config(world, out=tmp_path / "videos"), show_progress=False)
    from_cache = train(
        frozen_config(world, out=tmp_path / "cached", features=cache), show_progress=False
    )
    assert from_cache["top1"] == straight["top1"] and from_cache["top5"] == straight["top5"]
    a, b = metrics(tmp_path / "videos"), metrics(tmp_path / "cached")
    assert [set(x) for x in a] == [set(x) for x in b]
    for x, y in zip(a, b):
        for k in ("train_loss", "top1", "top5", "mean_class_acc"):
            if k in x:
                assert y[k] == pytest.approx(x[k], abs=1e-4), k

    real_epoch, epochs_started = training.Trainer.train_epoch, []

    def ctrl_c_in_epoch_two(trainer, *args):
        epochs_started.append(1)
        trainer.state.stop_requested = len(epochs_started) == 2  # after epoch 2's first step
        return real_epoch(trainer, *args)

    monkeypatch.setattr(training.Trainer, "train_epoch", ctrl_c_in_epoch_two)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(frozen_config(world, out=cut, features=cache), show_progress=False)
    monkeypatch.setattr(training.Trainer, "train_epoch", real_epoch)
    resumed = train(frozen_config(world, out=cut, features=cache), resume=True, show_progress=False)
    assert resumed["top1"] == from_cache["top1"]
    last = [x for x in metrics(cut) if "train_loss" in x][-1]
    assert last["train_loss"] == pytest.approx(b[-2]["train_loss"], rel=1e-5)


def test_training_views_cycle_per_appearance():
    # supervised: epoch e reads view e % V
    assert [train_view(e, 5, 9, 9, 3) for e in range(5)] == [0, 1, 2, 0, 1]
    # a 2-item list repeated 3 times: each appearance of an item reads the next view
    assert [train_view(0, i, 2, 6, 4) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [train_view(1, i, 2, 6, 4) for i in range(6)] == [3, 3, 0, 0, 1, 1]


def test_cli_writes_the_cache_and_lists_unreadable_videos(world, tmp_path):
    from typer.testing import CliRunner

    from trainer.__main__ import app

    root = tmp_path / "data"
    shutil.copytree(world["root"], root)
    write_corrupt(root / "clips" / "broken.mp4")
    with open(root / "train.txt", "a") as fh:
        fh.write("clips/broken.mp4 0\n")
    out = tmp_path / "features"
    common = [
        "--dataset",
        "list",
        "--root",
        str(root),
        "--clip-model",
        str(TINY_CLIP_CONFIG),
        "--clip-pretrained",
        str(world["ckpt"]),
        "--frames",
        "4",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--seed",
        "1",
    ]
    done = CliRunner().invoke(app, ["cache-features", *common, "--views", "2", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "train: 18 views encoded, 1 unreadable" in done.output
    assert "clips/broken" in done.output
    assert {p.name for p in out.iterdir()} == {"meta.json", "index.parquet", "shards"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "float16" and [s["video_id"] for s in meta["skipped"]["train"]] == [
        "clips/broken"
    ]
    assert np.load(next((out / "shards").glob("train-*.npy"))).dtype == np.float16

    run = [
        "run",
        *common,
        "--subtexts",
        str(world["subtexts"]),
        "--epochs",
        "1",
        "--batch-size",
        "3",
        "--features",
        str(out),
        "--json",
    ]
    refused = subprocess.run(
        [sys.executable, "-m", "trainer", *run, "--out", str(tmp_path / "a")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert refused.stderr == (
        f"error: --features {out} holds frozen-backbone features: add --freeze-backbone, or "
        "drop --features to train the backbone.\n"
    )
    ok = CliRunner().invoke(app, [*run, "--freeze-backbone", "--out", str(tmp_path / "b")])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["n"] == 3  # stdout is the JSON alone
    assert metrics(tmp_path / "b")[0]["skipped"] == 1  # the unreadable video, as uncached


def test_forward_takes_clips_or_their_frame_features(world):
    """One head path: `forward(clips)` is `forward_features(encode_frames(clips))`, with a
    temporal module that is not the identity (it trains, so the cache stores its input)."""
    cfg = frozen_config(world, temporal_layers=1)
    built = run_models.build(cfg, init_distributed("cpu"), world["subtexts"])
    model, text = built.model, built.text
    torch.nn.init.normal_(model.temporal.proj.weight)
    clips = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        from_clips = model(clips, text)
        features = model.encode_frames(clips)
        from_features = model(features, text)
        from_float16 = model(features.half(), text)  # as a float16 cache gives them
    assert not torch.allclose(from_clips["frames"], features)
    for key in ("logits", "coarse", "fine", "frames"):
        torch.testing.assert_close(from_features[key], from_clips[key], atol=0, rtol=0)
        torch.testing.assert_close(from_float16[key], from_clips[key], atol=5e-2, rtol=1e-2)
