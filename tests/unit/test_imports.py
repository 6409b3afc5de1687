"""The shape of the code: layers import one way, and no module imports itself in a cycle.

The layer contract lives in pyproject.toml ([tool.importlinter]) and runs in `make check`;
this test runs the same contract in the suite and adds the cycle check import-linter lacks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles():
    assert cycles(grimp.build_graph("llmlb")) == []


def test_layers_import_one_way():
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("lint-imports")),
            "--config",
            str(ROOT / "pyproject.toml"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_node_loads_llama_cpps_libraries_before_numpy():
    """numpy first crashed model loads on a CUDA build (see llmlb/server/node_app.py)."""
    code = (
        "import sys, llmlb.cli.main, llmlb.server.serve, llmlb.server.node_app\n"
        "m = list(sys.modules)\n"  # in the order the imports began
        "print(m.index('llama_cpp.llama_cpp') < m.index('numpy'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "True", out.stderr
