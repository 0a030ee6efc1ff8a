"""No production function runs over `MAX_LINES` lines unless its docstring says why, in a
sentence starting "Long because" (a flat option list, a card template: a split would only
scatter it)."""

import ast
import re

from testkit.cli import REPO

MAX_LINES = 80
PACKAGES = ("storyboard_common", "subtext_gen", "trainer", "storyworld", "bench")
REASON = re.compile(r"\bLong because \w")


def long_functions(source: str, filename: str = "<source>") -> list[tuple[str, int]]:
    """(name, lines) of every function or method in `source` longer than `MAX_LINES` lines
    (from its `def` to its last line) whose docstring gives no "Long because" reason."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES and not REASON.search(ast.get_docstring(node) or ""):
                found.append((node.name, lines))
    return found


def test_finds_a_long_function_without_a_reason():
    """The check can fail: 81 lines without a reason are reported, nested ones too; 80 lines,
    or a reason, pass."""
    body = "".join(f"    x{i} = {i}\n" for i in range(80))
    too_long = "def f():\n" + body
    assert long_functions(too_long) == [("f", 81)]
    assert long_functions("def f():\n" + body[: body.rindex("    x79")]) == []
    nested = "class C:\n    def m(self):\n" + "".join(
        "    " + line + "\n" for line in body.split("\n") if line
    )
    assert long_functions(nested) == [("m", 81)]
    reason = '    """Long because it is one flat list."""\n'
    assert long_functions("def f():\n" + reason + body) == []
    assert long_functions("def f():\n" + '    """Long."""\n' + body) == [("f", 82)]


def test_no_production_function_is_long_without_a_reason():
    offending = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found = long_functions(path.read_text(encoding="utf-8"), str(path))
            if found:
                offending[path.relative_to(REPO).as_posix()] = found
    assert offending == {}, (
        f"functions over {MAX_LINES} lines: split them, or say in the docstring why not "
        '("Long because ...")'
    )
