"""The data layers point one way: store -> sources -> (validation, units, settings, errors);
jobs may use the converter, which stands on the leaves alone.

Read from the source files (ast), so a function-local import counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LLMLB = Path(__file__).resolve().parents[2] / "llmlb"
LEAVES = {"llmlb.errors", "llmlb.settings", "llmlb.validation", "llmlb.units"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.startswith("llmlb")}


def modules(package: str) -> list[Path]:
    return sorted((LLMLB / package).rglob("*.py"))


def _allowed(name: str, allowed: set[str]) -> bool:
    return name == "llmlb" or any(name == a or name.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize(
    "package, allowed",
    [
        ("sources", LEAVES | {"llmlb.sources"}),
        ("store", LEAVES | {"llmlb.sources", "llmlb.store"}),
        ("convert", LEAVES | {"llmlb.convert"}),
        ("jobs", LEAVES | {"llmlb.sources", "llmlb.convert", "llmlb.store", "llmlb.jobs"}),
    ],
)
def test_lower_layers_import_only_what_lies_below(package, allowed):
    wrong = {
        f"{path.relative_to(LLMLB)} imports {name}"
        for path in modules(package)
        for name in imports_of(path)
        if not _allowed(name, allowed)
    }
    assert not wrong


def test_leaves_import_no_other_llmlb_module():
    for leaf in ("errors", "settings", "validation", "units"):
        names = imports_of(LLMLB / f"{leaf}.py")
        assert all(_allowed(n, LEAVES) for n in names), (leaf, names)


def test_chat_and_repl_do_not_import_each_other_both_ways():
    chat = imports_of(LLMLB / "cli" / "chat.py")
    repl = imports_of(LLMLB / "cli" / "repl.py")
    assert not any(n.startswith("llmlb.cli.repl") for n in chat)
    assert any(n.startswith("llmlb.cli.chat") for n in repl)  # the one allowed direction
