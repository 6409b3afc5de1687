"""Host and Origin checks on a real node: DNS rebinding and cross-site requests are refused,
while the CLI, the official clients and local web apps keep working (issue 12, item 5)."""

from __future__ import annotations

import httpx
import ollama
import openai
import pytest

from tests.e2e.conftest import NodeSpec, start_node
from tests.support.procs import run_cli

NODE = NodeSpec({"org/tiny": "tiny_gguf"}, env={"LLMLB_ORIGINS": "https://app.example.com"})


def test_a_foreign_host_is_refused(node):
    for host in ("evil.com", f"evil.com:{node.port}", "192.168.1.10", "127.0.0.1.evil.com"):
        r = httpx.get(node.url + "/api/tags", headers={"Host": host})
        assert r.status_code == 403, host
        assert "host" in r.json()["error"]


def test_loopback_hosts_are_accepted(node):
    for host in (
        f"127.0.0.1:{node.port}",
        f"localhost:{node.port}",
        "localhost",
        f"[::1]:{node.port}",
    ):
        assert httpx.get(node.url + "/api/tags", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize(
    "path", ["/api/generate", "/api/pull", "/api/delete", "/v1/chat/completions"]
)
def test_a_cross_site_post_does_not_run(node, path):
    """A page on another site can send a text/plain POST without a preflight; it must not run."""
    body = '{"model": "org/tiny", "prompt": "hi", "stream": false}'
    r = httpx.request(
        "DELETE" if path == "/api/delete" else "POST",
        node.url + path,
        content=body,
        headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
    )
    assert r.status_code == 403
    assert "origin" in str(r.json()["error"]).lower()
    assert "access-control-allow-origin" not in r.headers


def test_a_null_origin_is_refused(node):
    r = httpx.get(node.url + "/api/tags", headers={"Origin": "null"})
    assert r.status_code == 403


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:3000",
        "http://127.0.0.1:8080",
        "https://app.example.com",
        "tauri://localhost",
    ],
)
def test_allowed_origins_get_cors_headers(node, origin):
    r = httpx.get(node.url + "/api/tags", headers={"Origin": origin})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    pre = httpx.options(
        node.url + "/api/chat",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]


def test_preflight_from_another_site_is_refused(node):
    pre = httpx.options(
        node.url + "/api/chat",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 403


def test_the_cli_and_the_official_clients_are_accepted(node):
    listed = run_cli("node", "list", env=node.client_env())
    assert listed.returncode == 0 and "org/tiny" in listed.stdout
    models = openai.OpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0).models.list()
    assert "org/tiny" in [m.id for m in models.data]
    reply = ollama.Client(host=node.url).generate(
        model="org/tiny", prompt="hi", options={"num_predict": 2}
    )
    assert reply.done


def test_a_node_bound_to_every_address_accepts_any_host_but_not_any_origin(tmp_path, tiny_gguf):
    server = start_node(
        tmp_path / "home", {"org/tiny": tiny_gguf}, extra_args=("--host", "0.0.0.0")
    )
    try:
        assert (
            httpx.get(server.url + "/api/tags", headers={"Host": "node7.lan:32769"}).status_code
            == 200
        )
        r = httpx.post(
            server.url + "/api/generate",
            content='{"model": "org/tiny", "prompt": "hi"}',
            headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
        )
        assert r.status_code == 403
        same = httpx.get(
            server.url + "/api/tags",
            headers={"Host": "node7.lan:32769", "Origin": "http://node7.lan:32769"},
        )
        assert same.status_code == 200  # a page served from this very origin
    finally:
        assert server.stop() == 0, server.log()
