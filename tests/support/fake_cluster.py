"""Fake streaming backends registered with a router as nodes: for router tests and bench/router.py.

Backends are tests/support/fake_backend.py processes (fixed token schedule); `keep_registered`
sends heartbeats for them as a node would.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.support.procs import free_port

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
    for p in ports:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{p}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
    return ports, procs


def keep_registered(router_url: str, ports: list[int], stop: threading.Event) -> None:
    """Heartbeats for the fake backends every second until `stop` is set."""
    while not stop.is_set():
        for p in ports:
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
        stop.wait(1.0)
