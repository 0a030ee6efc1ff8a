"""The package as a user installs it: a wheel holds the shipped data, and a command run from
another directory against the installed copy (not the clone) finds it."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from storyboard_common.resources import data_path, resolve_shipped
from testkit.cli import REPO

SHIPPED = (
    "storyboard_common/data/hmdb51/classes.csv",
    "storyboard_common/data/ucf101/classes.csv",
    "storyboard_common/data/world/candidates.json",
    "storyboard_common/data/demo/candidates.json",
    "storyboard_common/data/clip/StoryboardWorld-CLIP.json",
    "storyboard_common/data/clip/TinyCLIP-test.json",
    "trainer/configs/k400.yaml",
    "trainer/configs/hmdb51-2shot.yaml",
    "trainer/configs/ucf101-2shot.yaml",
    "trainer/configs/k400-2shot.yaml",
    "trainer/configs/charades.yaml",
    "trainer/paper_rows.yaml",
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
    info = zipfile.ZipFile(wheel)
    (licence,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert info.read(licence).startswith(b"MIT License")
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = info.read(entry_points).decode()
    assert "storyboard-subtexts = subtext_gen.__main__:main" in scripts
    assert "storyboard-trainer = trainer.__main__:main" in scripts


@pytest.mark.slow
def test_the_documented_commands_run_from_another_directory_on_the_installed_copy(
    installed, tmp_path
):
    """`make demo-subtexts`'s three commands as the Makefile and README print them (shipped
    files as `storyboard_common/data/...`), and a shipped CLIP config by name, from a folder
    outside the clone with the wheel's copy."""
    wheel, site = installed
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(*args):
        return subprocess.run(
            [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    where = run(
        "-c",
        "import subtext_gen, trainer; print(subtext_gen.__file__); print(trainer.__file__); "
        "from storyboard_common.clip import load_clip; "
        "print(load_clip('TinyCLIP-test', 'none', 'cpu').embed_dim); "
        "from storyboard_common.about import storyboard_version; print(storyboard_version())",
    )
    assert where.returncode == 0, where.stderr
    *files, embed_dim, version = where.stdout.split()
    assert version == wheel.name.split("-")[1]  # `--version` from the wheel's metadata
    assert all(name.startswith(str(site)) for name in files)  # not the clone
    assert embed_dim == "32"  # the shipped config, by name
    demo, out = "storyboard_common/data/demo", "artifacts/demo-subtexts"
    generate = run(
        *("-m", "subtext_gen", "generate", "--llm", "file", "--classes", f"{demo}/classes.csv"),
        *("--input", f"{demo}/candidates.json", "--out", out, "--no-progress"),
    )
    assert generate.returncode == 0, generate.stderr
    assert "18 ok, 0 failed" in generate.stdout
    score = run(
        *("-m", "subtext_gen", "score", "--tpp", "--artifacts", out, "--device", "cpu"),
        *(
            "--clip-model",
            "storyboard_common/data/clip/TinyCLIP-test.json",
            "--clip-pretrained",
            "none",
        ),
    )
    assert score.returncode == 0, score.stderr
    assert "UserWarning: --clip-pretrained none: CLIP TinyCLIP-test's text tower" in score.stderr
    frame = pd.read_parquet(tmp_path / out / "TinyCLIP-test__none" / "subtexts.parquet")
    assert len(frame) == 6
    # Scored by path, shown by name: one CLIP identity.
    show = run(
        *("-m", "subtext_gen", "show", "--artifacts", out),
        *("--clip-model", "TinyCLIP-test", "--clip-pretrained", "none"),
    )
    assert show.returncode == 0 and "brush_hair" in show.stdout, show.stderr


def test_shipped_paths_resolve_in_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = data_path("clip", "TinyCLIP-test.json")
    # The clone's path, and the older ones that commands written before the move still use.
    for written in (
        "storyboard_common/data/clip/TinyCLIP-test.json",
        "subtext_gen/data/clip/TinyCLIP-test.json",
        "data/clip/TinyCLIP-test.json",
    ):
        assert resolve_shipped(written) == shipped
    # A file of that name in the working directory is the user's: it wins.
    (tmp_path / "data" / "clip").mkdir(parents=True)
    (tmp_path / "data" / "clip" / "TinyCLIP-test.json").write_text("{}")
    assert resolve_shipped("data/clip/TinyCLIP-test.json") == Path("data/clip/TinyCLIP-test.json")
    assert resolve_shipped("data/none.json") == Path("data/none.json")
    assert resolve_shipped("other/demo/classes.csv") == Path("other/demo/classes.csv")
