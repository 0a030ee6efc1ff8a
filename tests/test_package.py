"""The package as a user installs it: a wheel holds the shipped data, and a command run from
another directory against the installed copy (not the clone) finds it."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pandas as pd
import pytest

from subtext_gen.resources import data_path, resolve_shipped

from .conftest import REPO

SHIPPED = (
    "subtext_gen/data/hmdb51/classes.csv",
    "subtext_gen/data/ucf101/classes.csv",
    "subtext_gen/data/world/candidates.json",
    "subtext_gen/data/demo/candidates.json",
    "subtext_gen/data/clip/StoryboardWorld-CLIP.json",
    "subtext_gen/data/clip/TinyCLIP-test.json",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel and unpacked into a folder of its own (deps: this env's).

    Built from a copy of the checkout's files (tracked, and untracked but not ignored): a
    build in the checkout itself would reuse its `build/`, where setuptools never removes
    modules that have since moved, and ship them."""
    base = tmp_path_factory.mktemp("package")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    source = base / "source"
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(base / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (base / "dist").glob("storyboard-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(base / "site"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return wheel, base / "site"


def test_wheel_holds_the_shipped_data(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED) <= names
    assert not any(name.startswith(("tests/", "bench/", "testkit/", "data/")) for name in names)
    modules = {name for name in names if name.endswith(".py")}
    packages = ("storyboard_common/", "subtext_gen/", "trainer/")
    assert modules == {
        str(p.relative_to(REPO)) for top in packages for p in (REPO / top).rglob("*.py")
    }  # every module, none stale


def test_a_command_runs_from_another_directory_on_the_installed_copy(installed, tmp_path):
    _, site = installed
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import subtext_gen, trainer; print(subtext_gen.__file__); print(trainer.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(line.startswith(str(site)) for line in where.stdout.split())  # not the clone
    sets = {"brush_hair": [["grab a brush", "lift the arm", "comb the hair", "lower the arm"]]}
    (tmp_path / "sets.json").write_text(json.dumps(sets))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "subtext_gen",
            "generate",
            "--llm",
            "file",
            "--dataset",
            "hmdb51",
            "--input",
            "sets.json",
            "--out",
            "out",
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    frame = pd.read_parquet(tmp_path / "out" / "candidates.parquet")
    assert set(frame["class_name"]) == {"brush_hair"} and frame["ok"].all()
    # The shipped CLIP config loads by its documented path from here too.
    clip = subprocess.run(
        [
            sys.executable,
            "-c",
            "from subtext_gen.clip_text import load_clip; "
            "print(load_clip('data/clip/TinyCLIP-test.json', 'none', 'cpu')"
            ".embed_dim)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert clip.returncode == 0 and clip.stdout.strip() == "32", clip.stderr


def test_shipped_paths_resolve_in_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_shipped("data/clip/TinyCLIP-test.json") == str(
        data_path("clip", "TinyCLIP-test.json")
    )
    (tmp_path / "data" / "clip").mkdir(parents=True)
    (tmp_path / "data" / "clip" / "TinyCLIP-test.json").write_text("{}")
    assert resolve_shipped("data/clip/TinyCLIP-test.json") == "data/clip/TinyCLIP-test.json"
    assert resolve_shipped("data/none.json") == "data/none.json"
