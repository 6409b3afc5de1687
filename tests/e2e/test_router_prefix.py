"""Prefix routing with a router and three real nodes: each turn of a conversation goes to the
node that holds its beginning, whether the router sent the last turn there itself or only the
node's heartbeat says so (a conversation begun on the node directly). Routing is plumbing:
the tiny model."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import start_node
from tests.support.procs import ServerProcess, run_cli, wait_for

BEAT = {"LLMLB_HEARTBEAT_MS": "300", "LLMLB_THREADS": "1"}
MODEL = "org/tiny"


@pytest.fixture
def cluster(tmp_path, tiny_gguf):
    router = ServerProcess(tmp_path / "router", kind="router", env=BEAT).start()
    nodes = [
        start_node(
            tmp_path / f"node{i}", {MODEL: tiny_gguf}, env=BEAT, extra_args=("--router", router.url)
        )
        for i in range(3)
    ]
    assert wait_for(lambda: len(online(router)) == 3), router.log()
    for node in nodes:  # loaded everywhere: no node is preferred for having it loaded
        httpx.post(node.url + "/api/generate", json={"model": MODEL}, timeout=60).raise_for_status()
    assert wait_for(lambda: all(n["loaded_models"] == [MODEL] for n in online(router).values()))
    yield router, nodes
    for n in nodes:
        n.stop()
    router.stop()


def online(router) -> dict[str, dict]:
    nodes = httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
    return {n["id"]: n for n in nodes if n["status"] == "online"}


def turn(url: str, messages: list[dict]) -> tuple[str | None, str]:
    """One chat turn: (the node that answered, the reply)."""
    r = httpx.post(
        url + "/api/chat",
        json={"model": MODEL, "messages": messages, "stream": False, "options": {"num_predict": 3}},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.headers.get("x-llmlb-node"), r.json()["message"]["content"]


def conversation(url: str, topic: int, turns: int) -> list[str | None]:
    """A conversation's turns, one after another: the node of each."""
    messages = [{"role": "user", "content": f"topic {topic}: " + "tell me more. " * 40}]
    where = []
    for i in range(turns):
        node, reply = turn(url, messages)
        where.append(node)
        messages += [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": f"and {i}?"},
        ]
    return where


def test_each_turn_of_a_conversation_goes_where_its_prefix_is(cluster):
    router, _ = cluster
    for topic in range(3):
        where = conversation(router.url, topic, 3)
        # without prefix routing, each turn goes to the least recently used node
        assert len(set(where)) == 1, where
    routed = httpx.get(router.url + "/metrics").text
    assert 'llmlb_router_prefix_requests_total{result="hit"} 6.0' in routed
    assert 'llmlb_router_prefix_requests_total{result="miss"} 3.0' in routed
    status = run_cli("router", "status", env=router.client_env()).stdout
    assert "Prefixes:   67% of 9 requests sent to the node holding their prefix" in status, status


def test_a_conversation_begun_on_a_node_is_continued_there_through_the_router(cluster):
    """The router never sent it there: only the node's heartbeat tells what it holds."""
    router, nodes = cluster
    last = max(online(router).values(), key=lambda n: n["id"])  # the last of equals
    node = next(n for n in nodes if n.port == last["port"])
    messages = [{"role": "user", "content": "a story: " + "once upon a time. " * 40}]
    _, reply = turn(node.url, messages)
    assert wait_for(lambda: online(router)[last["id"]]["prefixes_held"] > 0)
    messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "go on"}]
    answered, _ = turn(router.url, messages)
    assert answered == last["id"][:8]  # (the header names a node by its first 8 characters)
