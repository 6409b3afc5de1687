"""A claim on a model is given back on every path between the claim and the response.

Issue 12 found one request that kept a model claimed forever (a field checked after the
claim). These tests make the node fail at each step after the claim, in process, with a
scripted engine, and check that the model is free again afterwards. A client that hangs up
mid-stream is covered on a real server (tests/e2e/test_scheduler.py): the in-process test
client reads whole answers.
"""

from __future__ import annotations

import json
import threading

import pytest

from llmlb.server import ollama_api, openai_api, pipeline
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


# Steps at which a bug leaves a claim behind unless the request's end releases it: each is
# reached with the model claimed (checked when the bug strikes). How the client hears of it:
# a 500 before the first byte, an error line in a stream that has begun.
AFTER_THE_CLAIM = [
    (ollama_api, "_respond", False, "500"),  # right after the claim, before generating
    (ollama_api, "_respond", True, "500"),
    (pipeline, "primed", False, "500"),  # the generation made, not yet started
    (pipeline, "primed", True, "500"),
    (pipeline, "generate", False, "500"),  # starting the generation
    (pipeline, "generate", True, "500"),
    (ollama_api, "_now", True, "stream"),  # mid-stream, between two chunks
]


@pytest.mark.parametrize(("module", "name", "stream", "heard"), AFTER_THE_CLAIM)
def test_a_bug_after_the_claim_releases_it(node, monkeypatch, module, name, stream, heard):
    client, services = node
    claimed: list[int] = []  # requests holding the model when the bug struck

    def broken(*args, **kwargs):
        claimed.append(services.scheduler.in_flight)
        raise TypeError("injected bug")

    monkeypatch.setattr(module, name, broken)
    r = client.post("/api/chat", json={**CHAT, "stream": stream})
    assert claimed and claimed[0] == 1, claimed  # the bug struck with the model claimed
    if heard == "500":
        assert r.status_code == 500 and r.json() == {"error": "internal error: TypeError"}
    else:
        last = json.loads(r.text.splitlines()[-1])
        assert r.status_code == 200 and last == {"error": "generation failed: injected bug"}
    assert_free(services)
    monkeypatch.undo()
    works_again(client)


def test_openai_answer_failure_releases_the_claim(node, monkeypatch):
    client, services = node
    monkeypatch.setattr(openai_api, "_finish", lambda turn: 1 / 0)
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
    r = client.post("/api/chat", json={**CHAT, "stream": False, "keep_alive": 0})
    assert r.status_code == 500
    assert_free(services)
    # keep_alive 0 unloads it once the request ends, failed or not: not kept loaded, and not
    # listed as "stopping" for ever
    assert wait_for(lambda: client.get("/api/ps").json()["models"] == [], timeout=10)
    r = client.post("/api/stop", json={"model": "org/m"})
    assert r.status_code == 404 and r.json() == {"error": "model 'org/m' is not loaded"}


def test_concurrent_cold_requests_share_one_load(node, loader):
    """The first request starts the load and holds it (the loader waits on a gate) until the
    second is known to wait for the same load: the overlap is made, not hoped for."""
    client, _services = node
    loader.gate = threading.Event()
    answers: list[int] = []

    def ask() -> None:
        answers.append(client.post("/api/chat", json={**CHAT, "stream": False}).status_code)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    threads[0].start()
    assert loader.loading.wait(30)
    threads[1].start()
    assert wait_for(lambda: metric_value(client, "llmlb_queue_depth") == 2, timeout=30)
    loader.gate.set()
    for t in threads:
        t.join(60)
    assert answers == [200, 200] and loader.loads == 1


def metric_value(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")
