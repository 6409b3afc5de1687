"""Issue 23 and the router part of issue 22, through a real router in front of real HTTP
servers standing in for nodes (tests/support/fake_backend.py): no client, body or node makes
the router hold memory, connections or a node's places without limit, and a request a node
failed on is never spread to other nodes."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.support.fake_cluster import MODEL, fake_router, posts_seen, router_nodes
from tests.support.procs import wait_for

CHAT = "/v1/chat/completions"


def body(stream: bool = False, tokens: int = 4) -> dict:
    return {"model": MODEL, "messages": [], "max_tokens": tokens, "stream": stream}


def all_free(router) -> bool:
    return all(n["in_flight"] == 0 for n in router_nodes(router))


# -- 11 (issue 22): a poison request goes to one node, and a busy one to two at most ----------


def test_a_500_is_answered_and_sent_to_no_other_node(tmp_path):
    with fake_router(tmp_path, [(3, ("--status", "500"))]) as (router, ports):
        for stream in (False, True):
            r = httpx.post(router.url + CHAT, json=body(stream), timeout=60)
            assert r.status_code == 500 and r.json() == {"error": "failing on purpose"}
        assert posts_seen(ports) == 2  # one node per request: the others never saw them
        # the node answered: it works, so it does not cool down (the error was the request's)
        listed = router_nodes(router)
        assert not any(n["cooling_down"] for n in listed), listed
        assert sum(n["errors"] for n in listed) == 2 and all_free(router)


def test_a_connection_dropped_after_the_request_is_answered_not_re_sent(tmp_path):
    with fake_router(tmp_path, [(3, ("--drop",))]) as (router, ports):
        r = httpx.post(router.url + "/api/chat", json=body(), timeout=60)
        assert r.status_code == 502
        assert "closed the connection after it received the request" in r.json()["error"]
        assert posts_seen(ports) == 1
        assert wait_for(lambda: all_free(router), 5)


def test_a_busy_node_sends_the_request_to_one_more_node_at_most(tmp_path):
    with fake_router(tmp_path, [(3, ("--status", "503"))]) as (router, ports):
        r = httpx.post(router.url + CHAT, json=body(), timeout=60)
        assert r.status_code == 503 and "HTTP 503" in r.json()["error"]["message"]
        assert posts_seen(ports) == 2


def test_an_unreachable_node_is_skipped_for_one_that_answers(tmp_path):
    with fake_router(tmp_path, [(1, ())], dead=1) as (router, ports):
        for _ in range(3):
            r = httpx.post(router.url + CHAT, json=body(stream=True), timeout=60)
            assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
        assert posts_seen(ports) == 3


# -- 9: a node that takes the connection and says nothing -----------------------------------


def test_a_silent_node_is_found_out_and_frees_its_place(tmp_path):
    env = {"LLMLB_NODE_FIRST_BYTE_SECS": "1"}
    with fake_router(tmp_path, [(1, ("--silent",))], env) as (router, _ports):
        r = httpx.post(router.url + "/api/generate", json=body(), timeout=60)
        assert r.status_code == 504 and "stopped answering" in r.json()["error"]
        assert all_free(router) and router_nodes(router)[0]["errors"] == 1


def test_a_node_slow_to_its_first_byte_but_alive_is_waited_for(tmp_path):
    env = {"LLMLB_NODE_FIRST_BYTE_SECS": "1"}
    # three seconds before its first token (a model loading): its `/` answers meanwhile
    with fake_router(tmp_path, [(1, ("--ttft-ms", "3000"))], env) as (router, _ports):
        r = httpx.post(router.url + CHAT, json=body(stream=True), timeout=60)
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")


# -- 3: answers pass through, within a cap ----------------------------------------------------


def test_an_answer_passes_through_before_the_node_has_sent_all_of_it(tmp_path):
    size = 8 * 1024 * 1024
    with fake_router(tmp_path, [(1, ("--answer-bytes", str(size)))]) as (router, ports):
        with httpx.stream("POST", router.url + CHAT, json=body(), timeout=30) as r:
            assert r.status_code == 200 and int(r.headers["content-length"]) == size
            chunks = r.iter_raw()
            got = len(next(chunks))  # the node holds back its second half until released
            assert got > 0
            httpx.get(f"http://127.0.0.1:{ports[0]}/release")
            got += sum(len(c) for c in chunks)
        assert got == size
        assert wait_for(lambda: all_free(router), 5)


def test_an_answer_larger_than_the_cap_is_refused_unread(tmp_path):
    with fake_router(tmp_path, [(1, ("--claim-length", str(2 << 30)))]) as (router, _ports):
        r = httpx.post(router.url + CHAT, json=body(), timeout=30)
        assert r.status_code == 502 and "more than the router passes on" in r.text
        assert wait_for(lambda: all_free(router), 5)


def _listing_file(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("route", ["/api/tags", "/api/ps"])
def test_one_bad_node_drops_out_of_a_fan_out_not_the_answer(tmp_path, route):
    good = json.dumps({"models": [{"name": "org/good", "details": {"families": ["x"]}}]})
    deep = b'{"models": [{"name": "org/deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    entry = {"name": "org/big", "model": "org/big", "details": {"pad": "p" * 1000}}
    big = json.dumps({"models": [entry] * 10_000}).encode()  # 10 MB of valid entries
    groups = [
        (1, ("--listing", _listing_file(tmp_path, "good.json", good.encode()))),
        (1, ("--listing", _listing_file(tmp_path, "deep.json", deep))),
        (1, ("--listing", _listing_file(tmp_path, "big.json", big))),
        (1, ("--silent",)),
    ]
    with fake_router(tmp_path, groups) as (router, _ports):
        r = httpx.get(router.url + route, timeout=60)
        assert r.status_code == 200, r.text
        assert {m["name"] for m in r.json()["models"]} == {"org/good"}
        assert "left out of " + route in router.log()


# -- 2: the key before the body ------------------------------------------------------------


def test_a_request_without_the_key_is_refused_before_its_body_is_read(tmp_path):
    env = {"LLMLB_API_KEYS": "secret"}
    with fake_router(tmp_path, [(1, ())], env) as (router, ports):
        with socket.create_connection(("127.0.0.1", router.port)) as sock:
            # a 60 MB body announced, 1 KB of it sent: the answer must not wait for the rest
            sock.sendall(
                b"POST /api/generate HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                b"content-type: application/json\r\ncontent-length: 60000000\r\n\r\n"
                + b'{"model": "fake/model", "x": "'
                + b"a" * 1000
            )
            sock.settimeout(30)
            head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 401"), head[:200]
        assert b"connection: close" in head.lower()
        assert posts_seen(ports) == 0
