"""The CLI end to end in subprocesses: exit codes, one-sentence errors, the file backend."""

import os
import subprocess
import sys

import pandas as pd

from .conftest import REPO, TINY_CLIP_CONFIG


def cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "subtext_gen", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_generate_score_show_with_the_file_backend(tmp_path):
    out = tmp_path / "demo"
    demo = "subtext_gen/data/demo"
    generate = ("generate", "--llm", "file", "--classes", f"{demo}/classes.csv", "--input")
    generate += (f"{demo}/candidates.json", "--out", str(out), "--no-progress")
    done = cli(*generate)
    assert done.returncode == 0, done.stderr
    assert "18 ok, 0 failed, 0 already done" in done.stdout
    again = cli(*generate)
    assert "0 ok, 0 failed, 18 already done" in again.stdout  # resumable: nothing redone
    scored = cli(
        "score",
        "--tpp",
        "--artifacts",
        str(out),
        "--clip-model",
        str(TINY_CLIP_CONFIG),
        "--clip-pretrained",
        "none",
        "--device",
        "cpu",
    )
    assert scored.returncode == 0, scored.stderr
    df = pd.read_parquet(out / "TinyCLIP-test__none" / "subtexts.parquet")
    assert df.class_name.tolist() == [
        "brush_hair",
        "cartwheel",
        "climb_stairs",
        "dribble",
        "pour",
        "pullup",
    ]
    shown = cli("show", "--artifacts", str(out))
    assert shown.returncode == 0 and "brush_hair" in shown.stdout and "runner-up" in shown.stdout


def test_user_errors_exit_2_with_one_sentence(tmp_path):
    cases = [
        (("generate", "--llm", "openai", "--dataset", "hmdb51"), "OPENAI_API_KEY is not set"),
        (("generate", "--llm", "file", "--dataset", "hmdb51"), "--llm file needs --input"),
        (
            ("generate", "--dataset", "nope", "--llm", "file", "--input", "x.json"),
            "no class list ships for --dataset 'nope'",
        ),
        (
            ("generate", "--llm", "openai", "--dataset", "hmdb51", "--prompts", "storyboard,zzz"),
            "unknown --prompts id(s) zzz",
        ),
        (("score", "--artifacts", str(tmp_path)), "no candidates in"),
        (("score", "--artifacts", str(tmp_path), "--alpha", "cube"), "unknown --alpha 'cube'"),
        (
            (
                "generate",
                "--llm",
                "llava",
                "--model",
                str(tmp_path / "none"),
                "--dataset",
                "hmdb51",
            ),
            "LLaVA model directory",
        ),
    ]
    for args, message in cases:
        done = cli(*args, env={"OPENAI_API_KEY": ""})
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, done.stderr)
