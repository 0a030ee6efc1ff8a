"""Training end to end on CPU through the real CLI (`run`, `--resume`, `eval`, `predict`,
`export`), also from another folder: tiny CLIP checkpoint, miniature list dataset."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from storyboard_common.errors import UserError
from testkit.cli import REPO, TINY_CLIP_CONFIG, lines, trainer_cli
from testkit.list_runs import CLASSES, run_args
from trainer.config import resolve_config
from trainer.settings import RunConfig
from trainer.subtexts import require_subtexts
from trainer.training import run_folders


def test_tiny_run_lowers_the_loss_and_writes_the_run_directory(world, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [*run_args(world, out), "--json"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    (result_line,) = done.stdout.strip().splitlines()  # --json: stdout is the JSON alone
    result = json.loads(result_line)
    assert 0 <= result["top1"] <= 1 and result["n"] == 3
    assert done.stderr.splitlines()[-2:] == [
        f"run folder: {out}",
        f"evaluate: python -m trainer eval --checkpoint {out}",
    ]
    log = lines(out / "metrics.jsonl")
    train = [x for x in log if "train_loss" in x]
    assert len(train) == 4 and train[-1]["train_loss"] < train[0]["train_loss"]
    assert all("top1" in x and "top5" in x for x in log if "train_loss" not in x)
    for name in (
        "config.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "per_class_accuracy.csv",
        "predictions.parquet",
        "report.md",
        "curves.png",
        "per_class.png",
        "confusion.png",
    ):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "![confusion matrix](confusion.png)" in report and "Best evaluation" in report
    again = subprocess.run(run_args(world, out), cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.slow
def test_resume_after_ctrl_c_gives_the_same_metrics(world, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(run_args(world, straight), cwd=REPO, check=True, capture_output=True)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        run_args(world, cut), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (cut / "metrics.jsonl").exists():
        time.sleep(0.05)
    while time.time() < deadline and len((cut / "metrics.jsonl").read_text().splitlines()) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    assert (cut / "checkpoints" / "last.pt").exists()
    resumed = subprocess.run(
        [*run_args(world, cut), "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    a = [x for x in lines(straight / "metrics.jsonl") if "top1" in x]
    b = {x["epoch"]: x for x in lines(cut / "metrics.jsonl") if "top1" in x}
    assert [x["epoch"] for x in a] == sorted(b)
    for x in a:
        assert b[x["epoch"]]["top1"] == x["top1"]
    la = [x["train_loss"] for x in lines(straight / "metrics.jsonl") if "train_loss" in x]
    lb = {x["epoch"]: x["train_loss"] for x in lines(cut / "metrics.jsonl") if "train_loss" in x}
    assert la[-1] == pytest.approx(lb[len(la)], rel=1e-5)


@pytest.mark.slow
def test_eval_command_and_zero_shot_half(world, tmp_path):
    out = tmp_path / "run"
    subprocess.run(run_args(world, out, epochs=1), cwd=REPO, check=True, capture_output=True)
    cmd = [
        sys.executable,
        "-m",
        "trainer",
        "eval",
        "--checkpoint",
        str(out),
        "--dataset",
        "list",
        "--root",
        str(world["root"]),
        "--subtexts",
        str(world["subtexts"]),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--json",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) >= {"top1", "top5", "mean_class_acc", "map", "n"} and result["n"] == 3
    half = subprocess.run(
        [*cmd, "--zero-shot", "half"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert half.returncode == 0, half.stderr
    assert json.loads(half.stdout)["runs"] == 10

    # --last loads last.pt, the default best.pt: mark last.pt's logit scale to tell them apart.
    from trainer.run_models import load_run

    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    state["model"]["head.logit_scale"] += 1.0
    torch.save(state, out / "checkpoints" / "last.pt")
    scales = {
        which: float(load_run(out, None, None, "cpu", which).built.model.head.logit_scale)
        for which in ("best", "last")
    }
    assert scales["last"] == pytest.approx(scales["best"] + 1.0)
    last = subprocess.run([*cmd, "--last"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert last.returncode == 0 and json.loads(last.stdout)["n"] == 3, last.stderr


def test_clear_errors(world, tmp_path):
    with pytest.raises(UserError, match="unknown --preset 'k700'"):
        resolve_config("k700", {})
    missing = subprocess.run(
        [*run_args(world, tmp_path / "x"), "--subtexts", str(tmp_path / "none.parquet")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "sub-text artifact not found" in missing.stderr
    other = tmp_path / "other"
    (other / "clips").mkdir(parents=True)
    (other / "classes.csv").write_text("id,name\n0,a\n1,b\n2,c\n")
    for split in ("train", "test"):
        (other / f"{split}.txt").write_text("clips/c0_0.mp4 a\n")
    wrong = subprocess.run(
        [*run_args(world, tmp_path / "y"), "--root", str(other), "--videos", str(world["root"])],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2
    assert "holds other classes than list (not in the artifact: 'a' (" in wrong.stderr
    assert not (tmp_path / "y").exists()  # a refused run leaves no run folder behind


@pytest.mark.parametrize("micro_batch", [1, 3])
def test_micro_batch_below_the_batch_warns_once_that_the_contrast_is_smaller(
    world, tmp_path, micro_batch
):
    from trainer.training import train

    cfg = resolve_config(
        None,
        {
            "dataset": "list",
            "root": world["root"],
            "subtexts": world["subtexts"],
            "clip_model": str(TINY_CLIP_CONFIG),
            "clip_pretrained": str(world["ckpt"]),
            "frames": 4,
            "epochs": 1,
            "batch_size": 3,
            "micro_batch": micro_batch,
            "workers": 0,
            "device": "cpu",
            "out": tmp_path / "run",
        },
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, show_progress=False)
    about_contrast = [str(w.message) for w in caught if "class-to-video contrast" in str(w.message)]
    if micro_batch == 3:
        assert about_contrast == []
    else:
        (message,) = about_contrast
        assert "--batch-size 3" in message and "--micro-batch 1" in message
        assert "Eq. 13," in message and "sees 1 clips per step" in message


def test_schedule_warms_up_then_decays_per_optimiser_step():
    from trainer.schedule import lr_lambda

    f = lr_lambda(total_steps=10, warmup_steps=2)
    assert [round(f(s), 4) for s in (0, 1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5)
    assert f(10) == pytest.approx(0.0, abs=1e-12)


def test_predictions_hold_view_averaged_probabilities(world, tmp_path):
    import numpy as np
    import pandas as pd

    out = tmp_path / "views"
    args = [*run_args(world, out, epochs=1), "--clips", "2", "--crops", "3"]
    subprocess.run(args, cwd=REPO, check=True, capture_output=True)
    pred = pd.read_parquet(out / "predictions.parquet")
    probs = np.stack(pred["prob"].to_numpy())
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert (pred["pred"].to_numpy() == probs.argmax(1)).all()
    assert lines(out / "metrics.jsonl")[-1]["n"] == 3  # 3 videos, 6 views each


def test_predict_prints_top_classes_and_plots(world, tmp_path):
    out = tmp_path / "run"
    subprocess.run(run_args(world, out, epochs=1), cwd=REPO, check=True, capture_output=True)
    from trainer.predict import plot_prediction, predict_video

    pred = predict_video(out, world["root"] / "clips" / "c2_3.mp4", device="cpu", top=3)
    assert [name for name, _ in pred.top] and sorted(n for n, _ in pred.top) == sorted(CLASSES)
    assert abs(sum(p for _, p in pred.top) - 1) < 1e-5  # all 3 classes shown
    assert pred.frames.shape == (4, 32, 32, 3) and pred.frames.dtype.name == "uint8"
    assert pred.coarse.shape == (4,) and abs(pred.coarse.sum() - 1) < 1e-5
    assert pred.fine.shape == (4,) and abs(pred.fine.sum() - 1) < 1e-5
    assert len(pred.sub_texts) == 3 and set(pred.best_sub_text.tolist()) <= {0, 1, 2}
    png = plot_prediction(pred, tmp_path / "pred.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "predict",
            str(world["root"] / "clips" / "c2_3.mp4"),
            "--checkpoint",
            str(out),
            "--device",
            "cpu",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0 and "probability" in cli.stdout


def test_prediction_plot_shows_the_model_s_importance_and_best_sub_texts(world, tmp_path):
    """The best sub-text per frame is recomputed by hand (Eq. 10's inner term, word by word);
    the figure's frame titles, bar heights and text are those of the prediction."""
    import numpy as np

    from trainer.predict import predict_video, prediction_figure
    from trainer.run_models import load_run

    out = tmp_path / "run"
    subprocess.run(run_args(world, out, epochs=1), cwd=REPO, check=True, capture_output=True)
    video = world["root"] / "clips" / "c1_3.mp4"
    pred = predict_video(out, video, device="cpu", top=3)

    loaded = load_run(out, None, None, "cpu")
    clip = torch.from_numpy(pred.frames).permute(0, 3, 1, 2)  # what the model saw
    with torch.inference_mode():
        model_out = loaded.built.model(clip[None], loaded.built.text)
    top = loaded.class_names.index(pred.top[0][0])
    frames = torch.nn.functional.normalize(model_out["frames"][0], dim=-1).numpy()  # [T, D]
    tokens, mask = loaded.built.text.sub_tokens[top], loaded.built.text.sub_mask[top]
    by_hand = np.zeros((tokens.shape[0], len(frames)))
    for n in range(tokens.shape[0]):
        words = [w / np.linalg.norm(w) for w, real in zip(tokens[n].numpy(), mask[n]) if real]
        for t, v in enumerate(frames):
            by_hand[n, t] = np.mean([w @ v for w in words])
    np.testing.assert_array_equal(pred.best_sub_text, by_hand.argmax(0))
    np.testing.assert_allclose(pred.coarse, model_out["coarse"][0, top].numpy(), atol=1e-6)
    np.testing.assert_allclose(pred.fine, model_out["fine"][0, top].numpy(), atol=1e-6)
    assert pred.sub_texts == [f"{pred.top[0][0]} {p}" for p in ("start", "middle", "end")]

    fig = prediction_figure(pred)
    strip = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in strip] == [f"S{b + 1}" for b in pred.best_sub_text]
    for ax, frame in zip(strip, pred.frames):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), frame)
    (bars,) = [ax for ax in fig.axes if ax.patches]
    heights = [p.get_height() for p in bars.patches]
    np.testing.assert_allclose(heights, np.concatenate([pred.coarse, pred.fine]), rtol=1e-6)
    text = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert f"top class: {pred.top[0][0]}" in text
    assert all(f"S{i + 1}: {s}" in text for i, s in enumerate(pred.sub_texts))


def relative_run_args(subtexts):
    """The flags of a 1-epoch run, every path relative to the folder it starts in."""
    return [
        "run",
        "--dataset",
        "list",
        "--root",
        "data",
        "--subtexts",
        subtexts,
        "--clip-model",
        TINY_CLIP_CONFIG,
        "--clip-pretrained",
        "clip.pt",
        "--frames",
        "4",
        "--epochs",
        "1",
        "--batch-size",
        "3",
        "--lr",
        "2e-3",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        "runs/here",
        "--seed",
        "1",
    ]


@pytest.fixture(scope="module")
def started_here(world, tmp_path_factory):
    """A run started in its own folder with relative --root, --subtexts, --clip-pretrained
    and --out, over an artifact scored there with the relative checkpoint path `clip.pt`.
    -> {folder, run, subtexts (relative), result (the run's own evaluation)}."""
    from storyboard_common.clip import load_clip
    from subtext_gen.score import score

    folder = tmp_path_factory.mktemp("started-here")
    shutil.copytree(world["root"], folder / "data")
    shutil.copy(world["ckpt"], folder / "clip.pt")
    shutil.copytree(world["base"] / "art", folder / "art")
    shutil.rmtree(folder / "art" / world["subtexts"].parent.name)  # scored again, below
    with pytest.MonkeyPatch.context() as here:
        here.chdir(folder)
        scored = score(Path("art"), load_clip(str(TINY_CLIP_CONFIG), "clip.pt", "cpu")).out_dir
    subtexts = scored / "subtexts.parquet"
    done = trainer_cli(*relative_run_args(subtexts), "--json", cwd=folder)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "folder": folder,
        "run": folder / "runs" / "here",
        "subtexts": subtexts,
        "result": result,
    }


def evaluated(done) -> dict:
    assert done.returncode == 0, done.stderr
    return {k: v for k, v in json.loads(done.stdout).items() if k != "epoch"}


def own_metrics(started_here) -> dict:
    return {k: v for k, v in started_here["result"].items() if k != "epoch"}


def test_a_run_records_absolute_paths_and_evaluates_from_any_folder(started_here, tmp_path):
    from storyboard_common.clip import clip_identity
    from storyboard_common.subtexts import read_subtexts

    folder, run = started_here["folder"], started_here["run"]
    config = json.loads((run / "config.json").read_text())
    expected = {
        "root": folder / "data",
        "subtexts": folder / started_here["subtexts"],
        "clip_model": TINY_CLIP_CONFIG,
        "clip_pretrained": folder / "clip.pt",
        "out": run,
    }
    assert {name: config[name] for name in expected} == {
        name: str(path.resolve()) for name, path in expected.items()
    }
    assert config["videos"] is None and config["fewshot_list"] is None
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert {name: state["config"][name] for name in expected} == {
        name: config[name] for name in expected
    }
    # Scored with `clip.pt`, read with its absolute path: the same CLIP for the artifact.
    meta = read_subtexts(Path(config["subtexts"])).meta
    assert (meta.clip_model, meta.clip_pretrained) == clip_identity(
        config["clip_model"], config["clip_pretrained"]
    )

    elsewhere = evaluated(trainer_cli("eval", "--checkpoint", run, "--json", cwd=tmp_path))
    assert elsewhere == pytest.approx(own_metrics(started_here))
    assert elsewhere["n"] == 3


def test_a_moved_root_is_one_sentence_and_root_names_its_new_place(started_here, tmp_path):
    from trainer.evaluation import evaluate_checkpoint

    run, data = started_here["run"], started_here["folder"] / "data"
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    shutil.move(data, tmp_path / "moved")
    try:
        done = trainer_cli("eval", "--checkpoint", run, "--json", cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == "", done.stderr
        assert done.stderr == (
            f"error: the run's recorded --root {data.resolve()} no longer exists; pass --root "
            "DIR (where the dataset is now).\n"
        )
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
        assert list(tmp_path.iterdir()) == [tmp_path / "moved"]
        with pytest.MonkeyPatch.context() as here:
            here.chdir(tmp_path)
            result = evaluate_checkpoint(run, root=Path("moved"), workers=0, show_progress=False)
        assert {k: v for k, v in result.items() if k != "epoch"} == pytest.approx(
            own_metrics(started_here)
        )
    finally:
        shutil.move(tmp_path / "moved", data)


@pytest.mark.slow
def test_predict_export_and_resume_from_another_folder(started_here, world, tmp_path):
    from trainer.evaluation import evaluate_checkpoint
    from trainer.predict import predict_video

    folder, run = started_here["folder"], started_here["run"]
    shutil.copy(folder / "data" / "clips" / "c2_3.mp4", tmp_path / "video.mp4")
    predicted = trainer_cli("predict", "video.mp4", "--checkpoint", run, "--top", "1", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    top = predict_video(run, tmp_path / "video.mp4", device="cpu", top=1).top[0][0]
    assert top in predicted.stdout

    exported = trainer_cli("export", run, "--out", "model", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["training"]["root"] == str((folder / "data").resolve())
    # No --dataset: the export's own; its dataset is not shipped, so --root says where.
    result = evaluate_checkpoint(
        tmp_path / "model", root=folder / "data", workers=0, show_progress=False
    )
    assert {k: v for k, v in result.items() if k != "epoch"} == pytest.approx(
        own_metrics(started_here)
    )

    # The same flags, relative to this folder: the same paths, so the run resumes (it is done).
    config_json = (run / "config.json").read_text()
    args = relative_run_args(os.path.relpath(folder / started_here["subtexts"], tmp_path))
    args = [os.path.relpath(folder / a, tmp_path) if a in ("data", "clip.pt") else a for a in args]
    args[args.index("--out") + 1] = str(run)
    resumed = trainer_cli(*args, "--resume", "--json", cwd=tmp_path)
    assert evaluated(resumed) == pytest.approx(own_metrics(started_here))
    assert (run / "config.json").read_text() == config_json


def test_only_clip_settings_that_name_local_files_are_made_absolute(tmp_path, monkeypatch):
    from trainer.config import absolute_paths
    from trainer.settings import RunConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.json").write_text("{}")
    shipped = "data/clip/TinyCLIP-test.json"  # found from any folder, kept as given
    cases = {
        ("ViT-B-16", "openai"): ("ViT-B-16", "openai"),
        ("hf-hub:org/repo", "none"): ("hf-hub:org/repo", "none"),
        (shipped, "laion2b_s34b_b88k"): (shipped, "laion2b_s34b_b88k"),
        (shipped, "weights/clip.pt"): (shipped, str(tmp_path / "weights" / "clip.pt")),
        ("mine.json", "clip.bin"): (str(tmp_path / "mine.json"), str(tmp_path / "clip.bin")),
    }
    for (model, pretrained), expected in cases.items():
        cfg = absolute_paths(RunConfig(clip_model=model, clip_pretrained=pretrained))
        assert (cfg.clip_model, cfg.clip_pretrained) == expected


def test_split_all_trains_each_fold_in_its_folder_and_reports_their_mean(tmp_path, monkeypatch):
    from trainer import training
    from trainer.settings import RunConfig

    folds = []

    def one_fold(cfg, resume, show_progress, log_settings):
        folds.append((cfg.split, cfg.out))
        top1 = int(cfg.split) / 10
        return {"n": 10, "top1": top1, "top5": 1.0, "mean_class_acc": top1, "map": None}

    monkeypatch.setattr(training, "train", one_fold)
    result = training.train_folds(RunConfig(dataset="hmdb51", split="all", out=tmp_path))
    assert folds == [(str(k), tmp_path / f"fold{k}") for k in (1, 2, 3)]
    assert result["n"] == 30 and result["runs"] == 3 and result["map"] is None
    assert result["top1"] == pytest.approx(0.2) and result["top1_std"] == pytest.approx(
        0.0816, abs=1e-4
    )
    assert training.train_folds(RunConfig(dataset="hmdb51", split="2", out=tmp_path))["top1"] == 0.2


def test_run_folders_are_the_out_folder_or_one_per_fold():
    out = Path("runs/x")
    assert run_folders(RunConfig(dataset="list", out=out)) == [out]
    assert run_folders(RunConfig(dataset="hmdb51", split="all", out=out)) == [
        out / "fold1",
        out / "fold2",
        out / "fold3",
    ]
    assert run_folders(RunConfig(dataset="hmdb51", shots=2, split="1")) == [
        Path("runs/hmdb51-2shot-split1-coarse+fine-seed0")
    ]


def test_a_missing_artifact_names_those_scored_for_the_dataset_and_their_flags(
    world, tmp_path, monkeypatch
):
    """The list world's artifact (scored with the tiny CLIP's checkpoint) in its default
    place is selected by the CLIP flags; a copy in a folder of another name by --subtexts."""
    from storyboard_common.subtexts import read_meta

    meta = read_meta(world["subtexts"])
    name, _, digest = meta["clip_pretrained"].partition("@")
    assert (meta["clip_model"], name, len(digest)) == ("TinyCLIP-test", world["ckpt"].name, 12)
    monkeypatch.setenv("STORYBOARD_ARTIFACTS", str(tmp_path))
    missing = tmp_path / "none.parquet"
    with pytest.raises(UserError) as none:
        require_subtexts(missing, "list")
    assert str(none.value) == (
        f"sub-text artifact not found: {missing}. No artifact is scored for list under "
        f"{tmp_path}: `python -m subtext_gen score --tpp --dataset list --clip-model ... "
        "--clip-pretrained ...` scores one for another CLIP."
    )
    placed = tmp_path / "list" / f"TinyCLIP-test__{name}" / "subtexts.parquet"
    moved = tmp_path / "list" / "mine" / "subtexts.parquet"
    for copy in (placed, moved):
        copy.parent.mkdir(parents=True)
        shutil.copy(world["subtexts"], copy)
    (tmp_path / "list" / "broken").mkdir()
    (tmp_path / "list" / "broken" / "subtexts.parquet").write_text("not parquet")
    with pytest.raises(UserError) as two:
        require_subtexts(missing, "list")
    weights = f"PATH/{name} (the checkpoint it was scored with)"
    flags = f"--clip-model TinyCLIP-test --clip-pretrained {weights}"
    assert str(two.value) == (
        f"sub-text artifact not found: {missing}. Scored for list: {placed} ({flags}); "
        f"{moved} (--subtexts {moved} {flags}); or `python -m subtext_gen score --tpp "
        "--dataset list --clip-model ... --clip-pretrained ...` scores one for another CLIP."
    )
    assert require_subtexts(placed, "list") == placed
