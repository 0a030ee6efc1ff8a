"""Stage two against hostile input: changed flags on --resume, kills during evaluation,
silently wrong settings, unreadable files and folders. Each case ends in one sentence on
stderr and exit status 2 (or, for a kill, a clean log)."""

import dataclasses
import json
import re
import shutil
import subprocess

import pytest

from storyboard_common.errors import UserError
from testkit.cli import REPO, TINY_CLIP_CONFIG, lines, trainer_cli
from testkit.list_runs import run_args
from trainer.config import RESUME_MAY_CHANGE, resolve_config
from trainer.settings import RunConfig


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
        ("--lr", 0.5, "--lr 0.002 -> 0.5"),
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
    from trainer import training

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
    real, calls = training.predict, []

    def dies_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during epoch 2's evaluation
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "predict", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        training.train(cfg, show_progress=False)
    log = lines(tmp_path / "run" / "metrics.jsonl")
    assert [(x["epoch"], "train_loss" in x) for x in log] == [(1, True), (1, False), (2, True)]
    monkeypatch.setattr(training, "predict", real)
    training.train(cfg, resume=True, show_progress=False)
    log = lines(tmp_path / "run" / "metrics.jsonl")
    assert [x["epoch"] for x in log if "train_loss" in x] == [1, 2, 3]
    assert [x["epoch"] for x in log if "top1" in x] == [1, 2, 3]


def test_shots_zero_is_refused(world, tmp_path):
    with pytest.raises(UserError, match="--shots must be from 1 to 1000000, not 0"):
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
    from trainer import run_data, training

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
        training.train(cfg, show_progress=False)
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
    done = trainer_cli(
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


@pytest.mark.slow
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
    evaluated = trainer_cli(
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
    predicted = trainer_cli(
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


def test_resume_takes_a_moved_input_at_its_new_place_and_reads_older_relative_paths(
    world, tmp_path, monkeypatch
):
    from trainer.checkpoints import json_values
    from trainer.config import resolved_config
    from trainer.resuming import check_resume

    cfg = resolved_config(
        RunConfig(
            dataset="list",
            root=world["root"],
            subtexts=world["subtexts"],
            clip_model=str(TINY_CLIP_CONFIG),
            clip_pretrained=str(world["ckpt"]),
            out=tmp_path / "run",
        )
    )
    settings = json_values(dataclasses.asdict(cfg))
    gone = tmp_path / "gone"
    state = {"config": {**settings, "root": str(gone)}}
    with pytest.raises(UserError) as caught:
        check_resume(dataclasses.replace(cfg, root=gone), cfg.out, state)
    assert str(caught.value) == (
        f"the run's recorded --root {gone} no longer exists; pass --root DIR (where the "
        "dataset is now)."
    )
    assert check_resume(cfg, cfg.out, state) == settings  # config.json records the new place
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match=f"--root {cfg.root} -> {tmp_path / 'other'}"):
        check_resume(
            dataclasses.replace(cfg, root=tmp_path / "other"), cfg.out, {"config": settings}
        )
    # Older runs recorded the paths given, relative to a folder: read from this one.
    monkeypatch.chdir(cfg.root.parent)
    older = {**settings, "root": cfg.root.name, "out": "run", "subtexts": None}
    monkeypatch.setattr("trainer.config.default_subtexts", lambda *_: world["subtexts"])
    expected = {**settings, "out": str(cfg.root.parent / "run")}
    assert check_resume(cfg, cfg.out, {"config": older}) == expected


def test_every_moved_input_is_named_in_one_sentence(tmp_path):
    """Several recorded inputs that moved are named all at once, each with its flag, so
    a user does not learn of them one attempt at a time."""
    from trainer.config import check_recorded_inputs

    here = tmp_path / "subtexts.parquet"
    here.write_bytes(b"")
    root, videos, cache = tmp_path / "data", tmp_path / "videos", tmp_path / "cache"
    recorded = {"root": str(root), "subtexts": str(here), "videos": str(videos)}
    with pytest.raises(UserError) as caught:
        check_recorded_inputs({**recorded, "features": str(cache)})
    assert str(caught.value) == (
        f"the run's recorded --root {root}, --videos {videos} and --features {cache} no "
        "longer exist; pass --root DIR (where the dataset is now), --videos DIR (where the "
        "videos are now) and --features DIR (where the feature cache is now)."
    )
    root.mkdir()
    with pytest.raises(UserError) as caught:
        check_recorded_inputs(recorded)
    assert str(caught.value) == (
        f"the run's recorded --videos {videos} no longer exists; pass --videos DIR (where "
        "the videos are now)."
    )
    videos.mkdir()
    check_recorded_inputs(recorded)


def with_recorded(run, out, **settings):
    """A copy of `run`'s best checkpoint in `out`, recording `settings` instead."""
    import torch

    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    (out / "checkpoints").mkdir(parents=True)
    torch.save(
        {**state, "config": {**state["config"], **settings}}, out / "checkpoints" / "best.pt"
    )
    return out


def test_a_moved_input_of_a_run_is_one_sentence_naming_its_flag(
    world, finished, tmp_path, monkeypatch
):
    from trainer.evaluation import evaluate_checkpoint
    from trainer.predict import predict_video
    from trainer.run_models import export_run

    video, gone = world["root"] / "clips" / "c2_3.mp4", tmp_path / "gone"
    monkeypatch.chdir(tmp_path)

    def refusal(flag, recorded, takes):
        return re.escape(
            f"the run's recorded {flag} {recorded} no longer exists; pass {flag} {takes}"
        )

    # An older run's relative root, read from this folder, where it is not.
    older = with_recorded(finished, tmp_path / "older", root=world["root"].name)
    with pytest.raises(UserError, match=refusal("--root", world["root"].name, "DIR")):
        evaluate_checkpoint(older, workers=0, show_progress=False)
    monkeypatch.chdir(world["root"].parent)
    assert evaluate_checkpoint(older, workers=0, show_progress=False)["n"] == 3
    monkeypatch.chdir(tmp_path)

    moved = with_recorded(finished, tmp_path / "videos", videos=str(gone))
    with pytest.raises(
        UserError, match=refusal("--videos", gone, "DIR (where the videos are now).")
    ):
        evaluate_checkpoint(moved, show_progress=False)
    assert predict_video(moved, video, device="cpu").top  # reads no dataset

    moved = with_recorded(finished, tmp_path / "subtexts", subtexts=str(gone))
    with pytest.raises(UserError, match=refusal("--subtexts", gone, "FILE")):
        predict_video(moved, video, device="cpu")
    assert predict_video(moved, video, world["subtexts"], device="cpu").top

    moved = with_recorded(finished, tmp_path / "clip", clip_pretrained=str(gone / "clip.pt"))
    with pytest.raises(UserError, match=refusal("--clip-pretrained", gone / "clip.pt", "FILE")):
        export_run(moved, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    # On another dataset, the run's CLIP is still its own; its root and sub-texts are not.
    with pytest.raises(UserError, match=refusal("--clip-pretrained", gone / "clip.pt", "FILE")):
        evaluate_checkpoint(moved, "hmdb51", tmp_path, show_progress=False)
    done = trainer_cli("eval", "--checkpoint", moved, "--clip-pretrained", world["ckpt"], "--json")
    assert json.loads(done.stdout)["n"] == 3, done.stderr
