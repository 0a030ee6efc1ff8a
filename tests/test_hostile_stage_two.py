"""Stage two against hostile input: changed flags on --resume, kills during evaluation,
silently wrong settings, unreadable files and folders. Each case ends in one sentence on
stderr and exit status 2 (or, for a kill, a clean log)."""

import json
import shutil
import subprocess
import sys

import pytest

from storyboard_common.errors import UserError
from trainer.config import RESUME_MAY_CHANGE, RunConfig, resolve_config

from .conftest import REPO, TINY_CLIP_CONFIG
from .test_engine import lines, run_args


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "trainer", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_cli(args, *extra):
    return subprocess.run(
        [*args, *map(str, extra)], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def one_error(done, *needles):
    """Exit status 2 and one `error:` sentence holding every needle, no traceback."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    for needle in needles:
        assert needle in line, line
    return line


def with_flag(args, flag, value):
    """`args` with `flag`'s value replaced (or appended)."""
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = str(value)
    else:
        args += [flag, str(value)]
    return args


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):
    """A 1-epoch run started with --resume in an empty folder (so: starting fresh)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    done = run_cli(run_args(world, out, epochs=1), "--resume")
    assert done.returncode == 0, done.stderr
    assert f"no checkpoint in {out / 'checkpoints'}: starting fresh" in done.stderr
    return out


def test_resume_without_a_checkpoint_starts_fresh_with_a_notice(finished):
    assert (finished / "checkpoints" / "last.pt").exists()
    assert [x["epoch"] for x in lines(finished / "metrics.jsonl")] == [1, 1]


@pytest.mark.parametrize(
    "flag, value, shown",
    [
        ("--frames", 8, "--frames 4 -> 8"),
        ("--seed", 5, "--seed 1 -> 5"),
        ("--shots", 2, "--shots unset -> 2"),
        ("--lr", 10, "--lr 0.002 -> 10.0"),
        ("--aggregation", "mean", "--aggregation coarse+fine -> mean"),
        ("--epochs", 3, "--epochs 1 -> 3"),
    ],
)
def test_resume_refuses_changed_settings_and_keeps_config_json(world, finished, flag, value, shown):
    before = (finished / "config.json").read_text()
    args = with_flag(run_args(world, finished, epochs=1), flag, value)
    one_error(run_cli(args, "--resume"), "--resume", str(finished), shown, "config.json")
    assert (finished / "config.json").read_text() == before


def test_resume_names_every_changed_flag(world, finished):
    args = with_flag(with_flag(run_args(world, finished, epochs=1), "--frames", 8), "--seed", 5)
    one_error(run_cli(args, "--resume"), "--frames 4 -> 8", "--seed 1 -> 5")


def test_resume_allows_workers_and_keeps_config_json(world, finished):
    assert {"workers", "device", "out", "compile"} <= set(RESUME_MAY_CHANGE)
    before = (finished / "config.json").read_text()
    args = with_flag(run_args(world, finished, epochs=1), "--workers", 1)
    done = run_cli(args, "--resume")
    assert done.returncode == 0, done.stderr
    assert (finished / "config.json").read_text() == before
    assert json.loads(before)["workers"] == 0


def test_kill_during_evaluation_then_resume_logs_each_epoch_once(world, tmp_path, monkeypatch):
    from trainer import loop

    cfg = resolve_config(
        None,
        {
            "dataset": "list",
            "root": world["root"],
            "subtexts": world["subtexts"],
            "clip_model": str(TINY_CLIP_CONFIG),
            "clip_pretrained": str(world["ckpt"]),
            "frames": 4,
            "epochs": 3,
            "batch_size": 3,
            "lr": 2e-3,
            "warmup_epochs": 1,
            "workers": 0,
            "device": "cpu",
            "seed": 1,
            "out": tmp_path / "run",
        },
    )
    real, calls = loop.predict, []

    def dies_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during epoch 2's evaluation
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "predict", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, show_progress=False)
    log = lines(tmp_path / "run" / "metrics.jsonl")
    assert [(x["epoch"], "train_loss" in x) for x in log] == [(1, True), (1, False), (2, True)]
    monkeypatch.setattr(loop, "predict", real)
    loop.train(cfg, resume=True, show_progress=False)
    log = lines(tmp_path / "run" / "metrics.jsonl")
    assert [x["epoch"] for x in log if "train_loss" in x] == [1, 2, 3]
    assert [x["epoch"] for x in log if "top1" in x] == [1, 2, 3]


def test_shots_zero_is_refused(world, tmp_path):
    with pytest.raises(UserError, match="--shots must be at least 1, not 0"):
        resolve_config(None, {"shots": 0})
    one_error(run_cli(run_args(world, tmp_path / "run"), "--shots", 0), "--shots", "not 0")
    assert not (tmp_path / "run").exists()


def test_frames_longer_than_the_videos_is_refused_before_training(world, tmp_path):
    out = tmp_path / "run"
    args = with_flag(run_args(world, out, epochs=1), "--frames", 32)
    one_error(
        run_cli(args),
        "9 of the 9 training videos probed are shorter than --frames 32",
        "has 12 frames",
        "check-data",
    )
    assert not (out / "checkpoints").exists()
    assert not (out / "metrics.jsonl").exists() or not lines(out / "metrics.jsonl")


def test_an_epoch_of_zero_clips_is_an_error_not_a_loss_of_zero(world, tmp_path, monkeypatch):
    from trainer import loop, run_data

    monkeypatch.setattr(run_data, "short_videos", lambda *a, **k: ([], 0))  # the probe misses
    cfg = resolve_config(
        None,
        {
            "dataset": "list",
            "root": world["root"],
            "subtexts": world["subtexts"],
            "clip_model": str(TINY_CLIP_CONFIG),
            "clip_pretrained": str(world["ckpt"]),
            "frames": 32,
            "epochs": 1,
            "batch_size": 3,
            "workers": 0,
            "device": "cpu",
            "out": tmp_path / "run",
        },
    )
    with pytest.raises(UserError, match="epoch 1 read no training clip: all 9 videos"):
        loop.train(cfg, show_progress=False)
    assert not [x for x in lines(tmp_path / "run" / "metrics.jsonl") if "train_loss" in x]


def test_a_csv_as_clip_pretrained_is_one_sentence(world, tmp_path):
    csv = tmp_path / "classes.csv"
    csv.write_text("id,name\n0,a\n")
    args = with_flag(run_args(world, tmp_path / "run"), "--clip-pretrained", csv)
    one_error(run_cli(args), f"--clip-pretrained {csv} is not a PyTorch checkpoint")


def test_an_unwritable_out_is_refused_before_training(world, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "run"
    one_error(run_cli(run_args(world, out)), f"--out {out} cannot be written")
    done = cli(
        "cache-features",
        "--dataset",
        "list",
        "--root",
        world["root"],
        "--clip-model",
        TINY_CLIP_CONFIG,
        "--clip-pretrained",
        world["ckpt"],
        "--frames",
        4,
        "--device",
        "cpu",
        "--workers",
        0,
        "--out",
        out,
    )
    one_error(done, f"--out {out} cannot be written")


def test_truncated_checkpoints_are_named(world, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for name in ("last.pt", "best.pt"):
        path = run / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:1000])
    resumed = run_cli(run_args(world, run, epochs=1), "--resume")
    one_error(
        resumed,
        f"{run / 'checkpoints' / 'last.pt'} is not a readable checkpoint",
        "best.pt",
        "another --out",
    )
    evaluated = cli(
        "eval",
        "--checkpoint",
        run,
        "--dataset",
        "list",
        "--root",
        world["root"],
        "--subtexts",
        world["subtexts"],
        "--device",
        "cpu",
        "--workers",
        0,
    )
    one_error(evaluated, f"{run / 'checkpoints' / 'best.pt'} is not a readable checkpoint")
    predicted = cli(
        "predict", world["root"] / "clips" / "c2_3.mp4", "--checkpoint", run, "--device", "cpu"
    )
    one_error(predicted, f"{run / 'checkpoints' / 'best.pt'} is not a readable checkpoint")


@pytest.mark.parametrize(
    "setting, value, flag",
    [
        ("tau_coarse", 0.0, "--tau-coarse"),
        ("tau_fine", -1.0, "--tau-fine"),
        ("lr", -1.0, "--lr"),
        ("lr", float("nan"), "--lr"),
        ("micro_batch", 0, "--micro-batch"),
        ("temporal_layers", -1, "--temporal-layers"),
        ("attention_heads", 0, "--heads"),
        ("weight_decay", -0.1, "--weight-decay"),
        ("warmup_epochs", -1.0, "--warmup-epochs"),
        ("lam", -1.0, "--lambda"),
        ("eval_clips", 0, "--clips"),
        ("amp", "fp8", "--amp"),
    ],
)
def test_out_of_range_settings_are_refused_naming_the_flag(setting, value, flag):
    """Found by our own sweep: these were accepted (a zero temperature divides by zero, a
    --micro-batch 0 was read as "unset") or ended in an optimiser traceback."""
    with pytest.raises(UserError, match=f"^{flag} must be"):
        RunConfig(**{setting: value})
