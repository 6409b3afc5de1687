"""The load balancer's Litestar app: node registry, balanced proxy, cluster views, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from anyio import to_thread
from litestar import Litestar, MediaType, Request, get, post

from llmlb import settings
from llmlb.balancer import auth, proxy
from llmlb.balancer.history import History
from llmlb.balancer.registry import Registry
from llmlb.errors import Unauthorized
from llmlb.server.body import json_object
from llmlb.server.errors import exception_handlers
from llmlb.store import db

log = logging.getLogger("llmlb.router")


class RouterMetrics:
    def __init__(self):
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # node -> [sum ms, count]

    def observe(self, node_id: str, status: int, duration_ms: float) -> None:
        key = (node_id, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        s = self.latency.setdefault(node_id, [0.0, 0])
        s[0] += duration_ms
        s[1] += 1

    def render(self, registry: Registry) -> str:
        lines = ["# TYPE llmlb_router_requests_total counter"]
        for (node, status), n in sorted(self.requests.items()):
            lines.append(f'llmlb_router_requests_total{{node="{node[:8]}",status="{status}"}} {n}')
        lines.append("# TYPE llmlb_router_errors_total counter")
        for entry in registry.nodes.values():
            lines.append(f'llmlb_router_errors_total{{node="{entry.id[:8]}"}} {entry.errors}')
        lines.append("# TYPE llmlb_router_in_flight gauge")
        for entry in registry.nodes.values():
            lines.append(f'llmlb_router_in_flight{{node="{entry.id[:8]}"}} {entry.in_flight}')
        lines.append("# TYPE llmlb_router_latency_ms summary")
        for node, (total, count) in sorted(self.latency.items()):
            lines.append(f'llmlb_router_latency_ms_sum{{node="{node[:8]}"}} {total:.3f}')
            lines.append(f'llmlb_router_latency_ms_count{{node="{node[:8]}"}} {count}')
        lines += [
            "# TYPE llmlb_router_queue_depth gauge",
            f"llmlb_router_queue_depth {registry.waiting}",
            "# TYPE llmlb_router_nodes_online gauge",
            f"llmlb_router_nodes_online {sum(registry.online(n) for n in registry.nodes.values())}",
        ]
        return "\n".join(lines) + "\n"


@dataclass
class RouterState:
    registry: Registry
    history: History
    http: httpx.AsyncClient  # probes and fan-out reads
    api_keys: dict[str, str]  # key -> short id for the history (keys themselves are never stored)
    node_token: str | None
    metrics: RouterMetrics = field(default_factory=RouterMetrics)
    started_at: float = field(default_factory=time.time)
    tasks: list[asyncio.Task] = field(default_factory=list)
    upstream: aiohttp.ClientSession | None = None  # proxied requests (see balancer/proxy.py)


def _state(request: Request) -> RouterState:
    return request.app.state.router


def client_key(request: Request) -> str | None:
    return auth.client_key(_state(request).api_keys, request.headers)


def _node_auth(request: Request) -> None:
    token = _state(request).node_token
    if token and request.headers.get("x-llmlb-node-token") != token:
        raise Unauthorized("this router requires the node token (LLMLB_NODE_TOKEN)")


@get("/", media_type=MediaType.TEXT, include_in_schema=False)
async def root() -> str:
    return "llmlb router is running"


@post("/admin/nodes/heartbeat", status_code=200)
async def heartbeat(request: Request) -> dict:
    _node_auth(request)
    state = _state(request)
    node = state.registry.heartbeat(await json_object(request))
    await to_thread.run_sync(state.registry.persist, node)
    return {"id": node.id, "status": node.status}


@post("/admin/nodes/{node_id:str}/stopped", status_code=200)
async def stopped(request: Request, node_id: str) -> dict:
    _node_auth(request)
    state = _state(request)
    state.registry.stopped(node_id)
    node = state.registry.nodes.get(node_id)
    if node is not None:
        await to_thread.run_sync(state.registry.persist, node)
    return {"id": node_id, "status": "Stopped"}


@get("/v1/models")
async def models(request: Request) -> dict:
    client_key(request)
    names = cluster_models(_state(request))
    return {
        "object": "list",
        "data": [
            {"id": m["model"], "object": "model", "created": 0, "owned_by": "llmlb"}
            for m in names
            if m["status"] == "available"
        ],
    }


@get("/api/tags")
async def tags(request: Request) -> dict:
    client_key(request)
    return {"models": await proxy.union(_state(request), "/api/tags")}


# -- cluster views (the CLI and the dashboard) -------------------------------------


def node_json(state: RouterState, n) -> dict[str, Any]:
    return {
        "id": n.id,
        "host": n.host,
        "port": n.port,
        "address": f"{n.host}:{n.port}",
        "status": state.registry.label(n),
        "state": n.status,
        "gpu": n.gpu_name or "CPU",
        "vram_total_bytes": n.vram_total_bytes,
        "vram_used_bytes": n.vram_used_bytes,
        "gpu_temperature": n.gpu_temperature,
        "models": [m["name"] for m in n.models],
        "loaded_models": n.loaded,
        "in_flight": n.in_flight,
        "node_in_flight": n.node_in_flight,
        "queued": n.node_queued,
        "uptime_secs": n.uptime_secs,
        "requests": n.requests,
        "errors": n.errors,
        "cooling_down": state.registry.cooling(n),
        "last_seen": n.last_seen_at.isoformat() if n.last_seen_at else None,
    }


def cluster_models(state: RouterState) -> list[dict[str, Any]]:
    reg = state.registry
    out: dict[str, dict[str, Any]] = {}
    for n in reg.nodes.values():
        for m in n.models:
            entry = out.setdefault(
                m["name"], {"model": m["name"], "nodes": [], "loaded_on": [], "known_on": []}
            )
            entry["known_on"].append(n.id)
            if reg.online(n):
                entry["nodes"].append(n.id)
                if m["name"] in n.loaded:
                    entry["loaded_on"].append(n.id)
    for entry in out.values():
        entry["status"] = "available" if entry["nodes"] else "unavailable"
    return sorted(out.values(), key=lambda e: e["model"])


def cluster_status(state: RouterState) -> dict[str, Any]:
    reg = state.registry
    nodes = list(reg.nodes.values())
    online = [n for n in nodes if reg.online(n)]
    gpus = [n for n in online if n.vram_total_bytes]
    vram = (
        (sum(100 * n.vram_used_bytes / n.vram_total_bytes for n in gpus) / len(gpus))
        if gpus
        else None
    )
    health = (
        "healthy" if nodes and len(online) == len(nodes) else ("down" if not online else "degraded")
    )
    return {
        "status": health,
        "nodes_online": len(online),
        "nodes_offline": len(nodes) - len(online),
        "models_available": sum(1 for m in cluster_models(state) if m["status"] == "available"),
        "requests_last_hour": state.history.last_hour(),
        "vram_percent": vram,
        "queue_depth": reg.waiting,
        "uptime_secs": int(time.time() - state.started_at),
    }


@get("/admin/cluster/nodes", sync_to_thread=False)
def nodes_view(request: Request) -> dict:
    client_key(request)
    state = _state(request)
    return {"nodes": [node_json(state, n) for n in state.registry.nodes.values()]}


@get("/admin/cluster/models", sync_to_thread=False)
def models_view(request: Request) -> dict:
    client_key(request)
    return {"models": cluster_models(_state(request))}


@get("/admin/cluster/status", sync_to_thread=True)
def status_view(request: Request) -> dict:
    client_key(request)
    return cluster_status(_state(request))


@get("/admin/cluster/requests", sync_to_thread=True)
def requests_view(request: Request, limit: int = 50) -> dict:
    client_key(request)
    return {"requests": _state(request).history.recent(max(1, min(limit, 500)))}


@get("/admin/cluster/timeseries", sync_to_thread=True)
def timeseries_view(request: Request, minutes: int = 60) -> dict:
    client_key(request)
    return {"minutes": _state(request).history.per_minute(max(1, min(minutes, 24 * 60)))}


@get("/metrics", media_type=MediaType.TEXT, sync_to_thread=False)
def metrics(request: Request) -> str:
    state = _state(request)
    return state.metrics.render(state.registry)


async def _watch(state: RouterState) -> None:
    """Probe nodes whose heartbeats are late; two failed probes mean the node crashed."""
    while True:
        await asyncio.sleep(settings.heartbeat_secs())
        for node in state.registry.stale():
            try:
                await state.http.get(node.url + "/", timeout=1.0)
            except httpx.HTTPError:
                if state.registry.probe_failed(node):
                    await to_thread.run_sync(state.registry.persist, node)


def create_router_app(host: str, port: int, home=None) -> proxy.ProxyApp:
    home = home or settings.home()
    home.mkdir(parents=True, exist_ok=True)
    engine = db.open_catalog(home / "router.db")
    registry = Registry(
        engine,
        settings.node_max_in_flight(),
        settings.heartbeat_timeout_secs(),
        settings.router_queue(),
        settings.router_queue_timeout(),
    )
    registry.load()
    state = RouterState(
        registry=registry,
        history=History(engine, settings.history_days()),
        http=httpx.AsyncClient(
            timeout=httpx.Timeout(600, connect=3),
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=500),
        ),
        api_keys=auth.key_ids(settings.api_keys()),
        node_token=settings.node_token(),
    )

    async def startup(app: Litestar) -> None:
        state.upstream = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=2000, limit_per_host=0, enable_cleanup_closed=True
            ),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=600),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        await state.history.start()
        state.tasks.append(asyncio.create_task(_watch(state)))
        log.info("llmlb router listening on http://%s:%s (data in %s)", host, port, home)

    async def shutdown(app: Litestar) -> None:
        for task in state.tasks:
            task.cancel()
        await state.history.stop()
        await state.http.aclose()
        if state.upstream is not None:
            await state.upstream.close()
        engine.dispose()

    from llmlb.server import dashboard

    app = Litestar(
        route_handlers=[
            root,
            heartbeat,
            stopped,
            models,
            tags,
            nodes_view,
            models_view,
            status_view,
            requests_view,
            timeseries_view,
            metrics,
            *dashboard.routes,
        ],
        on_startup=[startup],
        on_shutdown=[shutdown],
        exception_handlers=exception_handlers,
        request_max_body_size=proxy.MAX_BODY,
        openapi_config=None,
    )
    app.state.router = state
    return proxy.ProxyApp(app, state)
