"""The node's side of the router: register, send heartbeats, say goodbye.

The node serves on its own whether or not the router is there; a heartbeat that fails is
retried at the next beat, which also re-registers the node when the router comes back.
A node may be given several routers (`--router A,B`, routers that share one database): it
sends its heartbeats to one, and moves to the next when that one is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol
from urllib.parse import urlparse

import httpx
import msgspec
from anyio import to_thread
from sqlalchemy.engine import Engine

from llmlb import tasks
from llmlb.balancer.wire import Heartbeat, ModelRef
from llmlb.errors import BadRequest
from llmlb.store import catalog
from llmlb.validation import Format

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
    scheme, sep, rest = url.strip().partition("://")
    return f"{scheme}://{rest.rstrip('/')}" if sep else "http://" + scheme.rstrip("/")


def router_urls(value: str) -> list[str]:
    """`--router` / LLMLB_ROUTER_URL: one URL, or several separated by commas."""
    urls = [normalise_url(u) for u in value.split(",") if u.strip()]
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise BadRequest(f"--router: {url!r} is not an http(s) URL of a router")
    if not urls:
        raise BadRequest("--router needs the URL of at least one router")
    return list(dict.fromkeys(urls))


def _seconds(when: datetime | None) -> int | None:
    return max(0, int(when.timestamp())) if when is not None else None


class RouterLink:
    """Registration and heartbeats of one node with its routers (one at a time)."""

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
        prompt_counts: Callable[[], dict[str, int]] | None = None,
    ):
        self.urls = router_urls(url)
        self.current = 0  # the router the heartbeats go to
        self.node_id = node_id
        self.host = advertised_host(bind_host, self.urls[0])
        self.port = port
        self.catalog = catalog_engine
        self.engine = engine
        self.interval = interval
        self.prompt_counts = prompt_counts or dict  # cached/restored/computed prompt tokens
        self.started_at = time.time()
        headers = {TOKEN_HEADER: token} if token else {}
        self.client = httpx.AsyncClient(timeout=5, headers=headers)
        self._task: asyncio.Task | None = None
        self.failing = False

    def heartbeat(self) -> Heartbeat:
        models = [
            ModelRef(m.name, m.alias, _seconds(m.created_at))
            for m in catalog.all_models(self.catalog)
            if m.format == Format.GGUF
        ]
        models += [ModelRef(e.display, None, _seconds(e.modified)) for e in catalog.ollama_models()]
        snap = self.engine.snapshot()
        counts = self.prompt_counts()
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
            prefixes=snap.get("prefixes", b""),
            prompt_tokens_cached=counts.get("cached", 0),
            prompt_tokens_restored=counts.get("restored", 0),
            prompt_tokens_computed=counts.get("computed", 0),
        )

    @property
    def url(self) -> str:
        return self.urls[self.current]

    async def beat(self) -> None:
        """One heartbeat, to the current router, or to the next ones while routers are down.
        The routers being down or refusing us must never stop the node."""
        body = msgspec.json.encode(await to_thread.run_sync(self.heartbeat))
        for _ in range(len(self.urls)):
            url = self.url
            try:
                r = await self.client.post(
                    url + "/admin/nodes/heartbeat",
                    content=body,
                    headers={"content-type": "application/json"},
                )
            except httpx.HTTPError as exc:
                self._next(url, f"cannot reach the router at {url} ({exc!r})")
                continue
            if r.status_code >= 500:
                self._next(url, f"the router at {url} failed: HTTP {r.status_code}")
                continue
            if r.status_code >= 400:
                self._failed(
                    f"the router at {url} refused our heartbeat: HTTP {r.status_code} {r.text[:200]}"
                )
                return
            if self.failing:
                log.info("router at %s is reachable; registered", url)
            self.failing = False
            return

    def _next(self, url: str, message: str) -> None:
        """The router at `url` is down: the next one in the list gets the next try."""
        if len(self.urls) == 1:
            self._failed(message)
            return
        self.current = (self.current + 1) % len(self.urls)
        if not self.failing:
            log.warning("%s; trying the router at %s", message, self.url)
        self.failing = True

    def _failed(self, message: str) -> None:
        if not self.failing:
            log.warning("%s; serving on, will retry", message)
        self.failing = True

    async def _beat_forever(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        log.info(
            "registering with the router%s at %s as %s:%s",
            "s" if len(self.urls) > 1 else "",
            ", ".join(self.urls),
            self.host,
            self.port,
        )
        self._task = tasks.start("router heartbeat", self._beat_forever)

    async def stop(self) -> None:
        await tasks.stop(self._task)
        with contextlib.suppress(httpx.HTTPError):
            await self.client.post(f"{self.url}/admin/nodes/{self.node_id}/stopped", timeout=2)
        await self.client.aclose()
