"""Stage two's multi-file inputs when they are half-written or damaged: an export replaced
all or nothing, an export's architecture checked against its weights' shapes before any
model is built, a damaged feature cache named and repaired by `cache-features`, and the
file inputs that used to end in a traceback, each one sentence."""

import json
import shutil
import time

import numpy as np
import pytest
import torch

from storyboard_common.errors import UserError
from testkit.cli import run_app
from testkit.list_runs import TEST_VIDEOS, TRAIN_VIDEOS, frozen_config, make_cache
from trainer import export
from trainer.cache.store import FeatureCache, read_meta
from trainer.data.layouts import generic
from trainer.export import read_export_config, read_weights, write_export
from trainer.run_models import export_run, load_run
from trainer.training import train

SIZES = {"train": TRAIN_VIDEOS, "test": TEST_VIDEOS}


@pytest.fixture(scope="module")
def exported(world, tmp_path_factory):
    """A 1-epoch run and its export."""
    base = tmp_path_factory.mktemp("exported")
    cfg = frozen_config(world, epochs=1, out=base / "run")
    train(cfg, show_progress=False)
    return {"cfg": cfg, "run": cfg.out, "export": export_run(cfg.out, base / "export")}


def copy_of(folder, tmp_path, name="model"):
    return shutil.copytree(folder, tmp_path / name)


def contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_export_killed_over_another_leaves_the_old_one_whole(exported, tmp_path, monkeypatch):
    home = tmp_path / "exports"
    out = copy_of(exported["export"], home)
    before = contents(out)
    config = read_export_config(out)
    weights = {name: t + 1 for name, t in read_weights(out).items()}
    clip_config = json.loads((out / "clip_config.json").read_text())
    subtexts = shutil.copy(out / "subtexts.parquet", tmp_path)
    newer = (out, weights, {**config, "epoch": 99}, clip_config, subtexts, "new")

    def killed(*args, **kwargs):  # after model.safetensors, at the first JSON file
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        write_export(*newer)
    monkeypatch.undo()
    assert contents(out) == before
    assert sorted(p.name for p in home.iterdir()) == ["model"]  # nothing half-written
    assert load_run(out, device="cpu").checkpoint["epoch"] == 1

    # A kill between setting the old export aside and renaming the new one in: readers
    # load the old one, and the next export cleans up what the killed one left.
    staging, aside = home / ".model.export-dead", home / ".model.replaced-dead"
    shutil.copytree(out, staging)
    (staging / "model.safetensors").write_bytes(b"half")
    out.rename(aside)
    assert load_run(out, device="cpu").checkpoint["epoch"] == 1
    write_export(*newer)
    assert sorted(p.name for p in home.iterdir()) == ["model"]
    assert load_run(out, device="cpu").checkpoint["epoch"] == 99
    assert torch.equal(read_weights(out)["head.logit_scale"], weights["head.logit_scale"])


def test_an_architecture_that_does_not_fit_the_weights_is_refused_before_allocation(
    exported, tmp_path
):
    out = copy_of(exported["export"], tmp_path)
    path = out / "clip_config.json"
    clip_config = json.loads(path.read_text())
    clip_config["vision_cfg"].update(width=1024, layers=24)  # 3.7 GB if it were built
    path.write_text(json.dumps(clip_config))
    started = time.perf_counter()
    with pytest.raises(UserError) as caught:
        load_run(out, device="cpu")
    assert time.perf_counter() - started < 1.0
    assert str(caught.value).startswith(
        f"{out / 'model.safetensors'} does not fit {path} and {out / 'config.json'}: tensor "
    )
    assert "visual.class_embedding is [32] in the weights but [1024] in the model" in str(
        caught.value
    )


def edit_json(name, change):
    def edit(folder):
        path = folder / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return edit


def wrong_shape(folder):
    from safetensors.torch import save_file

    weights = read_weights(folder)
    weights["head.logit_scale"] = torch.zeros(2, 2)
    save_file(weights, folder / "model.safetensors", {"format": "pt"})


def write_bytes(name, data):
    return lambda folder: (folder / name).write_bytes(data)


@pytest.mark.parametrize(
    "damage, message",
    [
        (wrong_shape, "tensor head.logit_scale is [2, 2] in the weights but [] in the model"),
        (
            edit_json("config.json", lambda c: {k: v for k, v in c.items() if k != "training"}),
            "config.json has no 'training' section (dict): it is damaged",
        ),
        (write_bytes("clip_config.json", b"{not json"), "clip_config.json cannot be read as JSON"),
        (edit_json("config.json", lambda c: {**c, "version": "1"}), "has version '1', not a whole"),
        (write_bytes("model.safetensors", b"\0" * 20), "is not a readable safetensors file"),
        (
            lambda folder: truncate(folder / "model.safetensors"),
            "model.safetensors is not a readable safetensors file",
        ),
        (
            edit_json("config.json", lambda c: {**c, "training": {}}),
            "config.json names no dataset in its 'training' section",
        ),
        (
            write_bytes("clip_config.json", b'{"embed_dim": 32, "vision_cfg": {}, "text_cfg": {}}'),
            "class_embedding is [32] in the weights but [768]",
        ),
        (
            write_bytes("clip_config.json", b"{}"),
            "clip_config.json is not an open_clip model config (it needs embed_dim",
        ),
        (
            edit_json(
                "config.json", lambda c: {**c, "training": {**c["training"], "temporal_layers": 1}}
            ),
            "is absent in the weights but [",
        ),
    ],
)
def test_a_damaged_export_is_one_sentence_naming_its_file(exported, tmp_path, damage, message):
    out = copy_of(exported["export"], tmp_path)
    damage(out)
    with pytest.raises(UserError, match=str(out)) as caught:
        load_run(out, device="cpu")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_file_inputs_of_the_cli_are_one_sentence(world, exported, tmp_path):
    from trainer.__main__ import app

    # export --out an existing file: refused before the run is loaded
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    with pytest.raises(UserError, match=f"^--out {blocker} is a file, not a folder"):
        export_run(exported["run"], blocker)
    assert blocker.read_text() == "mine"

    # predict --plot a folder or an unknown suffix: refused before anything is predicted
    video = world["root"] / "clips" / "c2_3.mp4"
    for plot, message in ((tmp_path, "is a folder"), (tmp_path / "plot.xyz", "no image suffix")):
        code, output, error = run_app(
            app, "predict", video, "--checkpoint", exported["export"], "--plot", plot
        )
        assert code == 1 and message in str(error) and "probability" not in output

    # run --resume with a damaged config.json
    run = shutil.copytree(exported["run"], tmp_path / "run")
    (run / "config.json").write_text('{"dataset": "li')
    cfg = frozen_config(world, epochs=1, out=run)
    with pytest.raises(UserError, match=rf"^--resume: {run / 'config.json'} is damaged"):
        train(cfg, resume=True, show_progress=False)
    (run / "config.json").write_text(json.dumps({"frames": "four"}))
    with pytest.raises(UserError, match="is damaged"):
        train(cfg, resume=True, show_progress=False)

    # the list layout's classes.csv with bytes that are not UTF-8
    root = tmp_path / "list"
    root.mkdir()
    (root / "classes.csv").write_bytes(b"id,name\n0,caf\xe9\n")
    (root / "train.txt").write_text("a.mp4 0\n")
    with pytest.raises(
        UserError,
        match=rf"^the class list file {root / 'classes.csv'} is not UTF-8 text \(it holds the byte",
    ):
        generic.load(root, "train")


# ---------------------------------------------------------------- the feature cache


@pytest.fixture(scope="module")
def features(world, tmp_path_factory):
    """A float32 cache of 2 training views (5 shards of at most 4 rows) and 1 test view."""
    out = tmp_path_factory.mktemp("features") / "cache"
    make_cache(world, out)
    return out


def truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


@pytest.mark.parametrize(
    "name, damage, state",
    [
        ("shards/train-00001.npy", truncate, "bytes, not the"),
        ("shards/test-00000.npy", lambda p: p.unlink(), "(missing)"),
        ("index.parquet", truncate, "is damaged ("),
        ("meta.json", lambda p: p.write_text("{"), "is damaged (not a JSON object)"),
    ],
)
def test_a_damaged_cache_is_one_sentence_naming_the_file(features, tmp_path, name, damage, state):
    cache = copy_of(features, tmp_path, "cache")
    damage(cache / name)
    with pytest.raises(UserError, match=f"^{cache / name} ") as caught:
        FeatureCache(cache, {}, SIZES)
    assert state in str(caught.value)


def test_a_run_and_eval_from_a_damaged_cache_name_the_shard(world, exported, features, tmp_path):
    from trainer.evaluation import evaluate_checkpoint

    cache = copy_of(features, tmp_path, "cache")
    shard = cache / "shards" / "test-00000.npy"
    truncate(shard)
    with pytest.raises(UserError, match=f"^{shard} is damaged .*rerun `python -m trainer cache"):
        train(frozen_config(world, features=cache, out=tmp_path / "run"), show_progress=False)
    with pytest.raises(UserError, match=f"^{shard} is damaged"):
        evaluate_checkpoint(exported["run"], features=cache, workers=0, show_progress=False)


def overwrite_same_size(shard):
    """Other values in the shard, its size (and header) unchanged: only the CRC-32 tells."""
    size = shard.stat().st_size
    np.save(shard, np.load(shard) + 1)
    assert shard.stat().st_size == size


def test_a_shard_overwritten_with_other_values_is_refused_at_its_first_read(
    world, exported, features, tmp_path
):
    from trainer.cache.store import read_index, read_split
    from trainer.evaluation import evaluate_checkpoint

    cache = copy_of(features, tmp_path, "cache")
    shard = cache / "shards" / "train-00001.npy"
    overwrite_same_size(shard)
    refusal = (
        f"^{shard} is damaged \\(its CRC-32 is [0-9a-f]{{8}}, not the [0-9a-f]{{8}} written\\); "
        "rerun `python -m trainer cache-features` with the same flags to repair the cache.$"
    )
    reader = FeatureCache(cache, {}, SIZES)  # the sizes are right: refused when read
    index = read_index(cache)
    train_rows = index[index["split"] == "train"]
    in_shard = set(train_rows[train_rows["shard"] == 1]["item"])
    elsewhere = sorted(set(train_rows["item"]) - in_shard)
    assert in_shard and elsewhere
    assert reader.read("train", elsewhere[0], [0]).shape[0] == 1  # other shards read
    with pytest.raises(UserError, match=refusal):
        reader.read("train", min(in_shard), [0, 1])
    with pytest.raises(UserError, match=refusal):
        read_split(cache, "train")
    with pytest.raises(UserError, match=refusal):
        train(frozen_config(world, features=cache, out=tmp_path / "run"), show_progress=False)
    test_shard = cache / "shards" / "test-00000.npy"
    overwrite_same_size(test_shard)
    with pytest.raises(UserError, match=f"^{test_shard} is damaged \\(its CRC-32"):
        evaluate_checkpoint(exported["run"], features=cache, workers=0, show_progress=False)


def test_cache_features_repairs_damaged_shards_and_index(world, features, tmp_path):
    cache = copy_of(features, tmp_path, "cache")
    flipped = cache / "shards" / "train-00002.npy"
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF  # the same size: only the checksum tells
    flipped.write_bytes(bytes(data))
    truncate(cache / "shards" / "train-00001.npy")
    (cache / "shards" / "test-00000.npy").unlink()
    summary = make_cache(world, cache)
    assert sorted(summary["repaired"]) == sorted(
        str(cache / "shards" / f"{name}.npy")
        for name in ("test-00000", "train-00001", "train-00002")
    )
    assert summary["encoded"] == {"train": 8, "test": TEST_VIDEOS}  # two shards of 4 rows
    identity = read_meta(features)
    repaired, pristine = (
        FeatureCache(cache, identity, SIZES),
        FeatureCache(features, identity, SIZES),
    )
    for split, views in (("train", [0, 1]), ("test", [0])):
        for p in range(SIZES[split]):
            np.testing.assert_allclose(
                repaired.read(split, p, views), pristine.read(split, p, views), atol=1e-5
            )

    truncate(cache / "index.parquet")  # the whole index lost: every view encoded again
    summary = make_cache(world, cache)
    assert summary["repaired"] == [str(cache / "index.parquet")]
    assert summary["encoded"] == {"train": 2 * TRAIN_VIDEOS, "test": TEST_VIDEOS}
    assert make_cache(world, cache)["repaired"] == []
    FeatureCache(cache, identity, SIZES)
    assert len(list((cache / "shards").iterdir())) == 6  # no shard of the lost index left
