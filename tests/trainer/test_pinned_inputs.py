"""A run's inputs pinned by identity: the sub-texts it trained with (a re-score with other
texts is refused by eval, predict, export and --resume unless --subtexts opts in), weights
that are finite on every way a model is loaded, and a config.json edited after the run
began. Runs here are written, not trained: a model built over the tiny CLIP and saved as a
run's checkpoints (loading reads nothing else)."""

import dataclasses
import json
import math
import shutil

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file

from storyboard_common.errors import UserError
from storyboard_common.subtexts import SUBTEXTS_FILE, TPP_FILE, read_subtexts
from testkit.hub import cache_repo
from testkit.list_runs import run_config
from trainer import training
from trainer.checkpoints import check_finite_weights, json_values
from trainer.config import resolved_config
from trainer.distributed import init_distributed
from trainer.evaluation import evaluate_checkpoint
from trainer.paths import RUN_LOCK
from trainer.predict import predict_video
from trainer.resuming import check_resume
from trainer.run_models import build, export_run, load_run


def written_run(world, base, **overrides):
    """A run folder as `trainer run` leaves it after one epoch, over a copy of the world's
    scored artifact (`base`/art, so that tests may score it again): config.json, best.pt
    and last.pt (untrained weights, the layout of 3-clip batches), .run.lock -> its
    RunConfig."""
    shutil.copytree(world["base"] / "art", base / "art")
    subtexts = base / "art" / world["subtexts"].parent.name / SUBTEXTS_FILE
    cfg = resolved_config(run_config(world, base / "run", subtexts=subtexts, **overrides))
    built = build(cfg, init_distributed("cpu"), cfg.subtexts)
    settings = json_values(dataclasses.asdict(cfg))
    state = {
        "model": built.model.state_dict(),
        "config": settings,
        "model_args": built.model_args,
        "subtexts": built.texts,
        "layout": {"micro_batch": 3, "world": 1, "accumulation": 1},
        "epoch": 1,
        "best": {"top1": 1 / 3},
    }
    (cfg.out / "checkpoints").mkdir(parents=True)
    for name in ("best", "last"):
        torch.save(state, cfg.out / "checkpoints" / f"{name}.pt")
    (cfg.out / "config.json").write_text(json.dumps(settings))
    (cfg.out / RUN_LOCK).touch()
    return cfg


def score_again(subtexts, scoring_id, other_texts=True):
    """What `score` run again on `subtexts`' folder leaves: both files with the new
    `scoring_id` and, with `other_texts`, another sub-text set chosen for class 0 (an
    export holds subtexts.parquet alone)."""
    for path in (subtexts, subtexts.with_name(TPP_FILE)):
        if not path.exists():
            continue
        table = pq.read_table(path)
        if other_texts and path.name == SUBTEXTS_FILE:
            texts = table.column("sub_texts").to_pylist()
            texts[0] = [f"{text}, slowly" for text in texts[0]]
            column = table.schema.get_field_index("sub_texts")
            table = table.set_column(column, table.schema.field(column), [texts])
        meta = {**table.schema.metadata, b"storyboard.scoring_id": scoring_id.encode()}
        pq.write_table(table.replace_schema_metadata(meta), path)


def snapshot(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture()
def run(world, tmp_path):
    return written_run(world, tmp_path)


def test_a_run_records_the_texts_it_trained_with_and_a_same_text_rescore_is_the_same(run):
    trained = read_subtexts(run.subtexts).identity
    assert len(trained["scoring_id"]) == 32 and len(trained["texts_sha256"]) == 64
    assert load_run(run.out, device="cpu").built.texts == trained
    score_again(run.subtexts, "f" * 32, other_texts=False)  # the same texts chosen again
    again = load_run(run.out, device="cpu").built.texts
    assert again == {**trained, "scoring_id": "f" * 32}


def test_texts_scored_again_are_refused_by_eval_predict_export_and_resume(world, run, tmp_path):
    old = read_subtexts(run.subtexts).meta.scoring_id
    score_again(run.subtexts, "e" * 32)
    before = snapshot(run.out)
    refusal = (
        f"{run.subtexts} holds other sub-texts than the run {run.out} was trained with "
        f"(scored as {old} then, as {'e' * 32} now: it was scored again); pass --subtexts "
        f"{run.subtexts} to use these instead."
    )
    video = world["root"] / "clips" / "c2_3.mp4"
    for load in (
        lambda: evaluate_checkpoint(run.out, device="cpu", workers=0, show_progress=False),
        lambda: predict_video(run.out, video, device="cpu"),
        lambda: export_run(run.out, tmp_path / "export"),
        lambda: load_run(run.out, device="cpu", checkpoint="last"),
    ):
        with pytest.raises(UserError) as refused:
            load()
        assert str(refused.value) == refusal
    assert not (tmp_path / "export").exists()
    with pytest.raises(UserError) as refused:
        training.train(run, resume=True, show_progress=False)
    assert str(refused.value) == (
        f"{run.subtexts} holds other sub-texts than the run in {run.out} was trained with "
        f"(scored as {old} then, as {'e' * 32} now: it was scored again); put that artifact "
        "back to resume, or start a new run with another --out."
    )
    assert snapshot(run.out) == before  # nothing written

    # --subtexts opts in: the texts given are used, and an export records them.
    result = evaluate_checkpoint(
        run.out, subtexts=run.subtexts, device="cpu", workers=0, show_progress=False
    )
    assert result["n"] == 3
    export_run(run.out, tmp_path / "export", subtexts=run.subtexts)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["subtexts"]["scoring_id"] == "e" * 32
    assert load_run(tmp_path / "export", device="cpu").class_names == world_classes(world)


def world_classes(world):
    return read_subtexts(world["subtexts"]).class_names


def test_an_export_s_texts_replaced_are_refused_and_older_records_still_load(world, run, tmp_path):
    export = export_run(run.out, tmp_path / "export")
    old = json.loads((export / "config.json").read_text())["subtexts"]["scoring_id"]
    score_again(export / SUBTEXTS_FILE, "d" * 32)
    with pytest.raises(UserError) as refused:
        load_run(export, device="cpu")
    assert str(refused.value) == (
        f"{export / SUBTEXTS_FILE} holds other sub-texts than {export} was trained with "
        f"(scored as {old} then, as {'d' * 32} now: it was scored again); pass --subtexts "
        f"{export / SUBTEXTS_FILE} to use these instead, or download or export it again."
    )
    # Runs and exports from before texts were recorded load as they did.
    config = json.loads((export / "config.json").read_text())
    for key in ("scoring_id", "texts_sha256"):
        del config["subtexts"][key]
    (export / "config.json").write_text(json.dumps(config))
    assert load_run(export, device="cpu").built.texts["scoring_id"] == "d" * 32
    score_again(run.subtexts, "c" * 32)
    for name in ("best", "last"):
        path = run.out / "checkpoints" / f"{name}.pt"
        state = torch.load(path, weights_only=True)
        del state["subtexts"]
        torch.save(state, path)
    assert load_run(run.out, device="cpu").built.texts["scoring_id"] == "c" * 32


def test_non_finite_weights_are_refused_by_every_way_a_model_is_loaded(
    world, run, tmp_path, hub_env
):
    """A NaN in a run's checkpoint (eval, predict, export, --resume), an exported folder's
    model.safetensors (eval: it reported a top-1) and the same folder from the Hub."""
    export = export_run(run.out, tmp_path / "export")
    weights = load_file(export / "model.safetensors")
    weights["head.logit_scale"] = torch.tensor(math.nan)
    save_file(weights, export / "model.safetensors")
    for name in ("best", "last"):
        path = run.out / "checkpoints" / f"{name}.pt"
        state = torch.load(path, weights_only=True)
        state["model"]["head.logit_scale"] = torch.tensor(math.nan)
        torch.save(state, path)
    best, last = (run.out / "checkpoints" / f"{n}.pt" for n in ("best", "last"))

    def refusal(path, more, hint):
        return (
            f"{path} holds weights that are not finite (NaN or infinity) in "
            f"head.logit_scale{more}, the mark of a diverged run or a damaged file: it is "
            f"refused; {hint}."
        )

    trained_again = refusal(best, "", "train the run again (with a lower --lr)")
    video = world["root"] / "clips" / "c2_3.mp4"
    cache = hub_env("http://127.0.0.1:9", offline=True)
    cache_repo(cache, "storyboard/nan", export)
    for load, expected in (
        (lambda: evaluate_checkpoint(run.out, device="cpu", show_progress=False), trained_again),
        (lambda: predict_video(run.out, video, device="cpu"), trained_again),
        (lambda: export_run(run.out, tmp_path / "again"), trained_again),
        (
            lambda: evaluate_checkpoint(export, root=world["root"], show_progress=False),
            refusal(f"{export}/model.safetensors", "", "download or export the model again"),
        ),
        (
            lambda: load_run("hf-hub:storyboard/nan", device="cpu"),
            refusal(
                "hf-hub:storyboard/nan/model.safetensors", "", "download or export the model again"
            ),
        ),
        (
            lambda: training.train(run, resume=True, show_progress=False),
            refusal(
                last,
                "",
                "copy best.pt over it to resume from the best epoch, or start over with "
                "another --out",
            ),
        ),
    ):
        with pytest.raises(UserError) as refused:
            load()
        assert str(refused.value) == expected
    assert not (tmp_path / "again").exists()


def test_the_finite_check_names_the_first_tensor_and_counts_the_others():
    weights = {
        "a": torch.zeros(2),
        "b": torch.tensor([0.0, -math.inf]),
        "steps": torch.tensor(3),  # whole numbers are finite
        "c": torch.tensor([math.nan]),
    }
    with pytest.raises(UserError, match=r"^f.pt holds weights .* in b and 1 more tensor\(s\), "):
        check_finite_weights(weights, "f.pt", "hint")
    check_finite_weights({"a": torch.ones(3), "steps": torch.tensor(3)}, "f.pt", "hint")


def test_resume_trusts_the_checkpoint_and_refuses_an_edited_config_json(run):
    """config.json edited after the run began (--lr 0.002 -> 0.5): every message states
    the values the run was trained with, whichever flags the resume is given."""
    state = torch.load(run.out / "checkpoints" / "last.pt", weights_only=True)
    config_json = run.out / "config.json"
    original = config_json.read_text()
    edited = {**json.loads(original), "lr": 0.5, "seed": 7, "workers": 3}
    config_json.write_text(json.dumps(edited))
    for given in (run, dataclasses.replace(run, lr=0.5, seed=7)):  # its flags, or the file's
        with pytest.raises(UserError) as refused:
            check_resume(given, run.out, state)
        assert str(refused.value) == (
            f"--resume: {config_json} was edited since the run began: it says --lr 0.5, "
            f"--seed 7, but the run was trained with --lr 0.002, --seed 1 (its checkpoint "
            f"{run.out / 'checkpoints' / 'last.pt'} records it); restore config.json, or "
            "delete it to resume with the settings its checkpoint holds."
        )
    # A setting a resume may change (--workers) is no edit to refuse.
    config_json.write_text(json.dumps({**json.loads(original), "workers": 3}))
    assert check_resume(run, run.out, state)["workers"] == 3
    config_json.unlink()  # the checkpoint's record is what the run was trained with
    with pytest.raises(UserError) as refused:
        check_resume(dataclasses.replace(run, lr=0.5), run.out, state)
    assert str(refused.value).startswith(
        f"--resume: {run.out} was trained with other settings (--lr 0.002 -> 0.5)"
    )
    assert check_resume(run, run.out, state) == json.loads(original)


def test_predict_never_prints_non_finite_probabilities(world, run, monkeypatch):
    """Finite weights whose logits overflow (as fp16 may): one sentence, not a result."""
    from trainer import predict

    def overflowing(*args, **kwargs):
        loaded = load_run(*args, **kwargs)
        loaded.built.model.register_forward_hook(
            lambda _module, _inputs, out: {**out, "logits": out["logits"] * math.inf}
        )
        return loaded

    monkeypatch.setattr(predict, "load_run", overflowing)
    video = world["root"] / "clips" / "c2_3.mp4"
    with pytest.raises(UserError) as refused:
        predict_video(run.out, video, device="cpu")
    assert str(refused.value) == (
        f"{run.out / 'checkpoints' / 'best.pt'} gives probabilities that are not finite for "
        f"{video}: its logits overflow (its weights are finite); train it again with a lower --lr."
    )
