"""A run folder has one writer and holds only runs; a diverging run stops at the first
non-finite loss with its last good checkpoints kept; non-finite inputs (sub-text
embeddings, cached features) and weights (export, predict) are refused by name."""

import fcntl
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from storyboard_common.errors import UserError
from storyboard_common.files import ARTIFACTS_ENV, artifacts_root
from storyboard_common.subtexts import read_subtexts
from testkit.cli import lines
from testkit.list_runs import make_cache, run_config
from trainer import training
from trainer.cache.store import (
    INDEX_FILE,
    INDEX_SCHEMA,
    SHARDS_DIR,
    FeatureCache,
    file_crc32,
    read_meta,
)
from trainer.data.items import SplitList
from trainer.data.protocols import load_item_list
from trainer.paths import RUN_LOCK
from trainer.predict import predict_video
from trainer.run_models import export_run


class HeldLock:
    """The run lock of `folder` taken through a file handle of its own, as another process
    running into the folder holds it (flock locks belong to an open file)."""

    def __init__(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        self.handle = open(folder / RUN_LOCK, "a")  # noqa: SIM115

    def taken(self) -> bool:
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)

    def close(self) -> None:
        self.handle.close()


def test_a_run_holds_its_folder_alone_from_start_to_end(world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    other = HeldLock(out)  # a run killed before writing anything left only its lock file
    assert other.taken()  # ... and another run holds it now
    for seed, resume in ((1, False), (5, False), (1, True)):
        with pytest.raises(UserError) as refused:
            training.train(run_config(world, out, seed=seed), resume, show_progress=False)
        assert str(refused.value) == (
            f"another `trainer run` is writing {out}; wait for it to finish or use another --out."
        )
    assert [p.name for p in out.iterdir()] == [RUN_LOCK]  # nothing written
    other.release()

    held_during = []
    real_predict = training.predict

    def evaluate(*args, **kwargs):
        held_during.append(not other.taken())
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(training, "predict", evaluate)
    training.train(run_config(world, out), show_progress=False)
    assert held_during == [True]
    assert other.taken()  # released at the end
    other.close()


def test_run_refuses_a_folder_that_holds_files_but_no_run(world, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}\n')
    (out / "report.md").write_text("# my notes\n")
    for resume in (False, True):
        with pytest.raises(UserError) as refused:
            training.train(run_config(world, out), resume, show_progress=False)
        assert str(refused.value).startswith(f"--out {out} holds files but no run")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "report.md"]
    assert (out / "config.json").read_text() == '{"mine": true}\n'


def test_a_run_refused_during_set_up_leaves_no_folder_nor_lock(world, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="sub-text artifact not found"):
        training.train(
            run_config(world, out, subtexts=tmp_path / "none.parquet"), show_progress=False
        )
    assert not out.exists()


def test_a_non_finite_loss_stops_the_run_keeping_the_last_good_checkpoints(
    world, tmp_path, monkeypatch
):
    """Epochs of 3 steps; the loss turns NaN at the second step of epoch 2."""
    out = tmp_path / "run"
    real_loss, calls = training.storyboard_loss, []

    def diverging(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * math.nan if len(calls) == 5 else loss

    monkeypatch.setattr(training, "storyboard_loss", diverging)
    with pytest.raises(UserError) as stopped:
        training.train(run_config(world, out, epochs=3), show_progress=False)
    assert str(stopped.value) == (
        "training diverged at epoch 2, step 2 (the loss became nan), so the run stopped "
        f"without saving it ({out / 'checkpoints'} keeps the last good ones); lower --lr "
        "(now 0.002) and start again with another --out."
    )
    log = (out / "metrics.jsonl").read_text()
    assert "NaN" not in log and [x["epoch"] for x in lines(out / "metrics.jsonl")] == [1, 1]
    for name in ("last", "best"):
        state = torch.load(out / "checkpoints" / f"{name}.pt", weights_only=False)
        assert state["epoch"] == 1
        assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_weights_stepped_to_infinity_are_never_saved(world, tmp_path, monkeypatch):
    """The epoch's last step (of 3) has a finite loss but an infinite update: caught at the
    epoch's end, before anything is logged or saved."""
    out = tmp_path / "run"
    real_step, steps = training.train_step, []

    def poisoning(model, *args, **kwargs):
        result = real_step(model, *args, **kwargs)
        steps.append(1)
        if len(steps) == 3:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(math.inf)
        return result

    monkeypatch.setattr(training, "train_step", poisoning)
    with pytest.raises(
        UserError,
        match=r"training diverged at epoch 1, step 3 \(the weights stopped being finite\)",
    ):
        training.train(run_config(world, out), show_progress=False)
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").read_text()


@pytest.fixture(scope="module")
def nan_run(world, tmp_path_factory):
    """A trained run whose best.pt (and last.pt) hold a NaN weight."""
    out = tmp_path_factory.mktemp("nan") / "run"
    training.train(run_config(world, out), show_progress=False)
    for name in ("best", "last"):
        path = out / "checkpoints" / f"{name}.pt"
        state = torch.load(path, weights_only=False)
        state["model"]["head.logit_scale"] = torch.tensor(math.nan)
        torch.save(state, path)
    return out


def test_export_refuses_non_finite_weights(nan_run, tmp_path):
    with pytest.raises(UserError) as refused:
        export_run(nan_run, tmp_path / "export")
    assert str(refused.value).startswith(
        f"{nan_run / 'checkpoints' / 'best.pt'} holds weights that are not finite (NaN or "
        "infinity) in head.logit_scale, "
    )
    assert not (tmp_path / "export").exists()


def test_predict_refuses_non_finite_weights_before_any_probability(world, nan_run):
    video = world["root"] / "clips" / "c2_3.mp4"
    with pytest.raises(UserError, match="holds weights that are not finite .* in head.logit_sc"):
        predict_video(nan_run, video, device="cpu")


def test_non_finite_sub_text_embeddings_are_refused_naming_the_file(world, tmp_path):
    table = pq.read_table(world["subtexts"])
    sub_emb = table.column("sub_emb").to_pylist()
    sub_emb[1][0][3] = math.inf
    column = table.schema.get_field_index("sub_emb")
    field = table.schema.field(column)
    poisoned = table.set_column(column, field, pa.array(sub_emb, field.type))
    path = tmp_path / "subtexts.parquet"
    pq.write_table(poisoned, path)
    with pytest.raises(UserError) as refused:
        read_subtexts(path)
    assert str(refused.value) == (
        f"{path} holds values that are not finite (NaN or infinity) in sub_emb: score it again "
        "(`python -m subtext_gen score`)."
    )


def test_non_finite_cached_features_are_refused_naming_the_shard(world, tmp_path):
    out = tmp_path / "features"
    make_cache(world, out, views=1, shard_rows=16)
    shard = out / SHARDS_DIR / "train-00000.npy"
    features = np.load(shard)
    features[4, 1, 0] = np.nan
    np.save(shard, features)
    # as an encoder that produced NaN wrote it: the index records the shard's new CRC-32
    index = pq.read_table(out / INDEX_FILE, schema=INDEX_SCHEMA).to_pandas()
    row = (index["split"] == "train") & (index["shard"] == 0)
    index.loc[row, "shard_crc32"] = file_crc32(shard)
    pq.write_table(pa.Table.from_pandas(index, schema=INDEX_SCHEMA), out / INDEX_FILE)
    cache = FeatureCache(out, {}, {"train": 9, "test": 3})
    assert read_meta(out)["views"] == 1
    assert np.isfinite(cache.read("train", 3, [0])).all()
    with pytest.raises(UserError) as refused:
        cache.read("train", 4, [0])
    assert str(refused.value).startswith(f"{shard} holds features that are not finite")


def test_an_empty_artifacts_variable_is_the_default_folder(monkeypatch):
    monkeypatch.setenv(ARTIFACTS_ENV, "")
    assert str(artifacts_root()) == "artifacts"
    monkeypatch.setenv(ARTIFACTS_ENV, "/elsewhere")
    assert str(artifacts_root()) == "/elsewhere"


def test_an_empty_fewshot_list_is_blamed(tmp_path):
    split = SplitList("list", "train", None, ("a",), ())
    for text in ("", "video_id,path,labels\n"):
        path = tmp_path / "fewshot.csv"
        path.write_text(text)
        with pytest.raises(UserError, match=f"--fewshot-list {path} lists no videos"):
            load_item_list(path, split)
