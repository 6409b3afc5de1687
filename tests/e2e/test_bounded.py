"""Issue 23's cases on real server processes: no request, file or second process stalls a
server or grows it without limit (the router's own cases are in
tests/integration/test_router_bounds.py)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.e2e.conftest import start_node
from tests.support.fake_ollama import add_model
from tests.support.procs import ServerProcess, free_port, run_cli, wait_for

BEAT = {"LLMLB_HEARTBEAT_MS": "200"}


def peak_rss(server: ServerProcess) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


# -- 1: a field nobody reads is skipped, not built ------------------------------------------


def test_a_60_mib_ignored_field_costs_a_server_about_its_bytes(tmp_path):
    """On main, the 60 MiB became about 20 million Python lists: 1.5 GB on the node."""
    items = 20 * 1024 * 1024
    body = b'{"model": "org/none", "prompt": "hi", "x": [' + b"[]," * (items - 1) + b"[]]}"
    router = ServerProcess(tmp_path / "router", kind="router").start()
    node = start_node(tmp_path / "node", {})
    try:
        for server in (node, router):
            before = peak_rss(server)
            r = httpx.post(server.url + "/api/generate", content=body, timeout=120)
            assert r.status_code == 404 and "org/none" in r.json()["error"], r.text
            grown = peak_rss(server) - before
            # the body's own bytes, held by the HTTP server and the framework: a few copies
            assert grown < 4 * len(body), (server.kind, grown)
    finally:
        node.stop()
        router.stop()


# -- 7: one bad file of the ollama store ------------------------------------------------------


def _bad_store(root, tiny: bytes) -> dict[str, object]:
    """A good model, one whose params blob is nested 5,000 deep, and three bad manifests."""
    add_model(root, "good", tiny)
    deep = add_model(root, "deep", tiny, params={"stop": ["x"]})
    manifest = json.loads(deep.read_text())
    params = next(x for x in manifest["layers"] if x["mediaType"].endswith("params"))
    blob = root / "blobs" / params["digest"].replace(":", "-")
    blob.write_bytes(b'{"stop": ' + b"[" * 5000 + b"]" * 5000 + b"}")  # digest no longer matches
    bad = {"deep params": blob}
    for name, content in (
        ("empty-list", []),
        ("bad-layer", {"layers": ["x"]}),
        ("huge-size", {"layers": [{**manifest["layers"][0], "size": "1e400"}]}),
    ):
        path = root / "manifests" / "registry.ollama.ai" / "library" / name / "latest"
        path.parent.mkdir(parents=True)
        text = json.dumps(content).replace('"1e400"', "1e400")
        path.write_text(text)
        bad[name] = path
    return bad


def test_one_bad_ollama_file_is_skipped_and_the_node_goes_on(tmp_path, tiny_gguf):
    store = tmp_path / "ollama"
    bad = _bad_store(store, tiny_gguf.read_bytes())
    router = ServerProcess(tmp_path / "router", kind="router", env=BEAT).start()
    env = {**BEAT, "OLLAMA_MODELS": str(store)}
    node = start_node(tmp_path / "node", {}, env=env, extra_args=("--router", router.url))
    try:
        for _ in range(2):  # read twice: still one warning line per bad file
            tags = httpx.get(node.url + "/api/tags")
            assert tags.status_code == 200, tags.text
            names = {m["name"] for m in tags.json()["models"]}
            assert names == {"ollama:good", "ollama:deep"}
            assert httpx.get(node.url + "/v1/models").status_code == 200
        listed = run_cli("node", "list", env=node.client_env())
        assert listed.returncode == 0 and "ollama:good" in listed.stdout, listed.stderr
        shown = run_cli("node", "show", "ollama:deep", env=node.client_env())
        assert shown.returncode == 0, shown.stderr
        r = httpx.post(node.url + "/api/show", json={"model": "ollama:goood"})
        assert r.status_code == 404 and "did you mean" in r.json()["error"]
        ask = {"model": "ollama:deep", "prompt": "hi", "raw": True, "stream": False}
        r = httpx.post(node.url + "/api/generate", json={**ask, "options": {"num_predict": 2}})
        assert r.status_code == 200, r.text
        r = httpx.post(node.url + "/api/pull", json={"model": "ollama:deep", "stream": False})
        assert r.status_code < 500, r.text
        # the heartbeat carries the store: the router lists the node's good models
        assert wait_for(
            lambda: "ollama:good" in httpx.get(router.url + "/admin/cluster/models").text
        )
        node_row = httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"][0]
        assert node_row["status"] == "online", node_row
        log = node.log_path.read_text()
        for path in bad.values():
            assert log.count(f"skipping {path} in the ollama store") == 1, log
        assert "Traceback" not in log
    finally:
        node.stop()
        router.stop()


# -- 8: one node per LLMLB_HOME ---------------------------------------------------------------


def test_a_second_node_on_the_same_home_exits_at_once(tmp_path):
    home = tmp_path / "home"
    first = start_node(home, {})
    try:
        assert first.proc is not None
        second = run_cli("node", "serve", "--port", str(free_port()), env=first.env, timeout=60)
        assert second.returncode == 1
        assert second.stderr == (
            f"Error: another llmlb node is using {home} (pid {first.proc.pid})\n"
        )
    finally:
        assert first.stop() == 0
    again = start_node(home, {})  # the lock went with the process
    assert again.stop() == 0


# -- 9: slow clients and too many connections ------------------------------------------------


def _closed(sock: socket.socket) -> bytes:
    """All the server sends until it closes the connection (30 s of margin, not a timing)."""
    sock.settimeout(30)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.mark.parametrize("kind", ["node", "router"])
def test_slow_and_idle_clients_are_cut_off(tmp_path, kind):
    env = {"LLMLB_READ_TIMEOUT_SECS": "1"}
    server = (
        start_node(tmp_path / "home", {}, env=env)
        if kind == "node"
        else ServerProcess(tmp_path / "home", kind="router", env=env).start()
    )
    try:
        idle = socket.create_connection(("127.0.0.1", server.port))
        slow_head = socket.create_connection(("127.0.0.1", server.port))
        slow_head.sendall(b"POST /api/chat HTTP/1.1\r\nhost: 127.0.0.1\r\n")  # no blank line
        slow_body = socket.create_connection(("127.0.0.1", server.port))
        slow_body.sendall(
            b"POST /api/chat HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n" + b'{"model": "'
        )
        for sock, part in ((idle, b"headers"), (slow_head, b"headers"), (slow_body, b"body")):
            answer = _closed(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
            assert b"request " + part + b" not received in time" in answer
            sock.close()
        huge = socket.create_connection(("127.0.0.1", server.port))
        huge.sendall(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: " + b"a" * 70_000)
        assert _closed(huge).startswith(b"HTTP/1.1 431")
        huge.close()
        assert httpx.get(server.url + "/").status_code == 200  # and it serves on
    finally:
        server.stop()


def test_connections_past_the_cap_are_refused_until_some_close(tmp_path):
    env = {"LLMLB_MAX_CONNECTIONS": "4", "LLMLB_READ_TIMEOUT_SECS": "120"}
    router = ServerProcess(tmp_path / "home", kind="router", env=env).start()
    try:
        held = [socket.create_connection(("127.0.0.1", router.port)) for _ in range(4)]

        # the server has taken all four (a request on a fifth is how to know: retry until)
        def refused() -> bool:
            r = httpx.get(router.url + "/", headers={"connection": "close"})
            return r.status_code == 503 and "too many open connections" in r.text

        assert wait_for(refused, 30)
        for sock in held:
            sock.close()
        assert wait_for(lambda: httpx.get(router.url + "/").status_code == 200, 30)
    finally:
        router.stop()


def test_a_client_that_takes_its_time_inside_the_limit_is_served(tmp_path):
    """The body deadline is on silence, not on the whole body: bytes that keep coming are read."""
    env = {"LLMLB_READ_TIMEOUT_SECS": "2"}
    node = start_node(tmp_path / "home", {}, env=env)
    try:
        body = json.dumps({"model": "org/none", "prompt": "hi"}).encode()
        with socket.create_connection(("127.0.0.1", node.port)) as sock:
            sock.sendall(
                b"POST /api/generate HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
            )
            for i in range(0, len(body), 4):  # 4 bytes every 0.3 s: about 3 s in all
                sock.sendall(body[i : i + 4])
                time.sleep(0.3)
            sock.settimeout(30)
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
    finally:
        node.stop()
