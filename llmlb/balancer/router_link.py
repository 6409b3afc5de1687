"""The node's side of the router: register, send heartbeats, say goodbye.

The node serves on its own whether or not the router is there; a heartbeat that fails is
retried at the next beat, which also re-registers the node when the router comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Protocol
from urllib.parse import urlparse

import httpx
import msgspec
from anyio import to_thread
from sqlalchemy.engine import Engine

from llmlb import tasks
from llmlb.balancer.wire import Heartbeat, ModelRef
from llmlb.store import catalog

log = logging.getLogger("llmlb.node")
TOKEN_HEADER = "x-llmlb-node-token"


class Snapshot(Protocol):
    """What the link reads from the engine for each beat (the Scheduler provides it)."""

    def snapshot(self) -> dict: ...


def advertised_host(bind_host: str, router_url: str) -> str:
    """The address the router can reach us at: the bind address, or for 0.0.0.0 the local
    address of the route towards the router."""
    if bind_host not in ("0.0.0.0", "::", ""):
        return bind_host
    target = urlparse(router_url).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else "http://" + url


class RouterLink:
    """Registration and heartbeats of one node with one router."""

    def __init__(
        self,
        url: str,
        node_id: str,
        bind_host: str,
        port: int,
        catalog_engine: Engine,
        engine: Snapshot,
        interval: float,
        token: str | None = None,
    ):
        self.url = normalise_url(url)
        self.node_id = node_id
        self.host = advertised_host(bind_host, self.url)
        self.port = port
        self.catalog = catalog_engine
        self.engine = engine
        self.interval = interval
        self.started_at = time.time()
        headers = {TOKEN_HEADER: token} if token else {}
        self.client = httpx.AsyncClient(base_url=self.url, timeout=5, headers=headers)
        self._task: asyncio.Task | None = None
        self.failing = False

    def heartbeat(self) -> Heartbeat:
        models = [
            ModelRef(m.name, m.alias)
            for m in catalog.all_models(self.catalog)
            if m.format == "GGUF"
        ]
        models += [ModelRef(e.display) for e in catalog.ollama_models()]
        snap = self.engine.snapshot()
        return Heartbeat(
            id=self.node_id,
            host=self.host,
            port=self.port,
            models=models,
            loaded_models=sorted({m["name"] for m in snap.get("loaded_models", [])}),
            in_flight=snap.get("in_flight", 0),
            queued=snap.get("queued", 0),
            vram_total_bytes=snap.get("vram_total_bytes", 0),
            vram_used_bytes=snap.get("vram_used_bytes", 0),
            gpu_name=snap.get("gpu_name"),
            gpu_temperature=snap.get("gpu_temperature"),
            uptime_secs=int(time.time() - self.started_at),
        )

    async def beat(self) -> None:
        """One heartbeat. The router being down or refusing us must never stop the node."""
        body = msgspec.json.encode(await to_thread.run_sync(self.heartbeat))
        try:
            r = await self.client.post(
                "/admin/nodes/heartbeat",
                content=body,
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            self._failed(f"cannot reach the router at {self.url} ({exc!r})")
            return
        if r.status_code >= 400:
            self._failed(
                f"the router at {self.url} refused our heartbeat: HTTP {r.status_code} {r.text[:200]}"
            )
            return
        if self.failing:
            log.info("router at %s is reachable again; registered", self.url)
        self.failing = False

    def _failed(self, message: str) -> None:
        if not self.failing:
            log.warning("%s; serving on, will retry", message)
        self.failing = True

    async def _beat_forever(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        log.info("registering with the router at %s as %s:%s", self.url, self.host, self.port)
        self._task = tasks.start("router heartbeat", self._beat_forever)

    async def stop(self) -> None:
        await tasks.stop(self._task)
        with contextlib.suppress(httpx.HTTPError):
            await self.client.post(f"/admin/nodes/{self.node_id}/stopped", timeout=2)
        await self.client.aclose()
