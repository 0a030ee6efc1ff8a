"""Every numeric flag of both stages (and the storyboard world's CLI) is bounded by what it
means, and an absurd value is one sentence naming the flag, the value and the range, with
nothing written: the CLIs driven in this process over a table of absurd values per flag.
`test_every_numeric_option_is_in_the_table` keeps the table complete as options are added."""

import dataclasses
import math
import re

import pytest
import typer

from storyworld.__main__ import app as world_app
from subtext_gen.__main__ import app as subtext_app
from testkit.cli import run_app
from trainer.__main__ import app as trainer_app
from trainer.config import resolve_config
from trainer.settings import RunConfig, declared, field_type

APPS = {"trainer": trainer_app, "subtext_gen": subtext_app, "storyworld": world_app}
HUGE = "100000000000000000000"  # 1e20 as an integer: parsed, then refused by its bound


def required(command: str, tmp):
    """The arguments each command needs besides the flag tried, every output in `tmp`."""
    absent = tmp / "absent"
    return {
        "check-data": ("--dataset", "hmdb51", "--root", absent),
        "prepare-videos": ("--dataset", "hmdb51", "--root", absent, "--out", tmp / "copy"),
        "run": ("--dataset", "hmdb51", "--root", absent, "--out", tmp / "run"),
        "cache-features": ("--dataset", "hmdb51", "--root", absent, "--out", tmp / "cache"),
        "eval": ("--checkpoint", tmp / "no-run"),
        "predict": (tmp / "clip.mp4", "--checkpoint", tmp / "no-run"),
        "generate": ("--dataset", "hmdb51", "--out", tmp / "art"),
        "score": ("--artifacts", tmp / "art"),
        "pretrain-clip": ("--world", tmp / "world", "--out", tmp / "world-clip.pt"),
        "demo": ("--out", tmp / "demo"),
        "study": ("--work", tmp / "work", "--out", tmp / "study"),
    }[command]


# (CLI, command, flag, its range as the refusal states it, absurd values beside HUGE):
# the bounds written out by hand, not read from the declarations they check.
SETTINGS_OF_A_RUN = [
    ("--shots", "from 1 to 1000000", ["0"]),
    ("--frames", "from 1 to 512", ["0", "513"]),
    ("--clips", "from 1 to 1000", ["0", "1001"]),
    ("--temporal-layers", "from 0 to 48", ["-1", "49"]),
    ("--heads", "from 1 to 64", ["0", "65"]),
    ("--tau-coarse", "a positive number at most 100", ["0", "-1", "101", "1e30"]),
    ("--tau-fine", "a positive number at most 100", ["0", "1e300"]),
    ("--epochs", "from 1 to 10000", ["0", "10001"]),
    ("--batch-size", "from 1 to 65536", ["0", "65537"]),
    ("--micro-batch", "from 1 to 65536", ["0", "65537"]),
    ("--lr", "a positive number at most 1", ["0", "-0.1", "1.5", "1e20"]),
    ("--weight-decay", "from 0 to 10", ["-1", "11"]),
    ("--warmup-epochs", "from 0 to 10000", ["-1", "1e20"]),
    ("--lambda", "from 0 to 1000", ["-1", "1e6"]),
    ("--seed", "from 0 to 4294967295", ["-1", "4294967296"]),
    ("--dist-timeout", "a positive number of minutes at most 10080", ["0", "1e30"]),
    ("--eval-every", "from 1 to 10000", ["0", "10001"]),
    ("--workers", "from 0 to 256", ["-1", "257"]),
    ("--prefetch", "from 1 to 64", ["0", "65"]),
]
CACHE_SETTINGS = ("--frames", "--clips", "--seed", "--batch-size", "--workers", "--prefetch")
TABLE = [
    *[("trainer", "run", flag, bound, values) for flag, bound, values in SETTINGS_OF_A_RUN],
    ("trainer", "run", "--log-every", "from 0 to 1000000", ["-1", "1000001"]),
    *[
        ("trainer", "cache-features", flag, bound, values)
        for flag, bound, values in SETTINGS_OF_A_RUN
        if flag in CACHE_SETTINGS + ("--dist-timeout",)
    ],
    ("trainer", "cache-features", "--views", "from 1 to 1000", ["0", "1001"]),
    ("trainer", "check-data", "--frames", "from 1 to 512", ["0", "513"]),
    ("trainer", "check-data", "--workers", "from 1 to 256", ["0", "257"]),
    ("trainer", "check-data", "--allow-missing", "from 0 to 1000000", ["-1", "1000001"]),
    ("trainer", "prepare-videos", "--short-side", "from 96 to 4096", ["95", "4097"]),
    ("trainer", "prepare-videos", "--keyframe-every", "from 1 to 1000", ["0", "1001"]),
    ("trainer", "prepare-videos", "--workers", "from 1 to 256", ["0", "257"]),
    ("trainer", "eval", "--workers", "from 0 to 256", ["-1", "257"]),
    ("trainer", "predict", "--top", "from 1 to 1000", ["0", "1001"]),
    ("subtext_gen", "generate", "--samples", "from 1 to 1000", ["0", "1001"]),
    ("subtext_gen", "generate", "--n-subtexts", "from 1 to 100", ["0", "101"]),
    ("subtext_gen", "generate", "--concurrency", "from 1 to 256", ["0", "257"]),
    ("subtext_gen", "generate", "--max-retries", "from 0 to 100", ["-1", "101"]),
    (
        "subtext_gen",
        "generate",
        "--timeout",
        "a positive number of seconds at most 3600",
        ["0", "-1", "3601", "1e30"],
    ),
    ("subtext_gen", "generate", "--temperature", "from 0 to 2", ["-0.1", "2.5", "1e20"]),
    ("subtext_gen", "generate", "--batch-size", "from 1 to 65536", ["0", "65537"]),
    ("subtext_gen", "generate", "--seed", "from 0 to 4294967295", ["-1", "4294967296"]),
    ("subtext_gen", "score", "--batch-size", "from 1 to 65536", ["0", "65537"]),
    ("storyworld", "pretrain-clip", "--epochs", "from 1 to 10000", ["0", "10001"]),
    ("storyworld", "pretrain-clip", "--batch-size", "from 1 to 65536", ["0", "65537"]),
    ("storyworld", "pretrain-clip", "--seed", "from 0 to 4294967295", ["-1", "4294967296"]),
    ("storyworld", "demo", "--seed", "from 0 to 4294967295", ["-1", "4294967296"]),
    ("storyworld", "study", "--seeds", "from 0 to 4294967295", ["0,-1", f"1,{HUGE}"]),
]


def numeric_options(app):
    """(command, flag, int or float) of every numeric option of a typer app's commands."""
    group = typer.main.get_command(app)
    return {
        (name, param.opts[0], param.type_descriptor.annotation)
        for name, command in group.commands.items()
        if not command.hidden
        for param in command.params
        if param.type_descriptor.annotation in (int, float)
    }


def test_every_numeric_option_is_in_the_table():
    tried = {(cli, command, flag) for cli, command, flag, _, _ in TABLE}
    for cli, app in APPS.items():
        for command, flag, _ in numeric_options(app):
            if flag == "--crops":  # a choice, 1 or 3: refused as such
                continue
            assert (cli, command, flag) in tried, f"{cli} {command} {flag} has no row"


def written(tmp_path) -> list:
    return sorted(p for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("cli, command, flag, bound, values", TABLE, ids=lambda v: str(v))
def test_an_absurd_value_is_one_sentence_naming_flag_value_and_range(
    tmp_path, monkeypatch, cli, command, flag, bound, values
):
    """Refused before anything is written: no output folder, no meta file, nothing in the
    working folder (where default outputs would go)."""
    monkeypatch.chdir(tmp_path)
    for value in [*values, HUGE] if flag != "--seeds" else values:
        _, output, error = run_app(APPS[cli], command, *required(command, tmp_path), flag, value)
        assert error is not None, (flag, value, output)
        message = str(error)
        head = f"{flag} must be {bound}, not "
        assert message.startswith(head) and "\n" not in message, message
        shown = re.match(r"(\S+?)[.:]?(\s|$)", message.removeprefix(head)).group(1)
        assert float(shown) == float(value.split(",")[-1]), message  # 1e+30 for 1e30
        assert written(tmp_path) == [], (flag, value)


@pytest.mark.parametrize("cli", sorted(APPS))
def test_a_fraction_or_nan_where_a_number_is_meant_is_a_parser_sentence(tmp_path, cli):
    """`1e20` or `2.5` typed for a whole number, `nan` and `inf` for a bounded float: one
    sentence naming the flag (the parser's, or the bound's: NaN lies in no range)."""
    for command, flag, kind in sorted(numeric_options(APPS[cli]), key=str):
        args = required(command, tmp_path) if command != "study" else ("--seeds", "0")
        for value in ("1e20", "2.5") if kind is int else ("nan", "inf"):
            code, output, error = run_app(APPS[cli], command, *args, flag, value)
            if error is not None:
                assert str(error).startswith(f"{flag} must be ") and value in str(error)
            else:  # the parser's usage error: status 2, the flag named
                assert code == 2 and f"'{flag}'" in output, (command, flag, value, output)
    assert written(tmp_path) == []


def test_every_numeric_setting_has_an_upper_bound_in_config_files_too(tmp_path):
    """Each int or float setting of a run declares `at_most` (or choices), and a config file
    holding ten times it is refused naming the file and the key."""
    for f in dataclasses.fields(RunConfig):
        meta = declared(f)
        if field_type(f)[0] not in (int, float) or meta.choices:
            continue
        assert meta.at_most is not None and math.isfinite(meta.at_most), f.name
        path = tmp_path / f"{f.name}.yaml"
        too_big = meta.at_most * 10 + 1
        value = int(too_big) if field_type(f)[0] is int else too_big
        path.write_text(f"{f.name}: {value}\n")
        with pytest.raises(Exception) as refused:
            resolve_config(None, {}, path)
        assert str(refused.value).startswith(f"{path}: {f.name} must be "), refused.value
        assert f"not {value}." in str(refused.value) or "not " in str(refused.value)
