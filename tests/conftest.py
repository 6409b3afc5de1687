import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.support` importable from every test


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
