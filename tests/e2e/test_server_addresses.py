"""Where servers listen and what the commands say when they talk to the wrong kind of server:
`node serve` listens on LLMLB_HOST (as `ollama serve` on OLLAMA_HOST) and `router serve` on
LLMLB_ROUTER; a `router` command pointed at a node (or a `node` command at a router) says so."""

from __future__ import annotations

import os
import signal
import subprocess

import httpx
import pytest

from tests.e2e.conftest import start_node
from tests.support.procs import LLMLB, ServerProcess, free_port, run_cli, wait_for

pytestmark = pytest.mark.e2e


def serve_without_flags(kind: str, home, env: dict) -> subprocess.Popen:
    """`llmlb KIND serve` with no --host or --port, as a person types it."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home.parent / f"{kind}-serve.log", "ab") as log:
        return subprocess.Popen(
            [*LLMLB, kind, "serve"],
            env={**os.environ, "LLMLB_HOME": str(home), "LLMLB_THREADS": "1", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def answers(url: str) -> str | None:
    try:
        return httpx.get(url + "/", timeout=1).text
    except httpx.HTTPError:
        return None


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(30)


@pytest.mark.parametrize(
    "form", ["{port}", ":{port}", "127.0.0.1:{port}", "http://localhost:{port}"]
)
def test_node_serve_listens_where_llmlb_host_says(tmp_path, form):
    port = free_port()
    env = {"LLMLB_HOST": form.format(port=port)}
    proc = serve_without_flags("node", tmp_path / "home", env)
    try:
        assert wait_for(lambda: answers(f"http://127.0.0.1:{port}") == "llmlb is running", 60)
        r = run_cli("node", "list", env={**os.environ, **env})  # the clients find it there too
        assert r.returncode == 0 and r.stdout.startswith("NAME"), r.stderr
    finally:
        assert stop(proc) == 0


def test_router_serve_listens_where_llmlb_router_says(tmp_path):
    port = free_port()
    proc = serve_without_flags("router", tmp_path / "home", {"LLMLB_ROUTER": f":{port}"})
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: answers(url) == "llmlb router is running", 60)
    finally:
        assert stop(proc) == 0


def test_flags_win_over_llmlb_host(tmp_path):
    port, other = free_port(), free_port()
    proc = subprocess.Popen(
        [*LLMLB, "node", "serve", "--port", str(port)],
        env={**os.environ, "LLMLB_HOME": str(tmp_path / "home"), "LLMLB_HOST": f":{other}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: answers(f"http://127.0.0.1:{port}") is not None, 60)
        assert answers(f"http://127.0.0.1:{other}") is None
    finally:
        assert stop(proc) == 0


def test_a_router_command_pointed_at_a_node_says_it_is_a_node(tmp_path):
    with ServerProcess(tmp_path / "node") as node:
        r = run_cli("router", "nodes", env={**os.environ, "LLMLB_ROUTER": node.address})
    assert r.returncode == 1
    assert r.stderr == (
        f"Error: the server at {node.address} is an llmlb node, not a router: point "
        "LLMLB_ROUTER at a router (`llmlb router serve`); LLMLB_HOST is for the "
        "`llmlb node ...` commands\n"
    )


def test_a_node_command_pointed_at_a_router_says_it_is_a_router(tmp_path, tiny_gguf):
    beat = {"LLMLB_HEARTBEAT_MS": "300"}
    with ServerProcess(tmp_path / "router", kind="router", env=beat) as router:
        node = start_node(
            tmp_path / "node",
            {"org/tiny": tiny_gguf},
            env=beat,
            extra_args=("--router", router.url),
        )
        try:

            def registered() -> bool:
                models = httpx.get(router.url + "/api/tags").json()["models"]
                return any(m["name"] == "org/tiny:latest" for m in models)

            assert wait_for(registered, 30), router.log()
            # the router answers /api/show for its nodes, but chat sessions live on a node
            r = run_cli(
                "node",
                "run",
                "org/tiny",
                "hi",
                env=router.client_env() | {"LLMLB_HOST": router.address},
            )
        finally:
            node.stop()
    assert r.returncode == 1
    assert r.stderr == (
        f"Error: the server at {router.address} is an llmlb router, not a node: point "
        "LLMLB_HOST at a node (`llmlb node serve`); LLMLB_ROUTER is for the "
        "`llmlb router ...` commands\n"
    )
