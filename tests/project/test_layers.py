"""The layers point one way: stage two (`trainer`) stands on the core (`storyboard_common`)
and never on stage one (`subtext_gen`); the core stands on neither stage.

`storyworld`, the experiment harness beside the library, runs both stages, so it may import
all three; none of them imports it."""

import ast
from pathlib import Path

import pytest

from testkit.cli import REPO


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports (relative imports stay inside its package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def imports_of(package: str, forbidden: str) -> dict[str, list[str]]:
    """{file: the `forbidden` modules it imports} for every module of `package`."""
    offending = {}
    for path in sorted((REPO / package).rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        bad = sorted(
            m for m in imported_modules(path) if m == forbidden or m.startswith(forbidden + ".")
        )
        if bad:
            offending[relative] = bad
    return offending


def test_finds_an_import_of_stage_one(tmp_path):
    """The walk sees both import forms, in a function body too, so the checks below can fail."""
    module = tmp_path / "m.py"
    module.write_text(
        "import subtext_gen.score\ndef f():\n    from subtext_gen.artifacts import read_tpp\n"
    )
    assert imported_modules(module) == {"subtext_gen.score", "subtext_gen.artifacts"}


def test_trainer_does_not_import_stage_one():
    assert imports_of("trainer", "subtext_gen") == {}


@pytest.mark.parametrize("package", ["storyboard_common", "subtext_gen", "trainer"])
def test_the_library_does_not_import_the_storyboard_world(package):
    assert imports_of(package, "storyworld") == {}


@pytest.mark.parametrize("stage", ["subtext_gen", "trainer"])
def test_core_imports_neither_stage(stage):
    assert imports_of("storyboard_common", stage) == {}
