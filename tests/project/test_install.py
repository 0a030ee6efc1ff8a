"""What a new user installs and sees first: every imported package declared, `--version` and
shell completion on both CLIs, the LICENSE and a CITATION.cff that parses."""

import ast
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions

import pytest

from storyboard_common.about import PAPER, storyboard_version
from subtext_gen.__main__ import app as subtext_app
from testkit.cli import REPO, run_app, run_module
from trainer.__main__ import app as trainer_app

# The library, and the storyboard world a clone runs with the same install (`make demo`).
PACKAGES = ("storyboard_common", "subtext_gen", "trainer", "storyworld")
CLIS = {"storyboard-subtexts": subtext_app, "storyboard-trainer": trainer_app}


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    imported = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}
    distributions = packages_distributions()
    needed = {_name(dist) for module in third_party for dist in distributions.get(module, [module])}
    declared = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert {"numpy", "safetensors", "huggingface-hub"} <= needed  # the scan sees imports
    assert needed - declared == set()


@pytest.mark.parametrize("command", sorted(CLIS))
def test_version_prints_the_project_version_and_stops(command):
    code, output, error = run_app(CLIS[command], "--version", "generate")  # eager: no command
    assert (code, output, error) == (0, f"storyboard {storyboard_version()}\n", None)
    assert storyboard_version() == _pyproject()["project"]["version"]


# Each installed command, the module its `main` is in, and what it completes a word to.
COMPLETED = {
    "storyboard-subtexts": ("subtext_gen.__main__", "s", ["score", "show"]),
    "storyboard-trainer": ("trainer.__main__", "ru", ["run"]),
}


@pytest.mark.parametrize("command", sorted(CLIS))
def test_shell_completion_is_offered_and_completes_the_installed_command(command):
    """Completion binds to a command name, so it works for the installed commands that
    pyproject declares (for `python -m ...` a shell has no name to bind it to)."""
    from typer.testing import CliRunner

    module, word, expected = COMPLETED[command]
    _, shown, _ = run_app(CLIS[command], "--help")
    assert "--install-completion" in shown and "--show-completion" in shown
    assert _pyproject()["project"]["scripts"][command] == f"{module}:main"
    variable = "_" + command.upper().replace("-", "_") + "_COMPLETE"
    done = CliRunner().invoke(
        CLIS[command],
        [],
        prog_name=command,
        env={variable: "complete_bash", "COMP_WORDS": f"{command} {word}", "COMP_CWORD": "1"},
    )
    assert (done.exit_code, done.output.split()) == (0, expected)


def home_files(home) -> dict:
    return {path: path.read_bytes() for path in home.rglob("*") if path.is_file()}


def a_home(tmp_path):
    """A user's home with the shell rc files completion would be written to."""
    home = tmp_path / "home"
    (home / ".config" / "fish").mkdir(parents=True)
    for rc in (".bashrc", ".zshrc", ".config/fish/config.fish"):
        (home / rc).write_text("# the user's own\n")
    return home


@pytest.mark.parametrize("flag", ["--install-completion", "--show-completion"])
@pytest.mark.parametrize("command", sorted(CLIS))
def test_completion_under_python_m_is_one_sentence_and_touches_no_shell_file(
    command, flag, tmp_path, monkeypatch
):
    """Run as `python -m PACKAGE`, completion would bind to `python`: refused, pointing to
    the installed command, with no shell file written (HOME is a temporary folder)."""
    import types

    from storyboard_common.about import command_app

    package = COMPLETED[command][0].split(".")[0]
    home = a_home(tmp_path)
    before = home_files(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHELL", "/bin/bash")
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name=f"{package}.__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    app = command_app("A CLI.", package, command)
    app.command()(lambda: None)
    code, shown, _ = run_app(app, "--help")
    assert code == 0 and "completion" not in shown  # not offered where it cannot work
    code, _, error = run_app(app, flag)
    assert code != 0 and str(error) == (
        f"`python -m {package}` offers no shell completion, which a shell binds to a "
        f"command's name (here `python`); run `{command} --install-completion` (the "
        "installed command) instead."
    )
    assert home_files(home) == before


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(CLIS))
def test_python_m_install_completion_leaves_the_shell_rc_files_alone(command, tmp_path):
    """The real `python -m trainer|subtext_gen --install-completion` in a subprocess."""
    package = COMPLETED[command][0].split(".")[0]
    home = a_home(tmp_path)
    before = home_files(home)
    done = run_module(
        package, "--install-completion", env={"HOME": str(home), "SHELL": "/bin/bash"}
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: `python -m {package}` offers no shell completion")
    assert f"run `{command} --install-completion`" in done.stderr
    assert home_files(home) == before


def test_the_license_is_the_mit_license_pyproject_names():
    text = (REPO / "LICENSE").read_text()
    assert _pyproject()["project"]["license"] == "MIT"
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the Storyboard authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_citation_cff_is_valid_and_cites_the_paper_the_model_cards_cite():
    import yaml

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors"):  # required by CFF 1.2.0
        assert cff[key], key
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == storyboard_version() and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    for key in ("type", "title", "authors"):  # required of a CFF reference
        assert paper[key], key
    assert all(set(a) == {"given-names", "family-names"} for a in paper["authors"])
    assert paper["title"] == PAPER["title"] and paper["year"] == PAPER["year"]
    assert [(a["given-names"], a["family-names"]) for a in paper["authors"]] == list(
        PAPER["authors"]
    )
    assert paper["doi"] == f"10.48550/arXiv.{PAPER['arxiv']}"


def _setup_commands(tmp_path, *variables: str) -> list[str]:
    """The commands `make setup` would run for a fresh `.venv` at tmp_path (`make -n`: printed,
    not run)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    venv = tmp_path / "venv"
    done = subprocess.run(
        [make, "-n", "-C", str(REPO), "setup", f"VENV={venv}", *variables],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.replace(str(venv), "VENV") for line in done.stdout.splitlines()]


def test_make_setup_torch_cpu_installs_pytorchs_cpu_build_before_the_project(tmp_path):
    """`make setup TORCH=cpu` takes torch and torchvision from PyTorch's CPU index first (the
    project's install then keeps them); plain `make setup` (CI's) never names that index."""
    project = "VENV/bin/pip install --quiet -e '.[dev]'"
    cpu = "VENV/bin/pip install --quiet torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    with_cpu = _setup_commands(tmp_path, "TORCH=cpu")
    assert cpu in with_cpu and project in with_cpu
    assert with_cpu.index(cpu) < with_cpu.index(project)
    default = _setup_commands(tmp_path)
    assert project in default
    assert not any("download.pytorch.org" in line for line in default)
