"""The node's side of the router: register, send heartbeats, say goodbye.

The node serves on its own whether or not the router is there; a heartbeat that fails is
retried at the next beat, which also re-registers the node when the router comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from urllib.parse import urlparse

import httpx
from anyio import to_thread

from llmlb import settings
from llmlb.store import catalog

log = logging.getLogger("llmlb.node")


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


def payload(state, host: str) -> dict:
    models = [
        {"name": m.name, "alias": m.alias}
        for m in catalog.all_models(state.catalog)
        if m.format == "GGUF"
    ]
    models += [{"name": e.display, "alias": None} for e in catalog.ollama_models()]
    scheduler = state.services.get("scheduler")
    snap = scheduler.snapshot() if scheduler is not None else {}
    return {
        "id": state.node_id,
        "host": host,
        "port": state.config.port,
        "status": "Running",
        "models": models,
        "loaded_models": sorted({m["name"] for m in snap.get("loaded_models", [])}),
        "in_flight": snap.get("in_flight", 0),
        "queued": snap.get("queued", 0),
        "vram_total_bytes": snap.get("vram_total_bytes", 0),
        "vram_used_bytes": snap.get("vram_used_bytes", 0),
        "gpu_name": snap.get("gpu_name"),
        "gpu_temperature": snap.get("gpu_temperature"),
        "uptime_secs": state.uptime_secs,
    }


async def start(state) -> None:
    url = (state.config.router_url or settings.router_url() or "").rstrip("/")
    if not url:
        return
    if "://" not in url:
        url = "http://" + url
    host = advertised_host(state.config.host, url)
    token = settings.node_token()
    headers = {"x-llmlb-node-token": token} if token else {}
    client = httpx.AsyncClient(base_url=url, timeout=5, headers=headers)

    async def beat_forever() -> None:
        failing = False
        while True:
            try:
                body = await to_thread.run_sync(payload, state, host)
                r = await client.post("/admin/nodes/heartbeat", json=body)
                if r.status_code >= 400:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
                if failing:
                    log.info("router at %s is reachable again; registered", url)
                failing = False
            except Exception as exc:  # the router being down must never stop the node
                if not failing:
                    log.warning(
                        "cannot reach the router at %s (%s); serving on, will retry", url, exc
                    )
                failing = True
            await asyncio.sleep(settings.heartbeat_secs())

    task = asyncio.create_task(beat_forever())
    log.info("registering with the router at %s as %s:%s", url, host, state.config.port)

    async def stop(state) -> None:
        task.cancel()
        with contextlib.suppress(httpx.HTTPError):
            await client.post(f"/admin/nodes/{state.node_id}/stopped", timeout=2)
        await client.aclose()

    state.on_stop(stop)
