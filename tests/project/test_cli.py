"""The CLI end to end in subprocesses: exit codes, one-sentence errors, the file backend."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from testkit.cli import REPO, TINY_CLIP_CONFIG, subtext_cli

TINY_SCORE = ("score", "--tpp", "--clip-model", str(TINY_CLIP_CONFIG), "--clip-pretrained", "none")
TINY_SCORE += ("--device", "cpu")


def test_generate_score_show_with_the_file_backend(tmp_path):
    out = tmp_path / "demo"
    demo = "storyboard_common/data/demo"
    generate = ("generate", "--llm", "file", "--classes", f"{demo}/classes.csv", "--input")
    generate += (f"{demo}/candidates.json", "--out", str(out), "--no-progress")
    done = subtext_cli(*generate)
    assert done.returncode == 0, done.stderr
    assert "18 ok, 0 failed, 0 already done" in done.stdout
    again = subtext_cli(*generate)
    assert "0 ok, 0 failed, 18 already done" in again.stdout  # resumable: nothing redone
    scored = subtext_cli(*TINY_SCORE, "--artifacts", str(out))
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
    shown = subtext_cli("show", "--artifacts", str(out))
    assert shown.returncode == 0 and "brush_hair" in shown.stdout and "runner-up" in shown.stdout


def test_two_json_sources_one_set_chosen_per_class(tmp_path):
    """Two files with the same stem (one keyed by name, one by class index with `Step k:`
    labels): both are candidates with their own keys, TPP keeps one set per class."""
    classes = tmp_path / "classes.csv"
    classes.write_text("id,name\n0,brush_hair\n1,cartwheel\n2,pour\n")
    by_name = tmp_path / "cupl" / "sets.json"
    by_index = tmp_path / "temporal" / "sets.json"
    by_name.parent.mkdir()
    by_index.parent.mkdir()
    by_name.write_text(
        json.dumps(
            {
                "brush hair": [["pick up a brush", "lift it", "pull it down", "put it away"]],
                "cartwheel": [["raise arms", "hands down", "legs over", "land"]],
                "pour": [["hold a jug", "tilt it", "fill the glass", "set it down"]],
            }
        )
    )
    by_index.write_text(
        json.dumps(
            {
                "0": [f"Step {k}: {t}" for k, t in enumerate(["grab", "comb", "stroke", "stop"])],
                "1": [f"Step {k}: {t}" for k, t in enumerate(["run", "jump", "turn", "stand"])],
                "2": [
                    f"Step {k}: {t}" for k, t in enumerate(["lift", "tip", 'say "when"', "rest"])
                ],
            }
        )
    )
    out = tmp_path / "art"
    generate = ("generate", "--llm", "file", "--classes", str(classes), "--out", str(out))
    generate += ("--index-classes", str(classes))  # the list the index-keyed file was written for
    done = subtext_cli(
        *generate, "--input", str(by_name), "--input", str(by_index), "--no-progress"
    )
    assert done.returncode == 0, done.stderr
    assert "6 ok, 0 failed, 0 already done" in done.stdout
    again = subtext_cli(
        *generate, "--input", str(by_index), "--input", str(by_name), "--no-progress"
    )
    assert "0 ok, 0 failed, 6 already done" in again.stdout, again.stdout  # same keys: resumed

    cands = pd.read_parquet(out / "candidates.parquet")
    assert len(cands) == 6 and cands.candidate_id.is_unique
    assert sorted(set(cands.llm)) == ["file:cupl/sets.json", "file:temporal/sets.json"]
    from_index = cands[cands.llm == "file:temporal/sets.json"].set_index("class_name")
    assert list(from_index.loc["brush_hair"].sub_texts) == ["grab", "comb", "stroke", "stop"]
    assert list(from_index.loc["pour"].sub_texts) == ["lift", "tip", 'say "when"', "rest"]

    scored = subtext_cli(*TINY_SCORE, "--artifacts", str(out))
    assert scored.returncode == 0, scored.stderr
    tpp = pd.read_parquet(out / "TinyCLIP-test__none" / "tpp.parquet")
    assert len(tpp) == 6 and set(tpp.candidate_id) == set(cands.candidate_id)  # both sources
    for _, group in tpp.groupby("class_id"):
        assert group.selected.sum() == 1
        assert group[group.selected].tpp.iloc[0] == group.tpp.max()
    subtexts = pd.read_parquet(out / "TinyCLIP-test__none" / "subtexts.parquet")
    chosen = cands.set_index("candidate_id").loc[subtexts.candidate_id]
    assert chosen.class_name.tolist() == ["brush_hair", "cartwheel", "pour"]
    assert [list(s) for s in subtexts.sub_texts] == [list(s) for s in chosen.sub_texts]


def test_user_errors_exit_2_with_one_sentence(tmp_path):
    (tmp_path / "range.json").write_text(json.dumps({"0": ["a"], "51": ["b"], "99": ["c"]}))
    (tmp_path / "mixed.json").write_text(json.dumps({"brush_hair": ["a"], "3": ["b"]}))
    hmdb51_files = ("generate", "--llm", "file", "--dataset", "hmdb51", "--input")
    cases = [
        (
            (*hmdb51_files, "x.json"),
            "--input file not found: x.json",
        ),
        (
            (
                *hmdb51_files,
                str(tmp_path / "mixed.json"),
                "--input",
                str(tmp_path / "range.json"),
                "--out",
                str(tmp_path / "art"),
            ),
            f"{tmp_path / 'mixed.json'} mixes class names (brush_hair) and class indices (3)",
        ),
        (
            (*hmdb51_files, str(tmp_path / "range.json"), "--out", str(tmp_path / "art")),
            f"{tmp_path / 'range.json'} is keyed by class index: pass --index-classes FILE, the "
            "label list it was written for (csv id,name, one name a line, or a shipped "
            "dataset's name), since published orders differ (3 keys).",
        ),
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
        done = subtext_cli(*args, env={"OPENAI_API_KEY": ""})
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, done.stderr)
    assert not (tmp_path / "art").exists()  # a refused file writes nothing


def test_flags_the_parser_refuses_are_one_line_too(tmp_path):
    """Found by our own sweep: an unknown choice, a non-number or an unknown flag printed a
    boxed multi-line panel; now one `error:` line and exit 2, as our own errors."""
    cases = [
        ("subtext_gen", "generate", "--llm", "nope"),
        ("subtext_gen", "generate", "--samples", "abc"),
        ("subtext_gen", "generate", "--nope"),
        ("subtext_gen", "show", "--artifacts", str(tmp_path / "nowhere")),
        ("trainer", "run", "--frames", "x"),
        ("trainer", "run", "--tau-fine", "0", "--dataset", "list", "--root", str(tmp_path)),
    ]
    for module, *args in cases:
        done = subprocess.run(
            [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "trainer", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert helped.returncode == 0 and "Usage" in helped.stdout


@pytest.mark.parametrize("command", ["demo", "study", "pretrain-clip"])
def test_a_world_command_called_on_the_trainer_says_where_it_moved(command, monkeypatch, capsys):
    """`python -m trainer demo` (older scripts): one sentence naming the new command."""
    from trainer.__main__ import main

    monkeypatch.setattr(sys, "argv", ["trainer", command, "--out", "x"])
    with pytest.raises(SystemExit) as stopped:
        main()
    said = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(said) == 1
    assert f"run `python -m storyworld {command}` with the same options" in said[0]
