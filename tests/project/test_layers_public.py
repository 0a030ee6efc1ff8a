"""Each package says what the others may use: its `__init__`'s `__all__` names its public
modules (a subpackage's `__init__` its own), and in a public module the names without a
leading underscore are public. `storyworld` and the library packages import from another
package only what it declares; the benchmarks and test helpers, which time and drive the
library's inside, may reach any module but no private name."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.cli import REPO

PACKAGES = ("storyboard_common", "subtext_gen", "trainer", "storyworld")
INSIDE = ("bench", "testkit")  # may import any module of a package, no private name


def declared(package: str) -> list[str] | None:
    """The `__all__` of `package`'s `__init__.py`, read without importing it; None for a
    plain module (no `__init__.py`)."""
    init = REPO / package.replace(".", "/") / "__init__.py"
    if not init.is_file():
        return None
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return []


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every absolute import of a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def refusals(module: str, names: list[str], strict: bool) -> list[str]:
    """Why importing `names` from `module` reaches past the package's public face ([] when
    it does not); `strict`: only declared modules too, not just public names."""
    parts = module.split(".")
    bad = [f"{module}: {p} is private" for p in parts + names if private(p)]
    if not strict:
        return bad
    for depth in range(1, len(parts)):
        package = ".".join(parts[:depth])
        if parts[depth] not in declared(package):
            return [*bad, f"{module}: {parts[depth]} is not in {package}.__all__"]
    public = declared(module)  # None: a module, whose public names are all it offers
    return bad + [
        f"{module}.{n} is not in its __all__"
        for n in names
        if public is not None and n not in public
    ]


def crossings(importer: str) -> dict[str, list[str]]:
    """{file: its refused imports} over every module of `importer` that imports another
    package."""
    offending = {}
    for path in sorted((REPO / importer).rglob("*.py")):
        bad = [
            reason
            for module, names in imports(path)
            if module.split(".")[0] in PACKAGES and module.split(".")[0] != importer
            for reason in refusals(module, names, strict=importer in PACKAGES)
        ]
        if bad:
            offending[path.relative_to(REPO).as_posix()] = bad
    return offending


def test_the_check_refuses_a_private_or_undeclared_name():
    """The check can fail: storyworld's old borrowings are refused, its imports are not."""
    assert refusals("trainer.report", ["_pyplot"], strict=False) == [
        "trainer.report: _pyplot is private"
    ]
    assert refusals("trainer.checkpoints", ["load_checkpoint"], strict=True) == [
        "trainer.checkpoints: checkpoints is not in trainer.__all__"
    ]
    assert refusals("trainer.cache", ["dataset"], strict=True) == [
        "trainer.cache.dataset is not in its __all__"
    ]
    assert refusals("trainer.checkpoints", ["load_checkpoint"], strict=False) == []
    assert refusals("trainer.training", ["train"], strict=True) == []
    assert refusals("trainer.cache", ["build"], strict=True) == []
    assert refusals("trainer.__main__", ["app"], strict=False) == []


@pytest.mark.parametrize("importer", PACKAGES + INSIDE)
def test_packages_import_only_what_another_declares_public(importer):
    assert crossings(importer) == {}


@pytest.mark.parametrize(
    "package",
    PACKAGES + ("subtext_gen.llm", "trainer.cache", "trainer.data", "trainer.model"),
)
def test_every_declared_name_exists(package):
    folder = REPO / package.replace(".", "/")
    init = (folder / "__init__.py").read_text(encoding="utf-8")
    names = declared(package)
    assert names, f"{package} declares nothing public"
    for name in names:
        assert (
            (folder / f"{name}.py").is_file()
            or (folder / name / "__init__.py").is_file()
            or f"\n{name} = " in init
        ), f"{package}.__all__ names {name}, which it does not hold"


def test_a_package_import_loads_none_of_its_modules():
    """The declarations cost nothing: importing a package runs no module of it, so a CLI's
    `--help` loads only what the CLI itself imports."""
    code = (
        "import sys, storyboard_common, subtext_gen, trainer, trainer.cache, "
        "trainer.data, trainer.model\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('storyboard_common', 'subtext_gen', 'trainer') and m.count('.') and "
        "m not in ('trainer.cache', 'trainer.data', 'trainer.model')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout == "[]\n"


def test_the_backend_registry_loads_no_heavy_library():
    """`subtext_gen.llm` is the backend registry, so importing it loads the backend modules;
    the libraries they run on (openai, torch, transformers) load only when one is built."""
    code = (
        "import sys, subtext_gen.llm\n"
        "print(sorted(m for m in ('openai', 'torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout == "[]\n"
