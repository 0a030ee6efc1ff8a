"""Models that travel safely: an exported folder (no pickle in it) loads after the run, its
CLIP checkpoint and its artifacts are gone, also as hf-hub:ORG/REPO from the Hugging Face
cache with no network call; a checkpoint or CLIP file that holds code is refused and never run."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from storyboard_common.errors import UserError
from testkit.cli import REPO, TINY_CLIP_CONFIG
from testkit.hub import Blackhole, cache_repo
from testkit.list_runs import CLASSES
from trainer.checkpoints import load_checkpoint
from trainer.evaluation import evaluate_checkpoint
from trainer.export import model_card
from trainer.predict import predict_video
from trainer.run_models import export_run
from trainer.settings import RunConfig
from trainer.training import train

EXPORTED = {"model.safetensors", "config.json", "clip_config.json", "subtexts.parquet", "README.md"}


def author_config(world, author, out) -> RunConfig:
    """A run on the author's machine: its own copies of the CLIP checkpoint and artifacts."""
    return RunConfig(
        dataset="list",
        root=world["root"],
        subtexts=author / "art" / world["subtexts"].relative_to(world["base"] / "art"),
        clip_model=str(TINY_CLIP_CONFIG),
        clip_pretrained=str(author / "clip.pt"),
        frames=4,
        epochs=1,
        batch_size=3,
        lr=2e-3,
        warmup_epochs=1,
        workers=0,
        device="cpu",
        seed=1,
        out=out,
    )


@pytest.fixture()
def author_run(world, tmp_path):
    """A run that trained its visual tower, with the CLIP and artifacts only it has."""
    author = tmp_path / "author"
    author.mkdir()
    shutil.copy(world["ckpt"], author / "clip.pt")
    shutil.copytree(world["base"] / "art", author / "art")
    cfg = author_config(world, author, tmp_path / "run")
    train(cfg, show_progress=False)
    return cfg


def test_export_moves_and_loads_without_the_run_its_clip_or_artifacts(world, author_run, tmp_path):
    from safetensors import safe_open

    run, video = author_run.out, world["root"] / "clips" / "c2_3.mp4"
    evaluated = evaluate_checkpoint(
        run, "list", world["root"], device="cpu", workers=0, show_progress=False
    )
    predicted = predict_video(run, video, device="cpu", top=3)
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "export", str(run), "--out", str(tmp_path / "export")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    export = tmp_path / "export"
    assert {p.name for p in export.iterdir()} == EXPORTED
    for path in export.iterdir():  # no pickle, no zip (torch.save) anywhere
        assert path.read_bytes()[:2] not in (b"\x80\x02", b"PK"), path
    with safe_open(export / "model.safetensors", "pt") as weights:
        names = set(weights.keys())
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert names == set(state["model"]) and any(n.startswith("visual.") for n in names)
    config = json.loads((export / "config.json").read_text())
    assert config["classes"] == CLASSES and config["architecture"]["frames"] == 4
    assert config["clip"]["pretrained_id"].startswith("clip.pt@")
    assert config["metrics"]["top1"] == pytest.approx(evaluated["top1"])
    card = (export / "README.md").read_text()
    assert "| top-1 |" in card and "file:sets (3 classes)" in card
    check_model_card(export, config)

    moved = tmp_path / "elsewhere" / "model"
    shutil.move(export, moved)
    shutil.rmtree(run)
    shutil.rmtree(tmp_path / "author")  # the CLIP checkpoint and the artifact folder
    again = predict_video(moved, video, device="cpu", top=3)
    assert [n for n, _ in again.top] == [n for n, _ in predicted.top]
    assert [p for _, p in again.top] == pytest.approx([p for _, p in predicted.top], abs=1e-6)
    assert evaluate_checkpoint(
        moved, "list", world["root"], device="cpu", workers=0, show_progress=False
    ) == pytest.approx(evaluated)
    with pytest.raises(
        UserError,
        match=r"was trained on list: evaluating hmdb51 takes "
        r"--subtexts",
    ):
        evaluate_checkpoint(moved, "hmdb51", tmp_path, device="cpu", show_progress=False)
    with pytest.raises(UserError, match="is an exported model, which holds its CLIP: drop --clip"):
        evaluate_checkpoint(moved, root=world["root"], clip_pretrained="clip.pt")
    with pytest.raises(UserError, match="holds one checkpoint: drop --last"):
        evaluate_checkpoint(
            moved, "list", world["root"], device="cpu", show_progress=False, checkpoint="last"
        )

    # The same folder as hf-hub:ORG/REPO, from the Hugging Face cache, with a Hub that never
    # answers: no network call for what is cached, one short try for what is not.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    cache_repo(tmp_path / "hf-home" / "hub", "storyboard/tiny", moved)
    args = [
        "eval",
        "--dataset",
        "list",
        "--root",
        str(world["root"]),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--json",
        "--checkpoint",
    ]
    with Blackhole() as hole:
        env["HF_ENDPOINT"] = hole.url
        hub = subprocess.run(
            [sys.executable, "-m", "trainer", *args, "hf-hub:storyboard/tiny"],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
        )
        assert hub.returncode == 0, hub.stderr
        assert json.loads(hub.stdout) == pytest.approx(evaluated)
        assert hole.connections == 0
        absent = subprocess.run(
            [sys.executable, "-m", "trainer", *args, "hf-hub:storyboard/none"],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
        )
        assert hole.connections == 1  # one try, no retries
    assert absent.returncode == 2 and absent.stderr.count("\n") == 1
    assert absent.stderr.startswith(
        "error: hf-hub:storyboard/none is not in the Hugging Face cache"
    )
    assert "`hf download storyboard/none`" in absent.stderr


def check_model_card(export, config):
    """The card's Hub metadata as the Hub reads it (`ModelCard.load`): license, the run's
    metrics as `model-index`, the paper's BibTeX; `base_model` only where the CLIP's weights
    are on the Hub (the tiny CLIP's checkpoint is not; ViT-B-16's `openai` tag is)."""
    from huggingface_hub import ModelCard

    from storyboard_common.about import PAPER

    card = ModelCard.load(export / "README.md")
    data = card.data
    assert (data.license, data.library_name, data.pipeline_tag) == (
        "mit",
        "storyboard",
        "video-classification",
    )
    assert data.datasets == ["list"] and "action-recognition" in data.tags
    results = {r.metric_name: r for r in data.eval_results}
    assert set(results) == {"top-1", "top-5", "mean class accuracy"}  # single-label: no mAP
    assert results["top-1"].metric_value == config["metrics"]["top1"]
    assert results["top-5"].metric_value == config["metrics"]["top5"]
    assert {(r.task_type, r.dataset_name, r.metric_type) for r in results.values()} >= {
        ("video-classification", "list", "accuracy")
    }
    assert data.base_model is None and "no `base_model` in the metadata" in card.text
    assert f"eprint = {{{PAPER['arxiv']}}}" in card.text and PAPER["title"] in card.text
    hub_clip = {**config, "clip": {**config["clip"], "model_id": "ViT-B-16"}}
    hub_clip["clip"]["pretrained_id"] = "openai"
    (export / "README.md").write_text(model_card(hub_clip))
    assert ModelCard.load(export / "README.md").data.base_model == (
        "timm/vit_base_patch16_clip_224.openai"
    )
    (export / "README.md").write_text(str(card))  # the exported card, as it was


class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_and_clip_files_that_hold_code_are_refused_unrun(world, author_run, tmp_path):
    marker = tmp_path / "payload-ran"
    run = author_run.out
    good = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for name in ("best.pt", "last.pt"):
        torch.save({**good, "model": Payload(marker)}, run / "checkpoints" / name)
    refusal = r"holds posix.system, not only tensors and plain data: loading it could run code"
    with pytest.raises(UserError, match=refusal):  # best.pt
        predict_video(run, world["root"] / "clips" / "c2_3.mp4", device="cpu")
    with pytest.raises(UserError, match=refusal):  # last.pt
        train(author_run, resume=True, show_progress=False)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "eval",
            "--checkpoint",
            str(run),
            "--dataset",
            "list",
            "--root",
            str(world["root"]),
            "--device",
            "cpu",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1
    assert "best.pt holds posix.system" in cli.stderr
    with pytest.raises(UserError, match=refusal):
        export_run(run, tmp_path / "export")

    clip_file = tmp_path / "clip-with-payload.pt"
    torch.save({"state_dict": Payload(marker)}, clip_file)
    score = subprocess.run(
        [
            sys.executable,
            "-m",
            "subtext_gen",
            "score",
            "--tpp",
            "--artifacts",
            str(tmp_path / "author" / "art"),
            "--clip-model",
            str(TINY_CLIP_CONFIG),
            "--clip-pretrained",
            str(clip_file),
            "--device",
            "cpu",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert score.returncode == 2 and score.stderr.count("\n") == 1, score.stderr
    assert f"--clip-pretrained {clip_file} holds posix.system, not only tensors" in score.stderr
    with pytest.raises(UserError, match=r"holds posix.system, not only tensors: loading"):
        train(
            RunConfig(
                **{
                    **author_run.__dict__,
                    "clip_pretrained": str(clip_file),
                    "out": tmp_path / "other",
                }
            ),
            show_progress=False,
        )
    assert not marker.exists()  # nothing ran


def test_checkpoints_hold_plain_settings_and_older_ones_with_paths_still_load(author_run, tmp_path):
    state = torch.load(author_run.out / "checkpoints" / "last.pt", weights_only=True)
    assert isinstance(state["config"]["root"], str)  # JSON values, no pathlib objects
    older = {**state, "config": {**state["config"], "root": author_run.root}}
    torch.save(older, tmp_path / "older.pt")  # as runs before safe loading saved them
    loaded = load_checkpoint(tmp_path / "older.pt", "cpu", "")
    assert loaded["config"]["root"] == author_run.root
