"""Issue 12's numbered cases, each one request that used to lock a model, break the cluster or
answer 500; through the real servers."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import NodeSpec, start_node
from tests.support.procs import ServerProcess, run_cli, wait_for

CHAT = {"model": "org/tiny", "messages": [{"role": "user", "content": "hi"}]}
BEAT = {"LLMLB_HEARTBEAT_MS": "200"}


NODE = NodeSpec({"org/tiny": "tiny_gguf"})


def chat(node, **extra) -> httpx.Response:
    body = {**CHAT, "stream": False, "options": {"num_predict": 3}, **extra}
    return httpx.post(node.url + "/api/chat", json=body, timeout=60)


def test_1_a_rejected_field_does_not_keep_the_model_claimed(node):
    assert chat(node).status_code == 200  # loaded
    r = chat(node, think=5)
    assert (
        r.status_code == 400
        and r.json()["error"] == "field 'think' must be a boolean or a string, not an integer"
    )
    assert all(not m["busy"] for m in httpx.get(node.url + "/api/ps").json()["models"])
    assert chat(node).status_code == 200  # not hanging
    stopped = run_cli("node", "stop", "org/tiny", env=node.client_env(), timeout=30)
    assert stopped.returncode == 0, stopped.stderr
    assert wait_for(lambda: httpx.get(node.url + "/api/ps").json()["models"] == [])


@pytest.mark.parametrize("keep_alive", [1e12, "inf", 1e308, 2**70, "-1"])
def test_2_huge_keep_alive_means_forever_and_ps_keeps_working(node, keep_alive):
    assert chat(node, keep_alive=keep_alive).status_code == 200
    ps = httpx.get(node.url + "/api/ps")
    assert ps.status_code == 200
    assert ps.json()["models"][0]["expires_at"] is None  # forever
    listed = run_cli("node", "ps", env=node.client_env())
    assert listed.returncode == 0 and "Forever" in listed.stdout


@pytest.mark.parametrize("keep_alive", ["nan", "soon", True])
def test_2_an_unreadable_keep_alive_is_a_400(node, keep_alive):
    r = chat(node, keep_alive=keep_alive)
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]


def test_3_a_malformed_heartbeat_breaks_nothing_even_after_a_restart(tmp_path, tiny_gguf):
    router = ServerProcess(tmp_path / "router", kind="router", env=BEAT).start()
    node = start_node(
        tmp_path / "node", {"org/tiny": tiny_gguf}, env=BEAT, extra_args=("--router", router.url)
    )
    try:
        bad = [
            {"id": "x", "host": "127.0.0.1", "port": 1, "models": [{"name": "m", "alias": [1]}]},
            {"id": "y", "host": "127.0.0.1", "port": 1, "loaded_models": 5},
            {"id": "z", "host": "127.0.0.1", "port": 1, "uptime_secs": 2**70},
        ]
        for body in bad:
            r = httpx.post(router.url + "/admin/nodes/heartbeat", json=body)
            assert r.status_code == 400, r.text
        r = httpx.post(
            router.url + "/admin/nodes/heartbeat",
            content=b'{"id": "w", "host": "127.0.0.1", "port": 1, "gpu_temperature": NaN}',
        )
        assert r.status_code == 400
        assert wait_for(lambda: "org/tiny" in httpx.get(router.url + "/v1/models").text)
        ask = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
        assert httpx.post(router.url + "/api/generate", json=ask, timeout=60).status_code == 200
        assert router.stop() == 0, router.log()
        with sqlite3.connect(tmp_path / "router" / "router.db") as db:
            ids = {row[0] for row in db.execute("SELECT id FROM router_node")}
        assert ids == {httpx_node_id(node)}  # nothing half-registered was stored
        router.start()
        assert wait_for(lambda: "org/tiny" in httpx.get(router.url + "/v1/models").text)
        assert httpx.post(router.url + "/api/generate", json=ask, timeout=60).status_code == 200
    finally:
        node.stop()
        router.stop()


def httpx_node_id(node) -> str:
    with sqlite3.connect(node.home / "llmlb.db") as db:
        return db.execute("SELECT id FROM node").fetchone()[0]


def test_7_concurrent_session_appends_lose_nothing(node):
    created = httpx.post(node.url + "/api/sessions", json={"model": "org/tiny"}).json()
    url = f"{node.url}/api/sessions/{created['id']}/messages"

    def add(i: int) -> int:
        body = {"messages": [{"role": "user", "content": f"m{i}"}], "tokens": 1}
        return httpx.post(url, json=body, timeout=30).status_code

    with ThreadPoolExecutor(20) as pool:
        assert set(pool.map(add, range(20))) == {200}
    session = httpx.get(f"{node.url}/api/sessions/{created['id']}").json()
    assert session["token_count"] == 20
    assert sorted(m["content"] for m in session["messages"]) == sorted(f"m{i}" for i in range(20))
    with sqlite3.connect(node.home / "llmlb.db") as db:
        positions = [
            p
            for (p,) in db.execute(
                "SELECT position FROM message WHERE session_id = ?", (created["id"],)
            )
        ]
    assert sorted(positions) == list(range(20))


def test_8_a_stored_lone_surrogate_breaks_no_listing(node):
    created = httpx.post(node.url + "/api/sessions", json={"model": "org/tiny"}).json()
    # An older version stored JSON settings with an escaped lone surrogate (json.dumps escapes
    # it to ASCII); reading it back gave a str that no answer could encode.
    with sqlite3.connect(node.home / "llmlb.db") as db:
        db.execute(
            "UPDATE session SET settings = ? WHERE id = ?",
            ('{"system": "\\ud800 be brief"}', created["id"]),
        )
    listed = httpx.get(node.url + "/api/sessions")
    assert listed.status_code == 200 and created["id"] in listed.text
    loaded = httpx.get(f"{node.url}/api/sessions/{created['id']}")
    assert loaded.status_code == 200 and "be brief" in loaded.json()["settings"]["system"]
    # and none can be stored now: strict UTF-8 at the door
    r = httpx.post(
        node.url + "/api/sessions",
        content=b'{"model": "org/tiny", "settings": {"system": "\\ud800"}}',
    )
    assert r.status_code == 400


NODE_JSON_ROUTES = [
    ("POST", "/api/chat"),
    ("POST", "/api/generate"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("POST", "/api/show"),
    ("DELETE", "/api/delete"),
    ("POST", "/api/pull"),
    ("POST", "/api/stop"),
    ("POST", "/api/sessions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
]


@pytest.mark.parametrize(("method", "path"), NODE_JSON_ROUTES)
def test_9_bodies_that_cannot_be_read_are_400s(node, method, path):
    deep = b'{"model": "org/tiny", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for body in (b'{"model": "\xff\xfe"}', deep, b'{"model": "org/tiny", "x": "\\ud800"}'):
        r = httpx.request(method, node.url + path, content=body)
        assert r.status_code == 400, (body[:40], r.text)
        err = r.json()["error"]
        assert isinstance(err, (str, dict)) and "internal" not in json.dumps(err)


@pytest.mark.parametrize(("method", "path"), NODE_JSON_ROUTES)
def test_9_an_empty_body_is_a_400_that_says_so(node, method, path):
    """No body, an empty one and one of blanks: Litestar and llmlb's own decoding see
    different ones first, and each says the same."""
    for body in (None, b"", b"  \n"):
        headers = {} if body is None else {"content-type": "application/json"}
        r = httpx.request(method, node.url + path, content=body, headers=headers)
        assert r.status_code == 400, (body, r.text)
        assert "request body is empty; send a JSON object" in r.text, (body, r.text)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/generate", {"model": "org/tiny", "prompt": "x", "images": 5}, "images"),
        ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": "x"}, "stream_options"),
        ("/api/embed", {"model": "org/tiny", "input": 5}, "input"),
        ("/api/chat", {"model": "ollama:" + "x" * 5000, "messages": CHAT["messages"]}, "model"),
    ],
)
def test_9_client_mistakes_are_400s_naming_the_field(node, path, body, field):
    r = httpx.post(node.url + path, json=body)
    assert r.status_code == 400, r.text
    assert field in json.dumps(r.json())


def test_9_the_router_answers_400_too_and_cools_no_node(tmp_path, tiny_gguf):
    router = ServerProcess(tmp_path / "router", kind="router", env=BEAT).start()
    node = start_node(
        tmp_path / "node", {"org/tiny": tiny_gguf}, env=BEAT, extra_args=("--router", router.url)
    )
    try:
        assert wait_for(lambda: "org/tiny" in httpx.get(router.url + "/v1/models").text)
        deep = b'{"model": "org/tiny", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        assert httpx.post(router.url + "/api/chat", content=deep).status_code == 400
        for body in (
            {"model": "org/tiny", "prompt": "x", "images": 5},
            {"model": "org/tiny", "prompt": "\xff"},
        ):
            r = httpx.post(router.url + "/api/generate", json=body)
            assert r.status_code in (200, 400), r.text
        nodes = httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
        assert [n["errors"] for n in nodes] == [0] and not nodes[0]["cooling_down"]
    finally:
        node.stop()
        router.stop()
