"""A run's logs beyond metrics.jsonl: a line every --log-every steps (console and
steps.jsonl, continued by a resume), TensorBoard and W&B (offline) with the same values,
and environment.json with one entry per start."""

import contextlib
import io
import json
import os
import platform
import signal
import struct
import subprocess
import sys

import pytest

from storyboard_common.errors import UserError
from testkit.cli import REPO, lines, run_app
from testkit.list_runs import run_config
from trainer import environment, training
from trainer.__main__ import app
from trainer.run_log import STEPS_FILE, LogSettings, check_reporters, parse_report_to

REPORTERS = ("tensorboard", "wandb")


@pytest.fixture(scope="module")
def logged_run(world, tmp_path_factory):
    """One epoch of 3 optimiser steps, a line per step, reported to TensorBoard and W&B
    (offline): Ctrl-C after step 1, then resumed over the leftovers of a killed run (a
    line for step 2, one cut short) -> (run folder, the console's lines)."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    tmp = tmp_path_factory.mktemp("logged")
    out = tmp / "run"
    settings = LogSettings(every=1, report_to=REPORTERS)
    real_step, calls = training.train_step, []

    def step_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        done = real_step(*args, **kwargs)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # the loop's handler: stop after this step
        return done

    console = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(console):
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            patch.setenv(name, str(tmp / "wandb-home"))
        patch.setattr(training, "train_step", step_then_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            training.train(run_config(world, out), show_progress=False, log_settings=settings)
        patch.setattr(training, "train_step", real_step)
        with open(out / STEPS_FILE, "a") as steps:  # what a kill after step 2 leaves
            steps.write(json.dumps({"epoch": 1, "step": 2, "global_step": 2, "loss": 99.0}))
            steps.write('\n{"epoch": 1, "st')
        training.train(run_config(world, out), True, show_progress=False, log_settings=settings)
    return out, console.getvalue().splitlines()


@pytest.mark.slow  # the fixture trains twice (~15 s on 2 cores)
def test_a_line_every_n_steps_on_the_console_and_in_steps_jsonl(logged_run):
    out, console = logged_run
    steps = lines(out / STEPS_FILE)
    assert [(s["epoch"], s["step"], s["global_step"]) for s in steps] == [
        (1, 1, 1),
        (1, 2, 2),
        (1, 3, 3),
    ]
    assert all(s["loss"] != 99.0 for s in steps)  # the killed run's line is gone
    train_loss = lines(out / "metrics.jsonl")[0]["train_loss"]
    # Each line's loss is its step's mean over 3 clips; the epoch's is their mean.
    assert sum(s["loss"] for s in steps) / 3 == pytest.approx(train_loss, rel=1e-6)
    # Warm-up over the epoch's 3 steps to --lr 2e-3: each step's own learning rate.
    assert [s["lr"] for s in steps] == pytest.approx([2e-3 / 3, 4e-3 / 3, 2e-3], rel=1e-12)
    for s in steps:
        assert s["clips_per_s"] > 0 and 0 <= s["data_wait"] <= 1 and s["memory_mib"] > 10
    printed = [line for line in console if line.startswith("epoch 1/1 step ")]
    assert printed == [
        f"epoch 1/1 step {s['step']}/3 loss {s['loss']:.4f} lr {s['lr']:.3g} "
        f"{s['clips_per_s']:.1f} clips/s data wait {s['data_wait']:.0%} "
        f"memory {s['memory_mib']:,.0f} MiB (max rss)"
        for s in steps
    ]


@pytest.mark.slow  # the fixture trains twice (~15 s on 2 cores)
def test_tensorboard_event_files_hold_the_logged_values(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = logged_run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()

    def scalars(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    steps = lines(out / STEPS_FILE)
    for name in ("loss", "lr", "clips_per_s", "data_wait", "memory_mib"):
        expected = [(s["global_step"], pytest.approx(s[name], rel=1e-6)) for s in steps]
        assert scalars(f"train/{name}") == expected, name
    train, evaluated = lines(out / "metrics.jsonl")
    assert scalars("epoch/train_loss") == [(3, pytest.approx(train["train_loss"], rel=1e-6))]
    for name in ("top1", "top5", "mean_class_acc"):
        assert scalars(f"eval/{name}") == [(3, pytest.approx(evaluated[name], rel=1e-6))]


def wandb_records(run_file):
    """The records of a W&B run file (`run-<id>.wandb`): a 7-byte header, then LevelDB-log
    chunks (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks, each
    record a `wandb_internal_pb2.Record` (installed wandb versions keep no reader of it)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@pytest.mark.slow  # the fixture trains twice (~15 s on 2 cores)
def test_wandb_offline_runs_hold_the_config_and_history(logged_run):
    out, _ = logged_run
    run_id = (out / "wandb_run_id.txt").read_text().strip()
    runs = sorted((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 2  # the start and the resume, as one W&B run
    history, configs = {}, []
    for folder in runs:
        for record in wandb_records(folder / f"run-{run_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                row = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
                history[row["_step"]] = row
            elif kind == "run":
                configs.append({i.key: json.loads(i.value_json) for i in record.run.config.update})
    assert len(configs) == 2
    for config in configs:
        assert config["lr"] == 2e-3 and config["out"] == str(out) and config["epochs"] == 1
    steps = lines(out / STEPS_FILE)
    train, evaluated = lines(out / "metrics.jsonl")
    assert sorted(history) == [1, 2, 3]
    for s in steps:
        assert history[s["global_step"]]["train/loss"] == pytest.approx(s["loss"], rel=1e-9)
        assert history[s["global_step"]]["train/lr"] == pytest.approx(s["lr"], rel=1e-9)
    assert history[3]["epoch/train_loss"] == pytest.approx(train["train_loss"], rel=1e-9)
    assert history[3]["eval/top1"] == pytest.approx(evaluated["top1"], rel=1e-9)


@pytest.mark.slow  # the fixture trains twice (~15 s on 2 cores)
def test_environment_json_holds_one_entry_per_start(logged_run):
    out, _ = logged_run
    entries = json.loads((out / "environment.json").read_text())
    assert [e["resumed"] for e in entries] == [False, True]
    assert all(e["argv"] == sys.argv and e["world_size"] == 1 for e in entries)
    if (REPO / ".git").exists():  # tests from a checkout: its commit
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert entries[0]["git"]["commit"] == head


def test_each_start_appends_its_environment(tmp_path, monkeypatch):
    import torch

    from trainer.distributed import init_distributed

    dist_info = init_distributed("cpu")
    monkeypatch.setattr(sys, "argv", ["trainer", "run", "--epochs", "1"])
    environment.record_environment(tmp_path, dist_info, resumed=False)
    environment.record_environment(tmp_path, dist_info, resumed=True)
    entries = json.loads((tmp_path / "environment.json").read_text())
    assert [e["resumed"] for e in entries] == [False, True]
    entry = entries[0]
    assert entry["argv"] == ["trainer", "run", "--epochs", "1"]
    assert entry["python"] == platform.python_version()
    assert entry["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert sorted(entry["packages"]) == sorted(environment.PACKAGES)
    assert (entry["device"], entry["world_size"]) == ("cpu", 1)
    assert entry["device_name"] and entry["hostname"]
    assert entry["git"] == environment.git_state()


def test_git_state_is_the_checkout_s_own_and_says_whether_it_is_dirty(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    (tmp_path / "trainer").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    git("add", "code.py")
    git("commit", "-q", "-m", "one")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.setattr(environment, "CODE_ROOT", tmp_path.resolve())
    assert environment.git_state() == {"commit": head, "dirty": False}
    (tmp_path / "code.py").write_text("a = 2\n")
    assert environment.git_state() == {"commit": head, "dirty": True}
    # Code installed somewhere inside another repository is no checkout of its own.
    monkeypatch.setattr(environment, "CODE_ROOT", (tmp_path / "trainer").resolve())
    assert environment.git_state() is None
    monkeypatch.setattr(environment, "CODE_ROOT", tmp_path.parent / "nowhere")
    assert environment.git_state() is None


def test_report_to_refuses_unknown_names_and_names_the_extra_of_a_missing_package(
    world, tmp_path, monkeypatch
):
    assert parse_report_to("wandb, tensorboard,wandb") == ("wandb", "tensorboard")
    assert parse_report_to(None) == parse_report_to("none") == ()
    _, _, error = run_app(app, "run", "--report-to", "tensorboard,mlflow")
    assert str(error) == (
        "--report-to takes tensorboard and/or wandb (comma-separated), not 'mlflow'."
    )
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(UserError) as refused:
        check_reporters(("wandb",), tmp_path / "run")
    assert str(refused.value) == (
        "--report-to wandb needs the wandb package: pip install 'storyboard[wandb]'."
    )
    out = tmp_path / "run"
    with pytest.raises(UserError):
        training.train(run_config(world, out), log_settings=LogSettings(report_to=("wandb",)))
    assert not out.exists()  # refused before anything was written


@pytest.fixture()
def no_wandb_account(monkeypatch, tmp_path):
    """No W&B key anywhere it is read (environment, an empty netrc file), no local mode."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine example.org login me password secret\n")
    monkeypatch.setenv("NETRC", str(netrc_file))
    return netrc_file


def test_wandb_without_a_key_or_local_mode_is_refused_before_the_run_folder(
    world, tmp_path, monkeypatch, no_wandb_account
):
    out = tmp_path / "run"
    with pytest.raises(UserError) as refused:
        training.train(run_config(world, out), log_settings=LogSettings(report_to=REPORTERS))
    assert str(refused.value) == (
        "--report-to wandb needs a W&B API key: set WANDB_API_KEY or run `wandb login`, or "
        f"set WANDB_MODE=offline to keep the log in {out / 'wandb'} (sync it later)."
    )
    assert not out.exists()
    # Each way W&B finds a key, or needs none, passes (nothing is sent: only checked).
    for name, value in (
        ("WANDB_MODE", "offline"),
        ("WANDB_MODE", "disabled"),
        ("WANDB_API_KEY", "k"),
    ):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            check_reporters(("wandb",), out)
    no_wandb_account.write_text("machine api.wandb.ai\n  login user\n  password k\n")
    check_reporters(("wandb",), out)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org:8443")
    with pytest.raises(UserError, match="needs a W&B API key"):
        check_reporters(("wandb",), out)
    assert not out.exists()


@pytest.mark.parametrize("name, folder", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_a_reporter_folder_that_is_a_file_or_unwritable_is_refused_writing_nothing(
    world, tmp_path, monkeypatch, name, folder
):
    """A resumed run's `tensorboard/` or `wandb/` that is a file, a link to nowhere, or a
    folder no one can write in (/proc's, even for root): one sentence before the run."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").mkdir()
    settings = LogSettings(report_to=(name,))
    for make, message in (
        (lambda p: p.write_text("notes"), f"--report-to {name}: {out / folder} is not a folder"),
        (lambda p: p.symlink_to(tmp_path / "gone"), f"--report-to {name}: {out / folder} is not"),
        (
            lambda p: p.symlink_to("/proc/1"),
            f"--report-to {name}: the folder {out / folder} cannot be written",
        ),
    ):
        make(out / folder)
        before = sorted(out.rglob("*"))
        with pytest.raises(UserError) as refused:
            training.train(run_config(world, out), True, log_settings=settings)
        assert str(refused.value).startswith(message), refused.value
        assert sorted(out.rglob("*")) == before  # nothing written
        (out / folder).unlink()
