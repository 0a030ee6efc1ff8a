"""What a GPU run pays for per optimiser step, counted on the CPU: host-device
synchronisations (none with one process, one with several, outside check steps), gradient
all-reduces (one per step, however many micro-batches), a global batch that is exactly what
it says, and fp16's scaler skipping an overflowed step."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from storyboard_common.errors import UserError
from testkit.list_runs import frozen_config
from testkit.syncs import SyncCounter
from trainer import training
from trainer.distributed import DistInfo
from trainer.loss import storyboard_loss
from trainer.model.aggregation import ClassText, StoryboardHead
from trainer.model.video_clip import VideoCLIP
from trainer.precision import tf32_applies
from trainer.run_log import LogSettings
from trainer.run_setup import batch_layout
from trainer.training import LossTally, train_step

C, N, W, T, D = 3, 2, 3, 2, 8
# Clips per rank in each micro-batch of the two-rank step: uneven, as when a rank skipped
# unreadable videos.
ROWS = {0: (3, 2), 1: (2, 3)}


def _class_text() -> ClassText:
    g = torch.Generator().manual_seed(2)
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])
    return ClassText(
        global_emb=torch.randn(C, D, generator=g),
        global_tokens=torch.randn(C, W, D, generator=g),
        global_mask=mask,
        sub_emb=torch.randn(C, N, D, generator=g),
        sub_tokens=torch.randn(C, N, W, D, generator=g),
        sub_mask=mask[:, None].repeat(1, N, 1),
    )


def _model() -> VideoCLIP:
    torch.manual_seed(0)
    visual = torch.nn.Linear(1, 1)  # frozen: the batches are frame features
    return VideoCLIP(visual, StoryboardHead(D, "coarse+fine"), freeze_backbone=True)


def _micro_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two micro-batches of the global batch: (features [5, T, D], labels [5])."""
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(5, T, D, generator=g), torch.tensor([0, 1, 2, 0, 1])) for _ in (0, 1)]


def _batch(features: torch.Tensor, labels: torch.Tensor) -> dict:
    ids = [str(i) for i in range(len(labels))]
    return {"features": features, "labels": labels, "video_ids": ids, "skipped": []}


def _rank_group(rank: int, micro: int) -> list[dict]:
    """Rank `rank`'s share of the first `micro` micro-batches (rank 0's rows first)."""
    group = []
    for j, (features, labels) in enumerate(_micro_batches()[:micro]):
        start = 0 if rank == 0 else ROWS[0][j]
        rows = slice(start, start + ROWS[rank][j])
        group.append(_batch(features[rows], labels[rows]))
    return group


def _step(model, group, dist_info) -> tuple[LossTally, dict]:
    """One `train_step` with SGD at lr 1 (the weights move by minus the gradient) ->
    (its loss tally, the head's weights after the step)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    tally = LossTally(dist_info.device, 0.0, 0.0, skip_non_finite=False)
    train_step(model, _class_text(), group, optimizer, scaler, dist_info, "none", 1.0, tally, 1)
    head = getattr(model, "module", model).head
    return tally, {k: v.detach().clone() for k, v in head.state_dict().items()}


def _two_rank_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    dist_info = DistInfo(rank, 2, rank, torch.device("cpu"))
    ddp = torch.nn.parallel.DistributedDataParallel(_model())
    all_reduces = []

    def counted(state, bucket):
        all_reduces.append(1)
        return default_hooks.allreduce_hook(dist.group.WORLD, bucket)

    ddp.register_comm_hook(None, counted)
    _step(ddp, _rank_group(rank, 1), dist_info)  # one micro-batch: the all-reduces of a step
    per_step = len(all_reduces)
    ddp.module.load_state_dict(_model().state_dict())  # the same start as the reference
    with SyncCounter() as syncs:
        tally, weights = _step(ddp, _rank_group(rank, 2), dist_info)
    loss_sum, clips, _ = tally.read()
    torch.save(
        {
            "loss": loss_sum / clips,
            "weights": weights,
            "all_reduces": (per_step, len(all_reduces) - per_step),
            "syncs": syncs.calls,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    dist.destroy_process_group()


def test_two_ranks_take_one_process_step_with_one_all_reduce_and_one_sync(tmp_path):
    """Two gloo ranks, two micro-batches of uneven shards: the loss and the update (SGD at
    lr 1: minus the gradient) of one process over the same global batch; the micro-batches
    accumulate under no_sync (one all-reduce per step, not per micro-batch); the step's only
    read-back is the exchange of clip counts."""
    one = DistInfo(0, 1, 0, torch.device("cpu"))
    whole = [_batch(f, lab) for f, lab in _micro_batches()]
    with torch.no_grad():  # each micro-batch's loss over the global micro-batch
        model, text = _model(), _class_text()
        losses = [
            float(storyboard_loss(model(b["features"], text)["logits"], b["labels"])) for b in whole
        ]
    tally, expected = _step(_model(), whole, one)
    loss_sum, clips, _ = tally.read()
    assert loss_sum / clips == pytest.approx(sum(losses) / 2, abs=1e-6)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_rank_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        # each rank weighs a micro-batch's loss by its own clips in it
        own = sum(loss * rows for loss, rows in zip(losses, ROWS[rank])) / sum(ROWS[rank])
        assert got["loss"] == pytest.approx(own, abs=1e-5)
        for name, value in expected.items():
            torch.testing.assert_close(got["weights"][name], value, rtol=1e-5, atol=1e-5)
        one_micro, two_micro = got["all_reduces"]
        assert one_micro >= 1 and two_micro == one_micro
        assert [name for name, _ in got["syncs"]] == ["tolist"], got["syncs"]
        assert "trainer/distributed.py" in got["syncs"][0][1]


def test_one_process_reads_nothing_back_between_check_steps(world, tmp_path, monkeypatch):
    """18 optimiser steps (2 epochs of 9) of a run with a line every 4 steps: steps that are
    neither a line's nor an epoch's last read nothing back; those read the loss once."""
    counter, epochs = SyncCounter(), []  # per epoch: where each step's calls begin, end
    real_step, real_epoch = training.train_step, training.Trainer.train_epoch

    def marked_step(*args, **kwargs):
        epochs[-1].append(len(counter.calls))
        return real_step(*args, **kwargs)

    def counted_epoch(*args, **kwargs):
        epochs.append([])
        with counter:
            end = real_epoch(*args, **kwargs)
        epochs[-1].append(len(counter.calls))  # the epoch's last step ends here
        return end

    monkeypatch.setattr(training, "train_step", marked_step)
    monkeypatch.setattr(training.Trainer, "train_epoch", counted_epoch)
    cfg = frozen_config(world, out=tmp_path / "run", batch_size=1)
    training.train(cfg, show_progress=False, log_settings=LogSettings(every=4))
    per_step = [counter.calls[a:b] for marks in epochs for a, b in zip(marks, marks[1:])]
    assert len(per_step) == 18
    for k, calls in enumerate(per_step):  # global step k + 1
        checked = (k + 1) % 4 == 0 or (k + 1) % 9 == 0
        assert [name for name, _ in calls] == (["tolist"] if checked else []), (k + 1, calls)


def _tiny_step(scaler: torch.amp.GradScaler, poison: bool) -> tuple[LossTally, bool]:
    """One step of a one-process model whose loss is made infinite with `poison` ->
    (the tally, whether the weights moved)."""
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    features, labels = _micro_batches()[0]
    tally = LossTally(torch.device("cpu"), 0.0, 0.0, skip_non_finite=scaler.is_enabled())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with pytest.MonkeyPatch.context() as patch:
        if poison:
            real = training.storyboard_loss
            patch.setattr(training, "storyboard_loss", lambda *a: real(*a) * math.inf)
        one = DistInfo(0, 1, 0, torch.device("cpu"))
        train_step(
            model, _class_text(), [_batch(features, labels)], optimizer, scaler, one, "none",
            1.0, tally, 7,
        )  # fmt: skip
    moved = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    return tally, moved


def test_fp16_scaler_skips_an_overflowed_step_other_precisions_stop():
    scaled = torch.amp.GradScaler("cpu", init_scale=2.0**16)  # what fp16 runs on CUDA with
    tally, moved = _tiny_step(scaled, poison=True)
    assert not moved and tally.read() == (0.0, 0.0, None)  # skipped, no divergence
    assert scaled.get_scale() == 2.0**15  # the scaler backs off
    tally, moved = _tiny_step(torch.amp.GradScaler("cpu", init_scale=2.0**16), poison=False)
    loss_sum, clips, diverged = tally.read()
    assert moved and clips == 5 and math.isfinite(loss_sum) and diverged is None
    tally, _ = _tiny_step(torch.amp.GradScaler("cpu", enabled=False), poison=True)
    loss_sum, clips, diverged = tally.read()
    assert clips == 5 and diverged.step == 7 and diverged.loss in (math.inf, -math.inf)


def test_the_global_batch_is_exact_or_refused():
    assert batch_layout(32, None, 1) == (32, 1)
    assert batch_layout(32, None, 4) == (8, 1)
    assert batch_layout(32, 4, 4) == (4, 2)
    assert batch_layout(256, 32, 8) == (32, 1)
    with pytest.raises(UserError) as refused:
        batch_layout(32, None, 3)
    assert str(refused.value) == (
        "--batch-size 32 does not split evenly over 3 processes: use --batch-size 30 or 33 "
        "(a multiple of 3)."
    )
    with pytest.raises(UserError) as refused:
        batch_layout(32, 5, 2)
    assert str(refused.value) == (
        "--batch-size 32 is not a whole number of --micro-batch 5 x 2 processes (10 clips): "
        "use --batch-size 30 or 40, or --micro-batch 4."
    )
    with pytest.raises(UserError, match="use --batch-size 4 \\(a multiple of 4\\)"):
        batch_layout(2, None, 4)


def test_a_batch_that_does_not_divide_writes_nothing(world, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="--micro-batch 2 x 1 processes"):
        training.train(frozen_config(world, out=out, micro_batch=2), show_progress=False)
    assert not out.exists()


def test_tf32_only_under_amp_none_on_ampere_and_later(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (8, 0))
    assert tf32_applies(cuda, "none", True)
    assert not tf32_applies(cuda, "none", False)  # --no-tf32
    assert not tf32_applies(cuda, "bf16", True)
    assert not tf32_applies(torch.device("cpu"), "none", True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (7, 0))
    assert not tf32_applies(cuda, "none", True)  # V100: no TF32 units
