"""Test tiers, and the isolation every test gets.

Each test is marked with its tier, from its directory: unit, integration, e2e, package (the
installed wheel), except the dashboard's Chromium test, which is browser. Run one tier with
`make test-unit` (and so on) or `make pytest ARGS="-m 'e2e or browser'"`.
"""

import sys
from pathlib import Path

# Before numpy, as in the node (llmlb/server/node_app.py): the other order crashed model loads
# on a CUDA build of llama.cpp, and tests import numpy (tiny models) before loading them.
import llama_cpp  # noqa: F401  (imported for the load order alone)
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.support` importable from every test

# PostgreSQL and Redis fixtures for the router's cluster mode
pytest_plugins = ["tests.support.services"]

TIERS = ("unit", "integration", "e2e", "package")
BROWSER_TESTS = {"tests/e2e/test_dashboard.py"}  # need Chromium (make browser)


def tier_of(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).as_posix()
    if rel in BROWSER_TESTS:
        return "browser"
    parts = rel.split("/")
    if len(parts) > 2 and parts[0] == "tests" and parts[1] in TIERS:
        return parts[1]
    raise pytest.UsageError(f"{rel}: a test lives in one of tests/{{{','.join(TIERS)}}}/")


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(tier_of(item.path))


@pytest.fixture(autouse=True)
def llmlb_env(tmp_path, monkeypatch):
    """Every test gets its own LLMLB_HOME and an empty ollama store; no host settings leak in."""
    home = tmp_path / "llmlb-home"
    monkeypatch.setenv("LLMLB_HOME", str(home))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama-models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in (
        "LLMLB_HOST",
        "LLMLB_ROUTER",
        "LLMLB_ROUTER_URL",
        "LLMLB_DEBUG",
        "HF_TOKEN",
        "LLMLB_API_KEYS",
        "LLMLB_NODE_TOKEN",
        "HF_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """One tiny model file shared by the session (read-only: copy it before changing it)."""
    from tests.support.tiny_model import make_tiny_gguf

    return make_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", license="MIT")
