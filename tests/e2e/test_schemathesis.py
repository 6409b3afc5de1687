"""Property-based fuzzing of both servers from their own OpenAPI documents: no request a client
can make may answer 5xx (schemathesis's not_a_server_error check).

Bounded for CI: a fixed seed, at most EXAMPLES cases per operation and MAX_SECS per server.
Pulls go to an empty local Hub stand-in, so they answer 404 instead of reaching the network.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from tests.e2e.conftest import start_node
from tests.support.hub_server import HubServer
from tests.support.procs import ServerProcess, wait_for

EXAMPLES = 15
MAX_SECS = 90
SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]


def fuzz(base_url: str, report: Path, *extra: str) -> subprocess.CompletedProcess:
    result = _run_schemathesis(base_url, report, *extra)
    summary = [line.strip() for line in result.stdout.splitlines() if "generated," in line]
    print(f"schemathesis on {base_url}: {summary}")  # pytest -rP shows it
    return result


def _run_schemathesis(base_url: str, report: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *SCHEMATHESIS,
            "run",
            f"{base_url}/schema/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(EXAMPLES),
            "--max-time",
            str(MAX_SECS),
            "--seed",
            "20261125",
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=MAX_SECS * 3,
        cwd=report.parent,  # schemathesis keeps a cache in its working directory
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server


def test_no_request_makes_the_node_fail(tmp_path, tiny_gguf, hub):
    node = start_node(tmp_path / "home", {"org/tiny": tiny_gguf}, env={"HF_ENDPOINT": hub.url})
    try:
        result = fuzz(node.url, tmp_path / "node.xml")
        assert result.returncode == 0, result.stdout[-6000:] + node.log()
        assert httpx.get(node.url + "/api/version").status_code == 200  # still serving
    finally:
        assert node.stop() == 0, node.log()


def test_no_request_makes_the_router_fail(tmp_path, tiny_gguf, hub):
    # With the node token set, fuzzed heartbeats are refused (401) instead of registering
    # made-up nodes, to which requests would then rightly fail with 503. Pulls the router
    # sends its node go to the empty Hub stand-in (404), as on the node.
    token = {"LLMLB_NODE_TOKEN": "fuzz-token"}
    router = ServerProcess(tmp_path / "router-home", kind="router", env=token).start()
    node = start_node(
        tmp_path / "node-home",
        {"org/tiny": tiny_gguf},
        env={"LLMLB_HEARTBEAT_MS": "200", "HF_ENDPOINT": hub.url, **token},
        extra_args=("--router", router.url),
    )
    try:
        assert wait_for(lambda: "org/tiny" in httpx.get(router.url + "/admin/cluster/models").text)
        result = fuzz(router.url, tmp_path / "router.xml")
        assert result.returncode == 0, result.stdout[-6000:] + router.log()
        # fuzzed heartbeats (from loopback, so accepted) did not break the registry or the proxy
        models = httpx.get(router.url + "/admin/cluster/models").json()["models"]
        assert any(m["model"] == "org/tiny" and m["status"] == "available" for m in models)
        ask = {"model": "org/tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
        r = httpx.post(router.url + "/api/generate", json=ask, timeout=60)
        assert r.status_code in (200, 503), r.text
    finally:
        node.stop()
        assert router.stop() == 0, router.log()


class _Broken(BaseHTTPRequestHandler):
    """An API whose one operation answers 500: what the fuzzing above must catch."""

    SPEC: ClassVar[dict] = {
        "openapi": "3.1.0",
        "info": {"title": "broken", "version": "1"},
        "paths": {
            "/boom": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"x": {"type": "integer"}},
                                    "required": ["x"],
                                }
                            }
                        },
                    },
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/schema/openapi.json":
            self._answer(200, json.dumps(self.SPEC).encode())
        else:
            self._answer(404, b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self._answer(500, b'{"error": "internal error"}')


def test_the_fuzzing_fails_on_a_server_error(tmp_path):
    """The run above, with its options, against an API that answers 500: it must fail, or
    the two tests above could not."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        result = fuzz(url, tmp_path / "broken.xml", "--max-failures", "1", "--no-shrink")
    finally:
        server.shutdown()
    assert result.returncode != 0, result.stdout[-3000:]
    assert "Server error" in result.stdout, result.stdout[-3000:]
