"""`trainer run --config FILE`: settings from YAML or JSON under the flags, a run's own
config.json replaying it, and the presets as shipped config files."""

import dataclasses
import json
from pathlib import Path

import pytest

from storyboard_common.errors import UserError
from testkit.cli import TINY_CLIP_CONFIG, lines, run_app
from testkit.list_runs import run_args
from trainer.__main__ import app
from trainer.config import preset_files, read_config_file, resolve_config
from trainer.settings import RunConfig

# The presets as the Python dict PRESETS held them before they became files, and the
# micro-batch and gradient checkpointing each was sized for since: what each file holds.
FORMER_PRESETS = {
    "k400": dict(
        dataset="k400",
        frames=8,
        epochs=30,
        batch_size=256,
        lr=5e-5,
        warmup_epochs=5,
        eval_clips=4,
        eval_crops=3,
        temporal_layers=6,
        micro_batch=32,
        grad_checkpointing=True,
    ),
    **{
        f"{dataset}-2shot": dict(
            dataset=dataset,
            shots=2,
            frames=8,
            epochs=20,
            batch_size=32,
            lr=5e-5,
            warmup_epochs=5,
            eval_clips=1,
            eval_crops=1,
            grad_checkpointing=True,
        )
        for dataset in ("hmdb51", "ucf101", "k400")
    },
    "charades": dict(
        dataset="charades",
        frames=16,
        epochs=20,
        batch_size=256,
        lr=5e-5,
        warmup_epochs=5,
        eval_clips=1,
        eval_crops=1,
        charades_instances=True,
        micro_batch=32,
        grad_checkpointing=True,
    ),
}


def test_every_shipped_preset_holds_its_former_values():
    assert sorted(preset_files()) == sorted(FORMER_PRESETS)
    for name, values in FORMER_PRESETS.items():
        held = read_config_file(preset_files()[name])
        assert held == values, name
        assert resolve_config(name, {}) == RunConfig(preset=name, **values)
        text = preset_files()[name].read_text()
        assert "# Sized for " in text and " GB " in text  # the GPU memory it was sized for


def test_presets_command_names_each_file():
    code, output, _ = run_app(app, "presets")
    assert code == 0
    listed = dict(line.split(": ", 1) for line in output.splitlines())
    assert listed == {name: str(path) for name, path in preset_files().items()}
    assert all(path.endswith(f"/trainer/configs/{name}.yaml") for name, path in listed.items())


def write(path, text):
    path.write_text(text)
    return path


def test_preset_then_file_then_flags(tmp_path):
    yaml_file = write(
        tmp_path / "run.yaml",
        "# a user's file\ndataset: ucf101\nsplit: 2\nlr: 5e-5\nepochs: 3\nroot: data/x\n",
    )
    cfg = resolve_config(None, {"epochs": 7, "seed": None}, yaml_file)
    assert (cfg.dataset, cfg.split, cfg.epochs, cfg.frames) == ("ucf101", "2", 7, 8)
    assert cfg.lr == 5e-5 and isinstance(cfg.lr, float)  # YAML 1.1 would read text
    assert cfg.root == Path("data/x")  # from the working directory, as a flag's

    # --preset under the file, the file under the flags
    cfg = resolve_config("hmdb51-2shot", {"shots": 4}, yaml_file)
    assert (cfg.preset, cfg.dataset, cfg.shots, cfg.epochs, cfg.batch_size) == (
        "hmdb51-2shot",
        "ucf101",
        4,
        3,
        32,
    )
    # a file's own `preset:` starts it; --preset replaces it
    based = write(tmp_path / "based.json", json.dumps({"preset": "k400", "epochs": 2}))
    cfg = resolve_config(None, {}, based)
    assert (cfg.preset, cfg.temporal_layers, cfg.eval_clips, cfg.epochs) == ("k400", 6, 4, 2)
    cfg = resolve_config("charades", {}, based)
    assert (cfg.preset, cfg.temporal_layers, cfg.frames, cfg.epochs) == ("charades", 0, 16, 2)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("a.yaml", "heads: 2\n", "{f}: unknown key 'heads' (did you mean 'attention_heads'?)."),
        ("a.yaml", "epoch: 2\n", "{f}: unknown key 'epoch' (did you mean 'epochs'?)."),
        ("a.yaml", "epochs: ten\n", "{f}: epochs must be a whole number, not 'ten'."),
        ("a.json", '{"frames": 8.0}', "{f}: frames must be a whole number, not 8.0."),
        ("a.yaml", "shots: yes\n", "{f}: shots must be a whole number or null, not True."),
        ("a.yaml", "lr: fast\n", "{f}: lr must be a number, not 'fast'."),
        ("a.yaml", "root: 3\n", "{f}: root must be a path or null, not 3."),
        ("a.yaml", "epochs: 0\n", "{f}: epochs must be from 1 to 10000, not 0."),
        ("a.yaml", "tau_fine: 0\n", "{f}: tau_fine must be a positive number at most 100, not 0."),
        ("a.yaml", "attention_heads: 0\n", "{f}: attention_heads must be from 1 to 64, not 0."),
        ("a.yaml", "backbone_lr_scale: -1\n", "{f}: backbone_lr_scale must be from 0 to 1, not"),
        ("a.yaml", "aggregation: max\n", "{f}: unknown aggregation 'max'; choose one of"),
        ("a.yaml", "preset: k700\n", "{f}: unknown preset 'k700'; known: charades,"),
        ("a.yaml", "- epochs\n", "--config {f} holds a list, not settings (key: value)."),
        ("a.yaml", "epochs: [1\n", "--config {f} is not valid YAML ("),
        ("a.json", '{"epochs": 1,}', "--config {f} is not valid JSON ("),
        ("a.toml", "epochs = 1\n", "--config {f} is neither YAML (.yaml, .yml) nor JSON"),
    ],
)
def test_a_mistake_in_a_config_file_is_one_sentence_naming_the_file_and_key(
    tmp_path, name, text, message
):
    path = write(tmp_path / name, text)
    with pytest.raises(UserError) as refused:
        resolve_config(None, {}, path)
    assert str(refused.value).startswith(message.format(f=path)), refused.value
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "name, text, shown",
    [
        ("a.yaml", "lr: 0.1\nseed: 2\nlr: 0.5\n", "'lr' twice (lines 1 and 3)"),
        ("a.yml", "# mine\nepochs: 2\n\n'epochs': 3\n", "'epochs' twice (lines 2 and 4)"),
        ("a.yaml", "{frames: 8, seed: 1, frames: 16}\n", "'frames' twice (both on line 1)"),
        ("a.yaml", "extra:\n  a: 1\n  a: 2\n", "'a' twice (lines 2 and 3)"),
        ("a.json", '{\n  "lr": 0.1,\n  "seed": 2,\n  "lr": 0.5\n}', "'lr' twice (lines 2 and 4)"),
        ("a.json", '{"seed": {"x": 1}, "s\\u0065ed": 2}', "'seed' twice (both on line 1)"),
        ("a.json", '{"extra": {"a": 1,\n "a": 2}}', "'a' twice"),
    ],
)
def test_a_key_given_twice_is_refused_naming_it_and_its_lines(tmp_path, name, text, shown):
    """YAML and JSON keep the last value of a key given twice, silently; a config file's
    is refused (in nested mappings too), naming the key and, where known, both lines."""
    path = write(tmp_path / name, text)
    with pytest.raises(UserError) as refused:
        read_config_file(path)
    assert str(refused.value) == f"--config {path} gives the key {shown}; keep the one you mean."


def test_yaml_merge_keys_still_override(tmp_path):
    path = write(tmp_path / "a.yaml", "<<: {lr: 0.1, seed: 2}\nlr: 0.5\n")
    assert read_config_file(path) == {"lr": 0.5, "seed": 2}


def test_a_flag_may_mend_the_file_and_its_own_mistakes_name_the_flag(tmp_path):
    path = write(tmp_path / "a.yaml", "epochs: 0\nfeatures: cache\n")
    cfg = resolve_config(None, {"epochs": 2, "freeze_backbone": True}, path)
    assert (cfg.epochs, cfg.freeze_backbone) == (2, True)
    with pytest.raises(UserError, match=r"^--frames must be from 1 to 512, not 0\.$"):
        resolve_config(None, {"frames": 0, "epochs": 2, "freeze_backbone": True}, path)
    missing = tmp_path / "none.yaml"
    _, _, error = run_app(app, "run", "--config", missing)  # a UserError: exit status 2
    assert str(error).startswith(f"--config {missing} cannot be read (")


@pytest.fixture(scope="module")
def original(world, tmp_path_factory):
    """A 1-epoch run on the tiny list world, trained in this process."""
    out = tmp_path_factory.mktemp("original") / "run"
    code, output, error = run_app(app, *run_args(world, out, epochs=1)[3:], "--json")
    assert code == 0 and error is None, output
    return out


def without_times(path):
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines(path)]


@pytest.mark.slow  # three tiny runs, about 13 s
def test_a_run_s_config_json_replays_it_to_the_same_metrics(original, tmp_path):
    recorded = original / "config.json"
    before = {p.name: p.read_bytes() for p in original.rglob("*") if p.is_file()}
    _, _, error = run_app(app, "run", "--config", recorded, "--json")
    assert str(error) == (
        f"{recorded} records the run in {original}: pass --out DIR to replay it into a new "
        "folder, or --resume to continue that run."
    )
    replay = tmp_path / "replay"
    code, output, error = run_app(app, "run", "--config", recorded, "--out", replay, "--json")
    assert code == 0 and error is None, output
    assert without_times(replay / "metrics.jsonl") == without_times(original / "metrics.jsonl")
    settings = json.loads(recorded.read_text())
    assert json.loads((replay / "config.json").read_text()) == {**settings, "out": str(replay)}
    assert {p.name: p.read_bytes() for p in original.rglob("*") if p.is_file()} == before

    varied = tmp_path / "varied"
    code, output, error = run_app(
        app, "run", "--config", recorded, "--out", varied, "--lr", "0.02", "--json"
    )
    assert code == 0 and error is None, output
    assert json.loads((varied / "config.json").read_text()) == {
        **settings,
        "out": str(varied),
        "lr": 0.02,
    }
    loss = [x["train_loss"] for x in lines(varied / "metrics.jsonl") if "train_loss" in x]
    assert loss != [x["train_loss"] for x in lines(original / "metrics.jsonl") if "train_loss" in x]


def test_an_older_run_s_config_json_with_retired_settings_still_reads(world, tmp_path):
    """Older runs recorded `extra` and `fewshot_epoch_len`, settings no flag ever set: their
    config.json still replays (`--config`), resumes and loads (`from_saved`) as the same
    settings; another value of them is refused as an unknown key."""
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
            epochs=3,
            out=tmp_path / "run",
        )
    )
    settings = json_values(dataclasses.asdict(cfg))
    older = {**settings, "extra": {}, "fewshot_epoch_len": None}
    cfg.out.mkdir()
    recorded = cfg.out / "config.json"
    recorded.write_text(json.dumps(older))
    assert "extra" not in settings and "fewshot_epoch_len" not in settings
    assert resolve_config(None, {}, recorded, resume=True) == cfg
    assert RunConfig.from_saved(older) == cfg
    # config.json kept as the run recorded it
    assert check_resume(cfg, cfg.out, {"config": older}) == older
    used = write(tmp_path / "a.yaml", "fewshot_epoch_len: 100\n")
    with pytest.raises(UserError, match=f"^{used}: unknown key 'fewshot_epoch_len'"):
        resolve_config(None, {}, used)


def test_a_run_s_defaults_are_resolved_in_one_place(tmp_path, monkeypatch):
    """`resolved_config` fills the dataset root ($STORYBOARD_DATA), the sub-text artifact
    (where `subtext_gen score` writes it for the run's CLIP: artifacts/<dataset>/<model>__
    <weights>) and the run folder (runs/, from here), all absolute; a resolved config
    resolves to itself, and given values are kept."""
    from trainer.config import resolved_config

    (tmp_path / "data" / "hmdb51").mkdir(parents=True)
    monkeypatch.setenv("STORYBOARD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("STORYBOARD_ARTIFACTS", str(tmp_path / "art"))
    monkeypatch.chdir(tmp_path)
    cfg = resolved_config(RunConfig(dataset="hmdb51", shots=2, split="1"))
    assert cfg.root == tmp_path / "data" / "hmdb51"
    assert cfg.subtexts == tmp_path / "art" / "hmdb51" / "ViT-B-16__openai" / "subtexts.parquet"
    assert cfg.out == tmp_path / "runs" / "hmdb51-2shot-split1-coarse+fine-seed0"
    assert resolved_config(cfg) == cfg
    given = RunConfig(dataset="hmdb51", root=Path("r"), subtexts=Path("s.parquet"), out=Path("o"))
    resolved = resolved_config(given)
    assert (resolved.root, resolved.subtexts, resolved.out) == (
        tmp_path / "r",
        tmp_path / "s.parquet",
        tmp_path / "o",
    )
