"""`torchrun --nproc_per_node 2 -m trainer run` (gloo) is the one-process run: the same
step losses, epochs, evaluations and weights, and a Ctrl-C'd two-rank run resumes to them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from testkit.cli import REPO, flag_args, lines, module_command, module_env, trainer_cli
from testkit.list_runs import TINY_CLIP_CONFIG
from testkit.torchrun import torchrun_trainer

EPOCHS = 3


def _even_root(world, base: Path) -> Path:
    """The list world with 8 training videos (of 9), so that two ranks split every epoch
    evenly and see the clips one process sees (the sampler pads an uneven split)."""
    root = base / "even"
    root.mkdir()
    source = world["root"]
    (root / "classes.csv").write_text((source / "classes.csv").read_text())
    (root / "test.txt").write_text((source / "test.txt").read_text())
    (root / "train.txt").write_text(
        "".join((source / "train.txt").read_text().splitlines(True)[:8])
    )
    return root


def _flags(world, root: Path, out: Path) -> dict:
    return {
        "dataset": "list",
        "root": root,
        "videos": world["root"],
        "subtexts": world["subtexts"],
        "clip_model": TINY_CLIP_CONFIG,
        "clip_pretrained": world["ckpt"],
        "frames": 4,
        "epochs": EPOCHS,
        "batch_size": 4,
        "lr": 2e-3,
        "warmup_epochs": 1,
        "workers": 0,
        "device": "cpu",
        "log_every": 1,
        "seed": 1,
        "out": out,
    }


def _workers(parent: int) -> list[int]:
    """The processes torchrun started (its children)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _ctrl_c_after_epoch_one(flags: dict) -> None:
    """A two-rank run that both ranks' Ctrl-C stops in epoch 2 (last.pt saved there)."""
    args = ["--standalone", "--nproc_per_node=2", "-m", "trainer", "run", *flag_args(flags)]
    proc = subprocess.Popen(
        module_command("torch.distributed.run", *args),
        cwd=REPO,
        env=module_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    metrics, deadline = flags["out"] / "metrics.jsonl", time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.05)
    for pid in _workers(proc.pid):  # both ranks, as a terminal's Ctrl-C reaches them
        os.kill(pid, signal.SIGINT)
    proc.wait(timeout=300)


@pytest.mark.slow  # three runs, two of them on two processes (about a minute on 2 cores)
def test_two_torchrun_ranks_train_evaluate_save_and_resume_as_one_process(world, tmp_path):
    root = _even_root(world, tmp_path)
    one = tmp_path / "one"
    done = trainer_cli("run", *flag_args(_flags(world, root, one)))
    assert done.returncode == 0, done.stderr[-3000:]
    two = tmp_path / "two"
    _ctrl_c_after_epoch_one(_flags(world, root, two))
    saved = torch.load(two / "checkpoints" / "last.pt", weights_only=False)
    assert saved["layout"] == {"micro_batch": 2, "world": 2, "accumulation": 1}
    assert (saved["epoch"], saved["position"]["step"]) != (EPOCHS, 0)  # stopped early
    done = torchrun_trainer(2, "run", {**_flags(world, root, two), "resume": True})
    assert done.returncode == 0, done.stderr[-3000:]

    steps_one, steps_two = lines(one / "steps.jsonl"), lines(two / "steps.jsonl")
    assert [s["global_step"] for s in steps_two] == [s["global_step"] for s in steps_one]
    for a, b in zip(steps_one, steps_two):  # the first step's loss included
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5), a["global_step"]
    epochs_one, epochs_two = lines(one / "metrics.jsonl"), lines(two / "metrics.jsonl")
    assert len(epochs_two) == len(epochs_one) == 2 * EPOCHS  # a train and an eval line each
    for a, b in zip(epochs_one, epochs_two):
        for key in ("train_loss", "top1", "top5", "mean_class_acc"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), (a["epoch"], key)
    weights_one = torch.load(one / "checkpoints" / "last.pt", weights_only=False)["model"]
    weights_two = torch.load(two / "checkpoints" / "last.pt", weights_only=False)["model"]
    # AdamW divides each update by the gradient's own size, so an element whose gradient is
    # float noise moves by noise x lr: weights agree to a fraction of one step's lr (2e-3),
    # the losses above to 1e-5.
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_two[name], value, rtol=0, atol=5e-4)
