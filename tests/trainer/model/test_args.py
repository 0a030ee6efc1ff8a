"""The model's record: made once from a run's settings, stored as its `asdict`, and read back
from every form checkpoints and exports have stored it in."""

import dataclasses
from types import SimpleNamespace

import pytest

from storyboard_common.errors import UserError
from trainer.model.args import RUN_SETTINGS, ModelArgs
from trainer.settings import RunConfig

CLIP = SimpleNamespace(image_size=32, model_id="TinyCLIP-test", pretrained_id="tiny.pt@0123")


def test_a_runs_settings_become_the_record_and_it_reads_back_as_stored():
    cfg = RunConfig(tau_coarse=0.25, temporal_layers=2, frames=4, grad_checkpointing=True)
    args = ModelArgs.of_run(cfg, CLIP)
    assert (args.tau_coarse, args.temporal_layers, args.frames) == (0.25, 2, 4)
    stored = dataclasses.asdict(args)
    assert stored["clip"] == {"model_id": "TinyCLIP-test", "pretrained_id": "tiny.pt@0123"}
    assert stored["image_size"] == 32 and set(RUN_SETTINGS) <= set(stored)
    assert ModelArgs.from_stored(stored, "best.pt") == args


def test_older_records_read_with_what_they_lack():
    cfg = RunConfig(aggregation="fine", attention_heads=2, grad_checkpointing=True)
    stored = dataclasses.asdict(ModelArgs.of_run(cfg, CLIP))
    # an export written before records: no grad_checkpointing, no CLIP identity
    older = {k: v for k, v in stored.items() if k not in ("grad_checkpointing", "clip")}
    read = ModelArgs.from_stored(older, "config.json")
    assert (read.grad_checkpointing, read.clip, read.image_size) == (False, None, 32)
    assert (read.aggregation, read.attention_heads) == ("fine", 2)
    # a checkpoint written before records: the run's settings stand for it
    settings = dataclasses.asdict(cfg)
    read = ModelArgs.from_stored(settings, "best.pt")
    assert read.run_settings() == {name: settings[name] for name in RUN_SETTINGS}
    assert (read.image_size, read.clip) == (None, None)


def test_a_record_missing_a_setting_is_one_sentence_naming_its_file():
    stored = dataclasses.asdict(ModelArgs.of_run(RunConfig(), CLIP))
    del stored["tau_fine"], stored["frames"]
    with pytest.raises(UserError, match=r"^run/best\.pt records no tau_fine, frames for its model"):
        ModelArgs.from_stored(stored, "run/best.pt")


def test_the_clip_a_record_names_is_checked_unless_it_names_none():
    recorded = ModelArgs.of_run(RunConfig(), CLIP)
    other = ModelArgs.of_run(RunConfig(), SimpleNamespace(**{**vars(CLIP), "image_size": 48}))
    recorded.check_clip(recorded, "best.pt")
    with pytest.raises(UserError) as caught:
        recorded.check_clip(other, "best.pt")
    assert str(caught.value) == (
        "best.pt was trained over CLIP TinyCLIP-test with weights tiny.pt@0123 (32 px), but "
        "--clip-model/--clip-pretrained load TinyCLIP-test with weights tiny.pt@0123 (48 px); "
        "pass the CLIP files the run was trained with."
    )
    dataclasses.replace(recorded, clip=None).check_clip(other, "best.pt")  # an older record
