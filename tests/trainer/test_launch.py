"""Launching a run: the device a process takes, loader workers and /dev/shm, resuming from
CPU memory at one position on every rank, waits for the main rank's set-up, and evaluation
gathered on the main rank only (two gloo ranks give one process's probabilities)."""

import gc
import time
import warnings
import weakref
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist

from storyboard_common.device import choose_device
from storyboard_common.errors import UserError
from testkit.torchrun import spawn_gloo
from trainer import metrics, resuming, run_setup
from trainer.data import dataset as data
from trainer.data.dataset import Skipped, default_workers, loader_shm_bytes, shm_shortfall
from trainer.distributed import DistInfo, init_distributed, on_main
from trainer.evaluation import main_scores, predict
from trainer.settings import RunConfig

# ------------------------------------------------------------------ device and workers


def test_each_process_takes_the_gpu_of_its_local_rank_modulo_those_it_sees():
    assert choose_device("auto", 0) == torch.device("cpu")
    assert choose_device("cpu", 4, local_rank=3, processes=4) == torch.device("cpu")
    assert choose_device("auto", 4, local_rank=3, processes=4) == torch.device("cuda", 3)
    assert choose_device("cuda", 2, local_rank=3, processes=4) == torch.device("cuda", 1)
    # CUDA_VISIBLE_DEVICES=<its GPU> per process: each sees one device, and takes it
    assert choose_device("cuda", 1, local_rank=5, processes=8) == torch.device("cuda", 0)


def test_cuda_n_is_honoured_in_one_process_and_refused_among_several():
    assert choose_device("cuda:1", 2) == torch.device("cuda", 1)
    with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES"):
        choose_device("cuda:1", 2, local_rank=0, processes=2)
    with pytest.raises(UserError, match=r"sees 2 CUDA device\(s\), cuda:0 to cuda:1"):
        choose_device("cuda:2", 2)
    with pytest.raises(UserError, match="no CUDA device"):
        choose_device("cuda", 0)


def test_default_workers_share_out_every_core_among_the_local_processes():
    assert default_workers(16, 1) == 16
    assert [default_workers(16, 3, r) for r in range(3)] == [6, 5, 5]  # 16 cores, none idle
    assert [default_workers(2, 4, r) for r in range(4)] == [1, 1, 1, 1]  # at least one


def test_loader_workers_default_reads_affinity_and_torchrun_s_local_world(monkeypatch):
    monkeypatch.setattr(data, "available_cores", lambda: 10)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert data.loader_workers(None) == 3  # 10 = 3 + 3 + 2 + 2
    assert data.loader_workers(0) == 0  # as given
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.delenv("LOCAL_RANK")
    assert data.loader_workers(None) == 10
    assert RunConfig().workers is None and RunConfig().prefetch == 4


def test_shm_need_is_workers_x_prefetch_x_uint8_batches_of_every_local_process():
    # 8 workers x 4 batches x 32 clips x 8 frames x 3 x 224 x 224 bytes, twice (2 processes)
    needed = loader_shm_bytes(8, 4, 32, 8, 224, processes=2)
    assert needed == 2 * 8 * 4 * 32 * 8 * 3 * 224 * 224 == 2_466_250_752
    docker = 64 * 2**20
    warning = shm_shortfall(needed, docker)
    assert "64 MiB" in warning and "2352 MiB" in warning and "--shm-size 3g" in warning
    assert "\n" not in warning
    assert shm_shortfall(needed, needed) is None


def _shm_run(monkeypatch, device: str, shm_bytes: int) -> list[str]:
    """The warnings `_warn_of_shm` gives a run of 4 workers x 2 batches x 16 clips of 8
    frames at 224 on `device`, with /dev/shm of `shm_bytes`."""
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_setup.shutil, "disk_usage", lambda _: usage(shm_bytes, 0, shm_bytes))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_setup._warn_of_shm(
            RunConfig(frames=8, prefetch=2), DistInfo(0, 1, 0, torch.device(device)), 4, 16, 224
        )
    return [str(w.message) for w in caught]


def test_a_cuda_run_warns_once_when_dev_shm_is_docker_s_default(monkeypatch):
    # 4 workers x 2 batches x 16 clips x 8 frames x 3 x 224 x 224 = 147 MiB > 64 MiB
    (message,) = _shm_run(monkeypatch, "cuda", 64 * 2**20)
    assert "--shm-size" in message and "147 MiB" in message
    assert _shm_run(monkeypatch, "cuda", 2**30) == []  # it fits
    assert _shm_run(monkeypatch, "cpu", 64 * 2**20) == []  # no CUDA run


# ------------------------------------------------------------------ resume


def _resumable(tmp_path):
    """A small model, optimiser, schedule and scaler as `_resume` restores them, and a
    last.pt of other weights."""

    def parts():
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.AdamW(model.parameters())
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False)

    model, optimizer, scheduler, scaler = parts()
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": None,
        "layout": {"world": 1},
        "epoch": 2,
        "position": {"step": 3, "loss_sum": 1.5, "clips": 6, "skipped": 0},
        "best": None,
        "config": {},
    }
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / "last.pt")
    model, optimizer, scheduler, scaler = parts()
    setup = SimpleNamespace(
        layout={"world": 1}, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler
    )
    return setup, state["model"]["weight"].clone()


def test_a_checkpoint_loads_to_cpu_and_nothing_keeps_it_once_restored(tmp_path):
    setup, saved_weight = _resumable(tmp_path)
    cfg = RunConfig(out=tmp_path)
    # a device the checkpoint must not be loaded onto (the run's GPU, here "meta")
    on_gpu = DistInfo(0, 1, 0, torch.device("meta"))
    checkpoint = resuming.checkpoint_to_resume(cfg, on_gpu, resume=True)
    tensors = [checkpoint["model"]["weight"], checkpoint["torch_rng"]]
    assert all(t.device == torch.device("cpu") for t in tensors)
    alive = weakref.ref(checkpoint["model"]["weight"])
    state = resuming.restore(setup, checkpoint, cfg, on_gpu)
    del checkpoint, tensors
    gc.collect()
    assert alive() is None  # nothing of the restored state holds the checkpoint's tensors
    assert (state.epoch, state.position.step) == (2, 3)
    torch.testing.assert_close(setup.model.weight.detach(), saved_weight)


def test_ranks_resumed_at_different_points_are_refused_naming_the_shared_folder(monkeypatch):
    ranks = DistInfo(1, 3, 1, torch.device("cpu"))
    positions = [(3, 5), (3, 5), (0, 0)]  # rank 2 found no last.pt: it started fresh
    monkeypatch.setattr(resuming, "gather_objects", lambda here, _: positions)
    state = resuming.TrainingState(epoch=3, position=resuming.EpochPosition(step=5))
    with pytest.raises(UserError) as refused:
        resuming.check_same_position(state, ranks, Path("/runs/k400"))
    assert str(refused.value) == (
        "the processes resumed at different points (rank 0: epoch 3 step 5, rank 1: epoch 3 "
        "step 5, rank 2: epoch 0 step 0): they read different /runs/k400/checkpoints/last.pt "
        "files, so --out must be one folder on a filesystem every machine shares."
    )
    positions[2] = (3, 5)
    resuming.check_same_position(state, ranks, Path("/runs/k400"))  # one position: no refusal


# ------------------------------------------------------------------ several ranks


class _Views(torch.utils.data.Dataset):
    """Video i has 1 + i % 3 views of features [2, 4] (seeded by i); the last video is
    unreadable."""

    input_key = "features"

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        _, i = key
        if i == self.size - 1:
            return Skipped(f"v{i}", "unreadable")
        features = torch.randn(1 + i % 3, 2, 4, generator=torch.Generator().manual_seed(i))
        return {"features": features, "label": torch.tensor(i % 3), "video_id": f"v{i}"}


class _Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.randn(4, 5, generator=torch.Generator().manual_seed(7))

    def forward(self, features, text):
        return {"logits": features.mean(1) @ self.weight}


def _predictions(dist_info: DistInfo, videos: int):
    rank, world = dist_info.rank, dist_info.world
    views = _Views(videos)
    sampler = data.EpochSampler(videos, False, 0, rank, world)
    loader = data.make_loader(views, 2, sampler, workers=0)
    return predict(_Head(), None, loader, dist_info, "none")


def _old_predictions(videos: int, world: int):
    """What predict gave before it summed views per rank: every view's logits, from every
    rank in rank order (the sampler pads by wrapping), averaged at once."""
    views, head = _Views(videos), _Head()
    order = np.resize(np.arange(videos), -(-videos // world) * world)
    rows = [views[(0, int(i))] for r in range(world) for i in order[r::world]]
    rows = [row for row in rows if not isinstance(row, Skipped)]
    logits = torch.cat([head(row["features"], None)["logits"] for row in rows])
    return metrics.average_views(logits, [row["video_id"] for row in rows for _ in row["features"]])


TIMEOUT_S = 2  # the collective timeout the ranks run under; the main rank's set-up is longer


def _ranks_worker(rank: int, world: int, out, videos: int) -> None:
    dist_info = init_distributed("cpu", timeout_minutes=TIMEOUT_S / 60)
    predictions = _predictions(dist_info, videos)
    found = {"predictions": predictions, "scores": main_scores(predictions, 5, False, dist_info)}
    found["waited"] = on_main(lambda: time.sleep(1.5 * TIMEOUT_S) or "set up", dist_info)
    try:
        state = resuming.TrainingState(epoch=3 if rank == 0 else 0)
        resuming.check_same_position(state, dist_info, Path("runs/x"))
    except UserError as exc:
        found["refusal"] = str(exc)
    resuming.check_same_position(resuming.TrainingState(epoch=1), dist_info, Path("runs/x"))
    # Rank 0 never comes to a plain collective: the timeout trips there (so the wait above
    # would have tripped it too, had it been one).
    if rank:
        try:
            dist.barrier()
            found["plain_barrier"] = "passed"
        except Exception as exc:  # gloo's timeout
            found["plain_barrier"] = type(exc).__name__
    out[rank] = found


def _one_process(videos: int):
    return _predictions(DistInfo(0, 1, 0, torch.device("cpu")), videos)


def test_views_summed_per_batch_give_the_probabilities_of_all_views_averaged_at_once():
    probs, labels, ids, skipped = _one_process(9)
    old_probs, old_ids = _old_predictions(9, 1)
    assert ids == old_ids == [f"v{i}" for i in range(8)] and skipped == 1
    np.testing.assert_allclose(probs, old_probs, rtol=0, atol=1e-15)
    assert labels.tolist() == [i % 3 for i in range(8)]


@pytest.mark.slow  # two processes that import torch and the trainer: ~10-30 s
def test_two_gloo_ranks_evaluate_as_one_process_and_wait_for_the_main_rank_s_set_up():
    videos = 9  # 8 readable; 9 items on 2 ranks are padded to 10: v0 on both
    probs, labels, ids, _ = _one_process(videos)
    out = spawn_gloo(_ranks_worker, 2, videos)
    two_probs, two_labels, two_ids, two_skipped = out[0]["predictions"]
    old_probs, old_ids = _old_predictions(videos, 2)
    assert two_ids == old_ids == ["v0", "v2", "v4", "v6", "v1", "v3", "v5", "v7"]
    assert two_skipped == 1
    np.testing.assert_allclose(two_probs, old_probs, rtol=0, atol=1e-12)
    order = [ids.index(v) for v in two_ids]
    np.testing.assert_allclose(two_probs, probs[order], rtol=0, atol=1e-12)
    assert two_labels.tolist() == labels[order].tolist()
    assert out[1]["predictions"] is None  # only rank 0 gathered
    top1 = metrics.topk_accuracy(probs, labels)["top1"]
    assert out[0]["scores"]["top1"] == out[1]["scores"]["top1"] == top1
    assert (out[0]["waited"], out[1]["waited"]) == ("set up", None)
    for found in out.values():
        assert "rank 0: epoch 3 step 0, rank 1: epoch 0 step 0" in found["refusal"]
        assert "different runs/x/checkpoints/last.pt files" in found["refusal"]
    assert out[1]["plain_barrier"] != "passed"
