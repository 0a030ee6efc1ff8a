"""The warnings a user needs before a run or a scoring goes its silent way: a warm-up longer
than the run, and TPP from a randomly initialised text tower."""

import shutil
import warnings

from subtext_gen.__main__ import app as subtext_app
from testkit.cli import TINY_CLIP_CONFIG, run_app
from trainer.__main__ import app as trainer_app


def _warned(app, *args):
    """Run a CLI in this process -> (its result as `run_app` gives it, the warnings' texts)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = run_app(app, *args)
    return done, [str(w.message) for w in caught]


def test_a_warm_up_longer_than_the_run_is_one_line_naming_both_flags(tmp_path):
    """Said when the run starts, before its data are read (here they are absent: the run
    stops right after)."""
    args = ("run", "--dataset", "list", "--root", tmp_path / "absent", "--device", "cpu")
    args += ("--clip-model", TINY_CLIP_CONFIG, "--clip-pretrained", "none", "--lr", "1e-3")
    for epochs, warmup, expected in (("2", "5", 1), ("5", "5", 0), ("20", "5", 0)):
        out = tmp_path / f"run-{epochs}"
        (_, _, error), said = _warned(
            trainer_app, *args, "--epochs", epochs, "--warmup-epochs", warmup, "--out", out
        )
        assert "--root folder not found" in str(error)
        about = [m for m in said if "--warmup-epochs" in m]
        assert len(about) == expected, said
    said = _warned(trainer_app, *args, "--epochs", "2", "--out", out)[1]  # the default: 5
    (message,) = [m for m in said if "--warmup-epochs" in m]
    assert "\n" not in message
    assert message.startswith("--warmup-epochs 5 is more than --epochs 2: the learning rate")
    assert "ends at about 40% of --lr 0.001, never reaching its peak" in message  # 2/5 of it
    assert "set --warmup-epochs below --epochs" in message


def test_tpp_from_a_random_text_tower_is_one_line_and_pretrained_weights_are_quiet(world, tmp_path):
    artifacts = tmp_path / "art"
    artifacts.mkdir()
    shutil.copy(world["base"] / "art" / "candidates.parquet", artifacts)
    args = ("score", "--tpp", "--artifacts", artifacts, "--device", "cpu")
    args += ("--clip-model", TINY_CLIP_CONFIG)
    (code, _, _), said = _warned(subtext_app, *args, "--clip-pretrained", "none")
    assert code == 0 and (artifacts / "TinyCLIP-test__none" / "subtexts.parquet").is_file()
    (message,) = [m for m in said if "TPP" in m]
    assert "\n" not in message
    assert message.startswith("--clip-pretrained none: CLIP TinyCLIP-test's text tower is ")
    assert "ranks the sub-text sets by a random tower's geometry" in message
    (code, _, _), said = _warned(subtext_app, *args, "--clip-pretrained", world["ckpt"])
    assert code == 0 and not [m for m in said if "TPP" in m]
