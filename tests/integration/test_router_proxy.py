"""The balancer's proxy with a real router in front of fake streaming backends
(tests/support/fake_backend.py) registered as nodes: spread, retries, the wait queue,
client disconnects and error answers."""

import asyncio
import socket
import threading
from collections import Counter
from contextlib import contextmanager

import httpx
import pytest

from tests.support.fake_cluster import MODEL, fake_router, router_nodes
from tests.support.procs import metric, wait_for

CHAT = "/v1/chat/completions"


@contextmanager
def fake_cluster(tmp_path, groups: list[tuple[int, tuple[str, ...]]], env: dict | None = None):
    """A router and fake nodes: `groups` is [(count, fake_backend args)]."""
    with fake_router(tmp_path, groups, env) as (router, _ports):
        yield router


def nodes(router) -> list[dict]:
    return router_nodes(router)


def queue_depth(router) -> int:
    return int(metric(router.url, "llmlb_router_queue_depth"))


def body(tokens=8, stream=True) -> dict:
    return {"model": MODEL, "messages": [], "max_tokens": tokens, "stream": stream}


def test_sixty_concurrent_streams_spread_evenly(tmp_path):
    with fake_cluster(tmp_path, [(3, ())]) as router:

        async def burst(n):
            async with httpx.AsyncClient(timeout=60) as client:

                async def one(i):
                    r = await client.post(router.url + CHAT, json=body())
                    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
                    return r.headers["x-llmlb-node"]

                return Counter(await asyncio.gather(*(one(i) for i in range(n))))

        spread = asyncio.run(burst(60))
        assert len(spread) == 3 and max(spread.values()) <= 30, spread
        assert all(n["in_flight"] == 0 for n in nodes(router))  # every claim was released


def test_a_busy_node_is_retried_before_the_first_byte(tmp_path):
    with fake_cluster(tmp_path, [(1, ("--status", "503")), (1, ())]) as router:
        for stream in (True, False):
            for _ in range(4):
                r = httpx.post(router.url + CHAT, json=body(stream=stream))
                assert r.status_code == 200, r.text
        # the failing node cools down after a failure (1 s, then 2 s...) instead of being every
        # request's first try: without that it would have failed all 8 (with it, failing all 8
        # would take over a minute of cool-downs, however slow the machine)
        by_errors = sorted(n["errors"] for n in nodes(router))
        assert by_errors[0] == 0 and 1 <= by_errors[1] < 8, by_errors

        def seen_cooling() -> bool:  # its cool-down may have run out while this machine was busy
            assert httpx.post(router.url + CHAT, json=body()).status_code == 200
            return any(n["errors"] and n["cooling_down"] for n in nodes(router))

        assert wait_for(seen_cooling)
        assert all(n["in_flight"] == 0 for n in nodes(router))


def test_every_node_failing_is_503(tmp_path):
    with fake_cluster(tmp_path, [(2, ("--status", "503"))]) as router:
        r = httpx.post(router.url + "/api/chat", json=body())
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"].startswith(f"every node with '{MODEL}' failed: 127.0.0.1:")


def test_client_leaving_mid_stream_frees_the_node(tmp_path):
    with fake_cluster(tmp_path, [(1, ("--tps", "10", "--tokens", "100"))]) as router:
        with httpx.stream("POST", router.url + CHAT, json=body(100)) as r:
            chunks = r.iter_raw()  # held: a dropped iterator would close the response
            assert next(chunks).startswith(b"data: ")
            assert nodes(router)[0]["in_flight"] == 1
        # the connection is closed: the router must notice without any further read or write
        assert wait_for(lambda: nodes(router)[0]["in_flight"] == 0, 3), nodes(router)
        # recorded as nginx does: 499, the client closed the request
        assert wait_for(
            lambda: (
                [
                    q["status"]
                    for q in httpx.get(router.url + "/admin/cluster/requests").json()["requests"]
                ]
                == [499]
            ),
            3,
        )
        minute = httpx.get(router.url + "/admin/cluster/timeseries?minutes=2").json()["minutes"]
        assert sum(m["requests"] for m in minute) == 1 and sum(m["errors"] for m in minute) == 0
        assert nodes(router)[0]["errors"] == 0  # not the node's fault either


def test_wait_queue_bounds_and_client_leaving_the_queue(tmp_path):
    env = {
        "LLMLB_NODE_MAX_IN_FLIGHT": "1",
        "LLMLB_ROUTER_MAX_QUEUE": "1",
        "LLMLB_ROUTER_QUEUE_TIMEOUT": "3",
    }
    with fake_cluster(tmp_path, [(1, ("--tps", "5", "--tokens", "100"))], env) as router:
        with httpx.stream("POST", router.url + CHAT, json=body(100), timeout=30) as holder:
            assert holder.status_code == 200
            # a waiting client that gives up leaves the queue at once
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(router.url + CHAT, json=body(), timeout=httpx.Timeout(0.5, connect=2))
            assert wait_for(lambda: queue_depth(router) == 0, 1.5)
            waited = {}
            waiter = threading.Thread(
                target=lambda: waited.update(
                    r=httpx.post(router.url + "/api/generate", json=body(), timeout=30)
                )
            )
            waiter.start()
            assert wait_for(lambda: queue_depth(router) == 1)
            full = httpx.post(router.url + CHAT, json=body())
            assert full.status_code == 429 and full.headers["retry-after"] == "1"
            assert full.json()["error"]["type"] == "rate_limit_error"
            waiter.join(10)
            timed_out = waited["r"]
            assert timed_out.status_code == 503 and timed_out.headers["retry-after"] == "1"
            assert "stayed busy for 3s" in timed_out.json()["error"]
        assert wait_for(lambda: nodes(router)[0]["in_flight"] == 0, 3)


def _read_response(sock: socket.socket) -> bytes:
    """Head and body of one HTTP response: they may come in separate segments (they do when
    the machine is busy), so read until the body has its content-length."""
    sock.settimeout(30)
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
            if len(body) >= int(fields.get(b"content-length", 0)):
                return data
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def test_bad_requests_get_clear_errors(tmp_path):
    with fake_cluster(tmp_path, [(1, ())]) as router:
        r = httpx.get(router.url + CHAT)
        assert (
            r.status_code == 405
            and r.json()["error"]["message"] == f"method GET is not allowed on {CHAT}"
        )
        r = httpx.post(router.url + "/api/chat", content=b"{bad")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        r = httpx.post(router.url + CHAT, json={"messages": []})
        assert r.status_code == 400 and r.json()["error"]["message"].startswith(
            "field 'model' must be a non-empty string"
        )
        r = httpx.post(router.url + "/api/generate", json={"model": "ghost"})
        assert r.status_code == 404 and r.json() == {"error": "model 'ghost' not found"}
        # a body over the limit is refused from its header, before it is read
        with socket.create_connection(("127.0.0.1", router.port)) as sock:
            sock.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                b"content-length: 100000000\r\n\r\n"
            )
            head = _read_response(sock)
        assert head.startswith(b"HTTP/1.1 413") and b"request body is too large" in head
        assert all(n["in_flight"] == 0 and n["requests"] == 0 for n in nodes(router))
