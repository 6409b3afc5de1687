"""Fake streaming backends registered with a router as nodes: for router tests and bench/router.py.

Backends are tests/support/fake_backend.py processes (fixed token schedule); `keep_registered`
sends heartbeats for them as a node would.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from tests.support.procs import ServerProcess, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fake/model"


def start_backends(n: int, *args: str) -> tuple[list[int], list[subprocess.Popen]]:
    """`n` fake backends; `args` go to each (see tests/support/fake_backend.py)."""
    ports = [free_port() for _ in range(n)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_backend", str(p), *args], cwd=ROOT
        )
        for p in ports
    ]
    for p in ports:  # listening (a --silent one answers nothing, so no request is made)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", p), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
    return ports, procs


def keep_registered(router_url: str, ports: list[int], stop: threading.Event) -> None:
    """Heartbeats for the fake backends every second until `stop` is set."""
    while not stop.is_set():
        for p in ports:
            with contextlib.suppress(httpx.HTTPError):  # router starting or gone: beat again
                _beat(router_url, p)
        stop.wait(1.0)


def _beat(router_url: str, p: int) -> None:
    httpx.post(
        router_url + "/admin/nodes/heartbeat",
        json={
            "id": f"fake-{p}",
            "host": "127.0.0.1",
            "port": p,
            "models": [{"name": MODEL, "alias": None}],
            "loaded_models": [MODEL],
        },
    )


@contextmanager
def fake_router(
    tmp_path: Path,
    groups: list[tuple[int, tuple[str, ...]]],
    env: dict | None = None,
    dead: int = 0,
) -> Iterator[tuple[ServerProcess, list[int]]]:
    """A router and fake nodes, (router, the nodes' ports): `groups` is [(count, fake_backend
    args)], and `dead` more nodes are registered on ports where nothing listens."""
    ports, procs = [], []
    for count, args in groups:
        p, pr = start_backends(count, *args)
        ports += p
        procs += pr
    ports += [free_port() for _ in range(dead)]
    router = ServerProcess(tmp_path / "router", kind="router", env=env).start()
    stop = threading.Event()
    threading.Thread(target=keep_registered, args=(router.url, ports, stop), daemon=True).start()
    try:
        assert wait_for(lambda: len(router_nodes(router)) == len(ports))
        yield router, ports
    finally:
        stop.set()
        router.stop()
        for p in procs:
            p.terminate()
            p.wait(10)


def router_nodes(router: ServerProcess) -> list[dict]:
    keys = router.env.get("LLMLB_API_KEYS", "")
    headers = {"X-API-Key": keys.split(",")[0]} if keys else {}
    return httpx.get(router.url + "/admin/cluster/nodes", headers=headers).json()["nodes"]


def posts_seen(ports: list[int]) -> int:
    """POSTs the fake backends on `ports` received, all together (dead ports count none)."""
    seen = 0
    for p in ports:
        with suppress(httpx.ConnectError):
            seen += httpx.get(f"http://127.0.0.1:{p}/seen", timeout=5).json()["posts"]
    return seen
