"""The README's commands against the code: every `python -m trainer|subtext_gen|storyworld`
line of the README and of docs/ parses with the real CLI, every `make` target exists, every
relative link resolves, the demo table is the study's, and the quickstart runs on a miniature
HMDB-51 (a doc that drifts fails)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer

from storyboard_common.classes import load_classes
from testkit.cli import REPO, run_app
from testkit.videos import write_video

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))


def shell_blocks(text: str) -> list[list[str]]:
    """The fenced blocks without a language or marked as shell -> their logical lines
    (backslash continuations joined)."""
    blocks, block, fence = [], None, re.compile(r"^```\s*(\w*)\s*$")
    for line in text.splitlines():
        match = fence.match(line)
        if block is None and match and match.group(1) in ("", "sh", "bash", "shell", "console"):
            block = []
        elif block is not None and line.strip() == "```":
            blocks.append(block)
            block = None
        elif block is not None:
            if block and block[-1].endswith("\\"):
                block[-1] = block[-1][:-1] + " " + line.strip()
            else:
                block.append(line)
    return blocks


COMMAND = re.compile(r"^\s*(make|export|python|torchrun)\s|\s-m (trainer|subtext_gen|storyworld)\s")


def commands(page: Path) -> list[list[str]]:
    """Every logical shell line of a page that calls this project (the CLIs, make, export),
    as tokens: comments dropped, and the docs' notation read as a call: `[--flag VALUE]`
    (optional) as given, `...` (other flags) left out. Other blocks (diagrams, layouts) and
    other tools' lines are not read."""
    lines = [
        shlex.split(line, comments=True)
        for block in shell_blocks(page.read_text())
        for line in block
        if COMMAND.search(line)
    ]
    return [[t.strip("[]") for t in tokens if t != "..."] for tokens in lines if tokens]


def module_call(tokens: list[str]) -> tuple[str, list[str]] | None:
    """`python -m M ARGS` or `torchrun ... -m M ARGS` for M trainer, subtext_gen or storyworld
    -> (M, ARGS)."""
    for i, token in enumerate(tokens[:-1]):
        if token == "-m" and tokens[i + 1] in ("trainer", "subtext_gen", "storyworld"):
            return tokens[i + 1], tokens[i + 2 :]
    return None


def cli_lines(pages=(README,)) -> list[tuple[str, list[str]]]:
    return [call for page in pages for tokens in commands(page) if (call := module_call(tokens))]


def app_of(module: str):
    """The CLI as a click group (typer's own copy of click: its Context and errors)."""
    if module == "trainer":
        from trainer.__main__ import app
    elif module == "storyworld":
        from storyworld.__main__ import app
    else:
        from subtext_gen.__main__ import app
    return typer.main.get_command(app)


def test_the_readme_shows_commands_of_both_clis_and_make():
    modules = {module for module, _ in cli_lines()}
    assert modules == {"trainer", "subtext_gen"}
    assert len(cli_lines()) >= 12


@pytest.mark.parametrize(
    "module, args",
    [pytest.param(m, a, id=" ".join([m, *a])[:70]) for m, a in cli_lines([README, *DOCS])],
)
def test_every_readme_command_parses_with_the_real_cli(module, args):
    """Parsed as click parses a real call (types converted, required options present), not
    run: an unknown command or flag, or a value of the wrong type, fails here."""
    group = app_of(module)
    if not args or args[0].startswith("-"):  # options of the program itself
        try:
            group.make_context(module, args, resilient_parsing=False)
        except Exception as exc:  # `--version` prints and stops: click's Exit(0)
            assert type(exc).__name__ == "Exit" and exc.exit_code == 0, exc
        return
    parent = group.context_class(group, info_name=module)
    command = group.get_command(parent, args[0])
    assert command is not None, f"python -m {module} has no command {args[0]!r}"
    command.make_context(args[0], args[1:], parent=parent, resilient_parsing=False)


def test_the_parse_check_can_fail():
    """The check above refuses an unknown flag, a wrong value type and a missing command."""
    group = app_of("trainer")
    parent = group.context_class(group, info_name="trainer")
    run = group.get_command(parent, "run")
    with pytest.raises(Exception, match="No such option: --no-such-flag"):
        run.make_context("run", ["--no-such-flag"], parent=parent, resilient_parsing=False)
    with pytest.raises(typer.BadParameter, match="valid integer"):
        run.make_context("run", ["--epochs", "ten"], parent=parent, resilient_parsing=False)
    assert group.get_command(parent, "train") is None


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:", (REPO / "Makefile").read_text(), re.M))


def make_targets_named(page: Path) -> set[str]:
    """The targets of `make` lines and of inline `make X` on a page."""
    in_blocks = {
        target
        for tokens in commands(page)
        if tokens[0] == "make"
        for target in tokens[1:]
        if "=" not in target
    }
    return in_blocks | set(re.findall(r"`make ([\w-]+)", page.read_text()))


def test_every_make_target_the_docs_name_exists():
    assert {"demo", "test", "setup", "study", "demo-subtexts"} <= make_targets_named(README)
    for page in (README, *DOCS):
        missing = make_targets_named(page) - make_targets()
        assert not missing, f"{page.name} names make targets the Makefile lacks: {missing}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: no heading #{anchor} in {file.name}"


def test_the_demo_table_is_the_studys_results():
    """The README's table is what `top1_table` makes of docs/study/results.json (the
    demo's CLIP objective, at the calibrated pair the demo runs at): after a new study,
    paste the table this prints."""
    from storyworld.study.report import read_results, top1_table

    expected = top1_table(
        read_results(REPO / "docs" / "study"), "pooled+tokens", key="top1_calibrated"
    )
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("<!-- study-table")) + 1
    shown = lines[start : start + len(expected)]
    assert shown == expected, "the README's study table is stale; it should be:\n" + "\n".join(
        expected
    )
    assert lines[start + len(expected)].strip() == ""


# ---------------------------------------------------------------- the quickstart


def quickstart() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    return [shlex.split(line, comments=True) for line in shell_blocks(section)[0]]


def write_mini_hmdb51(root: Path) -> list[str]:
    """HMDB-51 as published, fold 1 only: per class two training videos (8 frames, 32x24)
    in `<class>/` and `testTrainMulti_7030_splits/<class>_test_split1.txt`, and a test video
    for every 8th class (fewer videos to decode; the layout allows classes without one)."""
    names = load_classes("hmdb51").names
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for c, name in enumerate(names):
        tags = {"a": 1, "b": 1, **({"c": 2} if c % 8 == 0 else {})}
        (splits / f"{name}_test_split1.txt").write_text(
            "".join(f"{name}_{v}.avi {tag} \n" for v, tag in tags.items())
        )
        tint = (0.3 + 0.7 * (c % 3 == 0), 0.3 + 0.7 * (c % 3 == 1), 0.3 + 0.7 * (c % 3 == 2))
        for v in tags:
            write_video(root / name / f"{name}_{v}.avi", frames=8, width=32, height=24, tint=tint)
    return list(names)


@pytest.mark.slow
def test_the_quickstart_runs_on_a_miniature_hmdb51(tmp_path, monkeypatch):
    """The quickstart's lines as written, on a miniature HMDB-51, with offline stand-ins
    appended (click keeps an option's last value): the `file` backend for the LLM, the tiny
    CLIP with random weights for ViT-B/16, one epoch on the CPU."""
    from subtext_gen.__main__ import app as stage_one
    from trainer.__main__ import app as stage_two

    data = tmp_path / "data"
    names = write_mini_hmdb51(data / "hmdb51")
    descriptions = tmp_path / "descriptions.json"
    endings = ("starts", "goes on", "ends", "rests")
    sets = {n: [[f"{n} step {k}" for k in range(4)], [f"{n} {e}" for e in endings]] for n in names}
    descriptions.write_text(json.dumps(sets))
    tiny_clip = ["--clip-model", "TinyCLIP-test", "--clip-pretrained", "none", "--device", "cpu"]
    offline = {
        ("trainer", "check-data"): [],
        ("subtext_gen", "generate"): ["--llm", "file", "--input", descriptions, "--no-progress"],
        ("subtext_gen", "score"): tiny_clip,
        ("trainer", "run"): [*tiny_clip, "--epochs", "1", "--frames", "4", "--batch-size", "16"]
        + ["--workers", "0"],
        ("trainer", "eval"): ["--device", "cpu", "--workers", "0"],
    }
    environment = {"STORYBOARD_DATA": data, "OPENAI_API_KEY": None}  # None: not needed offline
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STORYBOARD_ARTIFACTS", raising=False)
    outputs = {}
    for tokens in quickstart():
        if tokens[0] == "export":
            name = tokens[1].partition("=")[0]
            assert name in environment, f"the quickstart sets {name}; teach this test its value"
            if environment[name] is not None:
                monkeypatch.setenv(name, str(environment[name]))
            continue
        module, args = module_call(tokens)
        extra = offline.get((module, args[0]))
        assert extra is not None, f"no offline stand-in for `{' '.join(tokens)}`"
        app = stage_two if module == "trainer" else stage_one
        code, output, error = run_app(app, *args, *extra)
        assert code == 0, f"`{' '.join(tokens)}` failed: {error or output}"
        outputs[module, args[0]] = output
    assert "51 classes" in outputs["trainer", "check-data"]
    assert "102 ok, 0 failed" in outputs["subtext_gen", "generate"]
    scored = tmp_path / "artifacts" / "hmdb51" / "TinyCLIP-test__none" / "subtexts.parquet"
    assert scored.is_file()
    run = tmp_path / "runs" / "hmdb51-2shot"
    assert (run / "checkpoints" / "best.pt").is_file()
    result = json.loads(outputs["trainer", "eval"].strip().splitlines()[-1])
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    top1 = [line["top1"] for line in logged if "top1" in line]
    assert result["top1"] == pytest.approx(top1[-1])  # the run's own test split, its best epoch
