"""DDP with two CPU processes (gloo) gives the loss and gradients of one process."""

import torch
import torch.distributed as dist

from testkit.torchrun import spawn_gloo
from trainer.distributed import gather_with_grad
from trainer.loss import storyboard_loss


def _batch():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(6, 8, generator=g)
    labels = torch.tensor([0, 1, 1, 2, 0, 2])
    weight = torch.randn(3, 8, generator=g)
    return features, labels, weight


def _worker(rank: int, world: int, out: dict) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=world)
    features, labels, weight = _batch()
    # Uneven shards (4 + 2 rows), as when a rank skipped unreadable videos.
    rows = slice(0, 4) if rank == 0 else slice(4, 6)
    w = weight.clone().requires_grad_(True)
    logits = features[rows] @ w.T
    all_logits = gather_with_grad(logits)
    all_labels = gather_with_grad(labels[rows])
    loss = storyboard_loss(all_logits, all_labels)
    (loss * world).backward()  # what train_step does before DDP averages gradients
    grad = w.grad.clone()
    dist.all_reduce(grad)
    out[rank] = (loss.detach().item(), (grad / world).tolist())
    dist.destroy_process_group()


def test_two_gloo_processes_match_one():
    features, labels, weight = _batch()
    w = weight.clone().requires_grad_(True)
    single = storyboard_loss(features @ w.T, labels)
    single.backward()
    out = spawn_gloo(_worker, 2)
    for rank in (0, 1):
        loss, grad = out[rank]
        assert abs(loss - float(single)) < 1e-6
        torch.testing.assert_close(torch.tensor(grad), w.grad, rtol=1e-5, atol=1e-6)
