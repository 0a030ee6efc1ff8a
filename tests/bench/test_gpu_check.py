"""`make gpu-check` (bench/gpu_check.py) on the CPU: the training steps on the tiny CLIP in
fp32, checkpointing on and off (it must be active, and must not change the losses), the
out-of-memory path, the pass/fail checks, the report and JSON file, and the exit status
without CUDA."""

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from bench import gpu_check
from bench.gpu_check import StepConfig, failures, memory_target, run_check
from testkit.cli import REPO, TINY_CLIP_CONFIG
from trainer import training

FP32_CONFIGS = (StepConfig("none", True), StepConfig("none", False))
BATCH, FRAMES, STEPS, WARMUP, CLASSES, TEMPORAL_LAYERS = 2, 2, 2, 1, 5, 1


def tiny_check(configs=FP32_CONFIGS):
    return run_check(
        str(TINY_CLIP_CONFIG),
        "cpu",
        batch=BATCH,
        frames=FRAMES,
        steps=STEPS,
        warmup=WARMUP,
        classes=CLASSES,
        temporal_layers=TEMPORAL_LAYERS,
        configs=configs,
    )


@pytest.fixture(scope="module")
def tiny_result():
    return tiny_check()


def by_checkpointing(result):
    return {r["grad_checkpointing"]: r for r in result["results"]}


def test_run_check_structure_and_numbers(tiny_result):
    assert tiny_result["settings"] == {
        "model": "TinyCLIP-test",
        "weights": "random",
        "batch": BATCH,
        "frames": FRAMES,
        "image_size": 32,
        "classes": CLASSES,
        "subtexts": 4,
        "aggregation": "coarse+fine",
        "temporal_layers": TEMPORAL_LAYERS,
        "steps": STEPS,
        "warmup_steps": WARMUP,
        "seed": 0,
    }
    assert [r["config"] for r in tiny_result["results"]] == [
        "fp32, checkpointing on",
        "fp32, checkpointing off",
    ]
    for record in tiny_result["results"]:
        assert record["status"] == "ok" and record["error"] is None
        assert len(record["losses"]) == STEPS
        assert record["losses_finite"] and all(math.isfinite(x) for x in record["losses"])
        assert record["clips_per_second"] > 0
        assert record["seconds_per_step"] > 0
        # Peak memory is a CUDA statistic: absent on the CPU rather than made up.
        assert record["peak_allocated_gib"] is None and record["peak_reserved_gib"] is None
    assert failures(tiny_result) == []
    assert memory_target(tiny_result) is None  # not BIKE's setting: no 9 GiB check


def test_checkpointing_is_active_through_the_project_model(tiny_result):
    """open_clip's blocks run twice a step (forward, then recomputed in backward) only when
    VideoCLIP switched checkpointing on."""
    records = by_checkpointing(tiny_result)
    assert records[True]["block_forwards_per_step"] == 2
    assert records[False]["block_forwards_per_step"] == 1


def test_checkpointing_does_not_change_the_math(tiny_result):
    """Same seed, same weights and clips: the first loss agrees, and so do the losses after
    an AdamW update (the gradients agree too)."""
    on, off = (by_checkpointing(tiny_result)[flag]["losses"] for flag in (True, False))
    assert on[0] == pytest.approx(off[0], rel=1e-6)
    assert on == pytest.approx(off, rel=1e-5)
    assert on[1] != on[0]  # the optimiser really stepped


def test_bf16_refused_on_cpu():
    with pytest.raises(ValueError, match="needs CUDA"):
        run_check(str(TINY_CLIP_CONFIG), "cpu", configs=[StepConfig("bf16", True)])


def test_out_of_memory_is_reported_and_the_next_configuration_runs(monkeypatch):
    calls = {"n": 0}
    real_loss = training.storyboard_loss  # the trainer's step, which the check runs

    def loss_that_runs_out(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # second step of the first configuration
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "storyboard_loss", loss_that_runs_out)
    first, second = tiny_check()["results"]
    assert first["status"] == "OOM"
    assert first["error"] == "CUDA out of memory. Tried to allocate 2.00 GiB."
    assert len(first["losses"]) == 1 and first["clips_per_second"] is None
    assert second["status"] == "ok" and len(second["losses"]) == STEPS


def as_target_setting(result, peak_gib):
    """`result` relabelled as a CUDA run of BIKE's setting (bf16 with checkpointing)."""
    result = copy.deepcopy(result)
    result["settings"].update(model="ViT-B-16", frames=8, batch=32)
    for record in result["results"]:
        record["amp"] = "bf16"
        record["config"] = StepConfig("bf16", record["grad_checkpointing"]).name
        record["peak_allocated_gib"] = peak_gib
    return result


def test_memory_target(tiny_result):
    within = as_target_setting(tiny_result, 8.5)
    assert memory_target(within) == {
        "config": "bf16 autocast, checkpointing on",
        "peak_allocated_gib": 8.5,
        "limit_gib": 9.0,
        "met": True,
    }
    assert failures(within) == []
    over = as_target_setting(tiny_result, 9.5)
    assert memory_target(over)["met"] is False
    [problem] = failures(over)
    assert "peaked at 9.50 GiB" in problem and "at most 9 GiB" in problem
    out_of_memory = as_target_setting(tiny_result, 9.5)
    out_of_memory["results"][0]["status"] = "OOM"
    assert any("ran out of memory" in p for p in failures(out_of_memory))


def test_failures_name_each_broken_check(tiny_result):
    result = copy.deepcopy(tiny_result)
    on, off = result["results"]
    on["losses"][1], on["losses_finite"] = float("nan"), False
    on["block_forwards_per_step"] = 1.0
    off["losses"][0] *= 1.01
    problems = failures(result)
    assert len(problems) == 3
    assert "fp32, checkpointing on: a loss is not finite" in problems[0]
    assert "ran 1 times a step, not 2" in problems[1]
    assert "must not change the forward pass" in problems[2]


def test_main_writes_json_and_exit_status(tiny_result, monkeypatch, tmp_path, capsys):
    """The CUDA path of main, with the CPU result standing in for the card's."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "run_check", lambda *a, **k: copy.deepcopy(tiny_result))
    out = tmp_path / "check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["results"] == tiny_result["results"]
    assert written["failures"] == [] and written["target"] is None
    printed = capsys.readouterr().out
    assert "fp32" in printed and f"written: {out}" in printed

    broken = copy.deepcopy(tiny_result)
    broken["results"][0]["block_forwards_per_step"] = 1.0
    monkeypatch.setattr(gpu_check, "run_check", lambda *a, **k: copy.deepcopy(broken))
    assert gpu_check.main(["--out", str(out)]) == 1
    assert "gpu-check failed: fp32, checkpointing on" in capsys.readouterr().err


def test_default_output_names_the_card(tiny_result):
    target = as_target_setting(tiny_result, 5.0)
    target["device"] = "NVIDIA H100 80GB HBM3"
    assert gpu_check.default_output(target).name == "gpu-check-nvidia-h100-80gb-hbm3.json"
    assert gpu_check.default_output(target).parent == REPO / "bench"
    other = copy.deepcopy(target)
    other["settings"]["model"] = "ViT-L-14"
    assert gpu_check.default_output(other).name == (
        "gpu-check-nvidia-h100-80gb-hbm3-vit-l-14-8f-b32.json"
    )


def test_cli_without_cuda_exits_2_with_one_sentence():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA, even on a GPU machine
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == gpu_check.NO_CUDA
    assert proc.stdout == ""
