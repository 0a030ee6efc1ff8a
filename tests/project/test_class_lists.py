"""The shipped class lists are named alike wherever a user reads which there are: the
README's and docs/usage.md's `--dataset NAME` rows and `generate --help`."""

import re

import typer

from storyboard_common.classes import shipped_datasets
from subtext_gen.__main__ import app
from testkit.cli import REPO


def _dataset_row(page: str) -> str:
    (row,) = [
        line
        for line in (REPO / page).read_text().splitlines()
        if line.startswith("| `--dataset NAME` / `--classes FILE`")
    ]
    return row


def test_every_page_names_the_shipped_class_lists_alike():
    shipped = set(shipped_datasets())
    assert shipped == {"demo", "hmdb51", "ssv2", "ucf101"}  # the lists in storyboard_common/data
    for page in ("README.md", "docs/usage.md"):
        named = set(re.findall(r"`(\w+)`", _dataset_row(page).split("|")[3])) - {"id", "name"}
        assert named == shipped, page
    generate = typer.main.get_command(app).commands["generate"]
    (dataset,) = [p for p in generate.params if p.name == "dataset"]
    listed = dataset.help.partition(":")[2].partition("(")[0]
    assert set(re.findall(r"\w+", listed)) - {"or"} == shipped
