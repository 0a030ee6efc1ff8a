"""One declaration per run setting (`trainer/settings.py`): the `run` command's options, the
range checks and the config-file keys all come from it; the model is rebuilt from the record
checkpoints and exports store (and from the settings of files written before records)."""

import dataclasses
import json
import shutil

import pytest
import torch
import typer

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_save
from testkit.list_runs import run_config
from trainer.__main__ import app
from trainer.checkpoints import load_checkpoint
from trainer.config import read_config_file
from trainer.model.args import RUN_SETTINGS
from trainer.run_models import export_run, load_run
from trainer.settings import RunConfig, declared, flag_name
from trainer.training import train

FIELDS = dataclasses.fields(RunConfig)


def command(name: str):
    return typer.main.get_command(app).commands[name]


def test_every_setting_with_a_flag_is_one_run_option_with_its_help_and_no_default():
    options = {opt: p for p in command("run").params for opt in [*p.opts, *p.secondary_opts]}
    for f in FIELDS:
        flag = flag_name(f.name)
        if not declared(f).cli:
            assert flag not in options, f.name
            continue
        option = options[flag]
        assert option.name == f.name and option.default is None  # None: the preset's value
        assert option.help == declared(f).help
        assert [p.name for p in command("run").params].count(f.name) == 1
    own = {"config", "resume", "log_every", "report_to", "as_json"}
    assert {p.name for p in command("run").params} == {
        f.name for f in FIELDS if declared(f).cli
    } | own
    # one option per flag: --lambda, --heads, --clips, --crops and the boolean pairs included
    assert (
        options["--lambda"].name == "lam" and options["--train-backbone"].name == "freeze_backbone"
    )


def test_cache_features_takes_the_shared_settings_by_their_declared_flags():
    params = {p.name: p for p in command("cache-features").params}
    for name in ("dataset", "root", "clip_model", "frames", "eval_clips", "batch_size"):
        assert params[name].opts == [flag_name(name)]
    assert params["dataset"].help == declared(RunConfig.__dataclass_fields__["dataset"]).help


def out_of_range(f: dataclasses.Field):
    """A value outside the range `f` declares, or None where it declares none."""
    meta = declared(f)
    if meta.choices is not None:
        return 2 if isinstance(meta.choices[0], int) else "nope"
    if meta.at_least is not None:
        return meta.at_least - 1
    return 0.0 if meta.positive else None


RANGED = [f for f in FIELDS if out_of_range(f) is not None]


def test_the_ranged_settings_are_those_the_checks_always_covered():
    assert {f.name for f in RANGED} >= {
        "frames", "epochs", "batch_size", "micro_batch", "eval_clips", "eval_crops", "split",
        "temporal_layers", "attention_heads", "workers", "weight_decay", "warmup_epochs",
        "lam", "backbone_lr_scale", "lr", "tau_coarse", "tau_fine", "amp", "aggregation",
        "shots", "eval_every",
    }  # fmt: skip


@pytest.mark.parametrize("f", RANGED, ids=[f.name for f in RANGED])
def test_a_value_out_of_its_declared_range_is_refused_naming_its_flag(f, tmp_path):
    value = out_of_range(f)
    named = flag_name(f.name) if declared(f).cli else f.name
    with pytest.raises(UserError) as refused:
        RunConfig(**{f.name: value})
    assert named in str(refused.value) and "\n" not in str(refused.value)
    RunConfig(**{f.name: f.default})  # the default lies inside it
    # a config file may set it by its field name, and is refused naming the file and key
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({f.name: value}))
    assert read_config_file(path) == {f.name: value}
    from trainer.config import resolve_config

    with pytest.raises(UserError, match=f"^{path}: .*{f.name}"):
        resolve_config(None, {}, path)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """A run whose model differs from the default one in every way the record says."""
    cfg = run_config(
        world,
        tmp_path_factory.mktemp("record") / "run",
        temporal_layers=1,
        aggregation="fine",
        tau_fine=0.05,
        grad_checkpointing=True,
    )
    train(cfg, show_progress=False)
    return cfg


def logits(loaded, clips: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return loaded.built.model(clips, loaded.built.text)["logits"]


def rewrite_checkpoint(run, change) -> None:
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        if path.exists():
            atomic_save(change(load_checkpoint(path, "cpu", "")), path)


def test_a_run_is_rebuilt_from_its_stored_record_and_an_older_one_from_its_settings(
    trained, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(trained.out, run)
    state = load_checkpoint(run / "checkpoints" / "best.pt", "cpu", "")
    record = state["model_args"]
    assert {name: record[name] for name in RUN_SETTINGS} == {
        name: getattr(trained, name) for name in RUN_SETTINGS
    }
    assert record["clip"]["model_id"] and record["image_size"] > 0
    original = load_run(run, device="cpu")
    clips = torch.rand(2, trained.frames, 3, record["image_size"], record["image_size"])
    expected = logits(original, clips)
    # the record alone builds it: settings that disagree with it are not read for the model
    rewrite_checkpoint(
        run, lambda s: {**s, "config": {**s["config"], "temporal_layers": 0, "aggregation": "mean"}}
    )
    (run / "config.json").unlink()
    rebuilt = load_run(run, device="cpu")
    rebuilt.built.model.load_state_dict(state["model"], strict=True)
    assert (rebuilt.cfg.temporal_layers, rebuilt.cfg.aggregation) == (1, "fine")
    assert torch.allclose(logits(rebuilt, clips), expected, atol=1e-6)
    # a checkpoint written before records: the model is derived from its settings
    shutil.rmtree(run)
    shutil.copytree(trained.out, run)
    rewrite_checkpoint(run, lambda s: {k: v for k, v in s.items() if k != "model_args"})
    older = load_run(run, device="cpu")
    assert torch.allclose(logits(older, clips), expected, atol=1e-6)


def test_a_record_is_loaded_only_over_the_clip_it_names(trained, tmp_path):
    """The record's CLIP identity is read back: weights over other CLIP weights are refused."""
    run = tmp_path / "run"
    shutil.copytree(trained.out, run)
    other = {"model_id": "TinyCLIP-test", "pretrained_id": "other.pt@0123456789ab"}
    rewrite_checkpoint(run, lambda s: {**s, "model_args": {**s["model_args"], "clip": other}})
    with pytest.raises(UserError) as caught:
        load_run(run, device="cpu")
    message = str(caught.value)
    assert "was trained over CLIP TinyCLIP-test with weights other.pt@0123456789ab" in message
    assert "pass the CLIP files the run was trained with" in message and "\n" not in message


def test_an_export_records_the_model_and_an_older_export_still_loads(trained, tmp_path):
    folder = export_run(trained.out, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    state = load_checkpoint(trained.out / "checkpoints" / "best.pt", "cpu", "")
    assert config["architecture"] == state["model_args"]
    exported = load_run(folder, device="cpu")
    size = config["architecture"]["image_size"]
    clips = torch.rand(2, trained.frames, 3, size, size)
    expected = logits(load_run(trained.out, device="cpu"), clips)
    assert torch.allclose(logits(exported, clips), expected, atol=1e-6)
    # an export written before records: an architecture block without grad_checkpointing
    # and the CLIP's identity (both defaulted or read elsewhere)
    old = {
        k: v for k, v in config["architecture"].items() if k not in ("grad_checkpointing", "clip")
    }
    (folder / "config.json").write_text(json.dumps({**config, "architecture": old}))
    older = load_run(folder, device="cpu")
    assert older.built.model_args["temporal_layers"] == 1
    assert torch.allclose(logits(older, clips), expected, atol=1e-6)


def test_eval_decode_device_is_its_own_not_the_runs(trained):
    from trainer.evaluation import evaluate_checkpoint

    for value, refusal in (
        ("cuda", r"^--decode-device cuda "),  # no GPU here, and --device cpu
        ("gpu", r"^--decode-device must be cpu or cuda, not 'gpu'\.$"),
    ):
        with pytest.raises(UserError, match=refusal):
            evaluate_checkpoint(trained.out, device="cpu", decode_device=value, show_progress=False)
