"""A tiny end-to-end run on CPU: tiny CLIP checkpoint, miniature list dataset, real CLI."""

import json
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from storyboard_common.errors import UserError
from trainer.config import resolve_config

from .conftest import CLASSES, REPO, TINY_CLIP_CONFIG


def run_args(world, out, epochs=4, aggregation="coarse+fine"):
    return [
        sys.executable,
        "-m",
        "trainer",
        "run",
        "--dataset",
        "list",
        "--root",
        str(world["root"]),
        "--subtexts",
        str(world["subtexts"]),
        "--clip-model",
        str(TINY_CLIP_CONFIG),
        "--clip-pretrained",
        str(world["ckpt"]),
        "--frames",
        "4",
        "--epochs",
        str(epochs),
        "--batch-size",
        "3",
        "--lr",
        "2e-3",
        "--warmup-epochs",
        "1",
        "--aggregation",
        aggregation,
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--seed",
        "1",
    ]


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_tiny_run_lowers_the_loss_and_writes_the_run_directory(world, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [*run_args(world, out), "--json"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 <= result["top1"] <= 1 and result["n"] == 3
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
    from trainer.runs import load_run

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


@pytest.mark.parametrize("micro_batch", [1, 3])
def test_micro_batch_below_the_batch_warns_once_that_the_contrast_is_smaller(
    world, tmp_path, micro_batch
):
    from trainer.loop import train

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
    from trainer.runs import load_run

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
