"""A claim on a model is given back on every path between the claim and the response.

Issue 12 found one request that kept a model claimed forever (a field checked after the
claim). These tests make the node fail at each step after the claim, in process, with a
scripted engine, and check that the model is free again afterwards. A client that hangs up
mid-stream is covered on a real server (tests/e2e/test_scheduler.py): the in-process test
client reads whole answers.
"""

from __future__ import annotations

import pytest

from llmlb.server import inference, ollama_api, openai_api
from tests.support.fake_engine import FakeLoader
from tests.support.node_inprocess import node_client
from tests.support.procs import wait_for

CHAT = {"model": "org/m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def loader():
    return FakeLoader()


@pytest.fixture
def node(tmp_path, tiny_gguf, loader):
    with node_client(tmp_path / "home", {"org/m": tiny_gguf}, loader) as pair:
        yield pair


def assert_free(services) -> None:
    """The model is handed back once its generation thread has ended (never two generations on
    one llama.cpp context), which may be just after the answer went out."""
    scheduler = services.scheduler

    def free() -> bool:
        slots = list(scheduler.slots.values())
        return scheduler.in_flight == 0 and all(not s.busy and s.waiting == 0 for s in slots)

    assert wait_for(free, timeout=10), f"still claimed: in_flight={scheduler.in_flight}"


def works_again(client) -> None:
    r = client.post("/api/chat", json={**CHAT, "stream": False})
    assert r.status_code == 200 and r.json()["message"]["content"] == "Hello there."


def test_a_rejected_field_claims_nothing(node):
    client, services = node
    r = client.post("/api/chat", json={**CHAT, "think": 5})
    assert r.status_code == 400 and "think" in r.json()["error"]
    assert services.scheduler.slots == {}  # validated before any load
    works_again(client)
    assert_free(services)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("fail_at", [0, 1])
def test_engine_failure_before_or_during_generation(node, loader, stream, fail_at):
    client, services = node
    loader.script.fail_at = fail_at
    r = client.post("/api/chat", json={**CHAT, "stream": stream})
    if stream and fail_at > 0:  # after the first byte: the error is in the stream
        assert r.status_code == 200 and "scripted failure" in r.text.splitlines()[-1]
    else:
        assert r.status_code >= 500
    assert_free(services)
    loader.script.fail_at = None
    works_again(client)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (inference, "chat_messages"),  # before the claim
        (inference, "generate"),  # right after the claim
        (ollama_api, "_final"),  # building the answer
    ],
)
def test_a_bug_at_any_step_releases_the_claim(node, monkeypatch, module, name):
    client, services = node

    def broken(*args, **kwargs):
        raise TypeError("injected bug")

    monkeypatch.setattr(module, name, broken)
    for stream in (False, True):
        r = client.post("/api/chat", json={**CHAT, "stream": stream})
        assert r.status_code == 500 or "injected bug" in r.text
        assert_free(services)
    monkeypatch.undo()
    works_again(client)


def test_openai_answer_failure_releases_the_claim(node, monkeypatch):
    client, services = node
    monkeypatch.setattr(openai_api, "_usage", lambda turn: 1 / 0)
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 500
    assert_free(services)


def test_embedding_failure_releases_the_claim(node, loader):
    client, services = node
    loader.script.fail_at = 0
    r = client.post("/api/embed", json={"model": "org/m", "input": "x"})
    assert r.status_code == 500
    assert_free(services)


def test_unloading_keep_alive_zero_after_a_failure(node, loader):
    client, services = node
    loader.script.fail_at = 0
    client.post("/api/chat", json={**CHAT, "stream": False, "keep_alive": 0})
    assert_free(services)
    r = client.post("/api/stop", json={"model": "org/m"})
    assert r.status_code in (200, 404)  # unloaded already, or now: never stuck "Stopping..."
