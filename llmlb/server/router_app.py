"""The load balancer's app: `create_router_app` builds the cluster services and the Litestar app
(node registry, cluster views, metrics, dashboard), with the streaming proxy in front of it.
Its state lives in $LLMLB_HOME/router.db, or in the database routers share
(LLMLB_DATABASE_URL); with LLMLB_REDIS_URL, the in-flight claims are shared too.

Every route needs the API key (when LLMLB_API_KEYS is set), enforced by one guard on the
app; the exemptions are listed in EXEMPT below, and a test checks every route against them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from litestar import Litestar, MediaType, Response, get, head, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.params import JSONBody, PathParameter, QueryParameter

from llmlb import __version__, settings
from llmlb.balancer import proxy, views
from llmlb.balancer.admission import Admission
from llmlb.balancer.auth import ApiKeys, NodeGate, load_secret
from llmlb.balancer.claims import Claims, LocalClaims
from llmlb.balancer.cluster import Cluster
from llmlb.balancer.database import Database, NodeRows
from llmlb.balancer.history import History
from llmlb.balancer.metrics import CONTENT_TYPE, RouterMetrics
from llmlb.balancer.redis_claims import RedisClaims
from llmlb.balancer.registry import Registry
from llmlb.balancer.wire import NODE_ID, Heartbeat
from llmlb.errors import ModelNotFound
from llmlb.server import dashboard, router_docs, router_manage
from llmlb.server.body import ApiRequest
from llmlb.server.errors import exception_handlers
from llmlb.server.origins import BrowserGuard, OriginPolicy
from llmlb.store import db

log = logging.getLogger("llmlb.router")

# Routes that do not take the API key, and why. Everything else does.
EXEMPT = {
    "public": "the liveness line and the dashboard's HTML shell (it asks for the key itself)",
    "node": "node registration and goodbye: their own gate (LLMLB_NODE_TOKEN, else loopback only)",
}


@dataclass
class RouterConfig:
    host: str = "127.0.0.1"
    port: int = settings.DEFAULT_ROUTER_PORT
    home: Path = field(default_factory=settings.home)
    api_keys: list[str] = field(default_factory=settings.api_keys)
    node_token: str | None = field(default_factory=settings.node_token)
    origins: list[str] = field(default_factory=settings.origins)
    database_url: str | None = field(default_factory=settings.database_url)
    redis_url: str | None = field(default_factory=settings.redis_url)


def access(kind: str) -> dict[str, Any]:
    """Route `opt` marking an exemption from the API key (a key of EXEMPT)."""
    assert kind in EXEMPT
    return {"access": kind}


def require_key(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    cluster: Cluster = connection.app.state.cluster
    kind = handler.opt.get("access")
    if kind == "public":
        return
    if kind == "node":
        cluster.gate.check(
            connection.headers, connection.client.host if connection.client else None
        )
        return
    cluster.keys.identify(connection.headers)


@get("/", media_type=MediaType.TEXT, include_in_schema=False, opt=access("public"))
async def root() -> str:
    return "llmlb router is running"


@head("/", media_type=MediaType.TEXT, include_in_schema=False, opt=access("public"))
async def root_head() -> None:
    """ollama's client checks a server with HEAD / before it sends anything."""


@get("/api/version")
async def version() -> dict:
    """The router's own version: what tools read to detect an ollama-compatible server."""
    return {"version": __version__}


@post("/admin/nodes/heartbeat", status_code=200, opt=access("node"))
async def heartbeat(data: JSONBody[Heartbeat], cluster: NamedDependency[Cluster]) -> dict:
    node = cluster.registry.heartbeat(data)  # written to the database by the node-rows loop
    cluster.admission.heard(node)
    return {"id": node.id, "status": node.status}


@post("/admin/nodes/{node_id:str}/stopped", status_code=200, opt=access("node"))
async def stopped(
    node_id: Annotated[str, PathParameter(pattern=NODE_ID)], cluster: NamedDependency[Cluster]
) -> dict:
    cluster.registry.stopped(node_id)
    return {"id": node_id, "status": "Stopped"}


def _model_object(entry: dict) -> dict:
    created = entry.get("created") or 0  # 0: only nodes of an older version have it
    return {"id": entry["model"], "object": "model", "created": created, "owned_by": "llmlb"}


@get("/v1/models")
async def models(cluster: NamedDependency[Cluster]) -> dict:
    available = [m for m in views.cluster_models(cluster.registry) if m["status"] == "available"]
    return {"object": "list", "data": [_model_object(m) for m in available]}


@get("/v1/models/{model_id:path}")
async def model(
    model_id: Annotated[str, PathParameter(max_length=1024)], cluster: NamedDependency[Cluster]
) -> dict:
    name = cluster.registry.canonical(model_id.lstrip("/"))  # ModelNotFound when no node has it
    for entry in views.cluster_models(cluster.registry):
        if entry["model"] == name and entry["status"] == "available":
            return _model_object(entry)
    raise ModelNotFound(model_id.lstrip("/"))


@get("/api/tags")
async def tags(cluster: NamedDependency[Cluster]) -> dict:
    return {"models": await cluster.union("/api/tags")}


@get("/api/ps")
async def ps(cluster: NamedDependency[Cluster]) -> dict:
    """Loaded models on every online node, each naming its node."""
    out = []
    for node, running in await cluster.gather("/api/ps"):
        out += [
            {**m, "node": node.id[:8], "node_address": f"{node.host}:{node.port}"} for m in running
        ]
    return {"models": out}


@get("/admin/cluster/nodes", sync_to_thread=True)
def nodes_view(cluster: NamedDependency[Cluster]) -> dict:
    return {"nodes": views.cluster_nodes(cluster)}


@get("/admin/cluster/models", sync_to_thread=False)
def models_view(cluster: NamedDependency[Cluster]) -> dict:
    return {"models": views.cluster_models(cluster.registry)}


@get("/admin/cluster/status", sync_to_thread=True)
def status_view(cluster: NamedDependency[Cluster]) -> dict:
    return views.cluster_status(cluster)


@get("/admin/cluster/requests", sync_to_thread=True)
def requests_view(
    cluster: NamedDependency[Cluster], limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50
) -> dict:
    return {"requests": cluster.history.recent(limit)}


@get("/admin/cluster/timeseries", sync_to_thread=True)
def timeseries_view(
    cluster: NamedDependency[Cluster],
    minutes: Annotated[int, QueryParameter(ge=1, le=24 * 60)] = 60,
) -> dict:
    return {"minutes": cluster.history.per_minute(minutes)}


@get("/metrics", sync_to_thread=False)
def metrics_page(cluster: NamedDependency[Cluster]) -> Response:
    return Response(cluster.metrics.render(), media_type=CONTENT_TYPE)


def build_cluster(config: RouterConfig) -> Cluster:
    config.home.mkdir(parents=True, exist_ok=True)
    if config.database_url:
        engine = db.open_router_database(config.database_url)
    else:
        engine = db.open_router_catalog(config.home / "router.db")
    database = Database(engine, shared=config.database_url is not None)
    capacity = settings.node_max_in_flight()
    claims: Claims = (  # the one place the kind of claims is chosen
        RedisClaims(config.redis_url, capacity, settings.claim_lease_secs())
        if config.redis_url
        else LocalClaims()
    )
    registry = Registry(capacity, settings.heartbeat_timeout_secs())
    admission = Admission(
        registry,
        claims,
        settings.router_queue(),
        settings.router_queue_timeout(),
        balance=settings.prefix_balance() if settings.prefix_routing() else None,
    )
    history = History(engine, settings.history_days(), settings.history_buffer(), database)
    return Cluster(
        registry=registry,
        admission=admission,
        claims=claims,
        database=database,
        rows=NodeRows(registry, database, read_every=settings.heartbeat_secs() / 2),
        history=history,
        metrics=RouterMetrics(registry, admission, database, history, claims),
        keys=ApiKeys(config.api_keys, load_secret(engine, config.home)),
        gate=NodeGate(config.node_token),
        probe_every=settings.heartbeat_secs(),
        first_byte_secs=settings.node_first_byte_secs(),
    )


ROUTES = [
    root,
    root_head,
    version,
    heartbeat,
    stopped,
    models,
    model,
    tags,
    ps,
    nodes_view,
    models_view,
    status_view,
    requests_view,
    timeseries_view,
    metrics_page,
    dashboard.page,
    *router_docs.ROUTES,
    *router_manage.ROUTES,
]


def create_router_app(config: RouterConfig, cluster: Cluster | None = None) -> BrowserGuard:
    """The router's ASGI app: Host/Origin checks, then the proxy, then Litestar."""
    services = cluster or build_cluster(config)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if config.node_token is None:
            log.warning(
                "LLMLB_NODE_TOKEN is not set: only nodes on this machine may register; set it on "
                "the router and the nodes to accept nodes from the network"
            )
        await services.start()
        log.info(
            "llmlb router listening on http://%s:%s (state in %s; in-flight claims: %s)",
            config.host,
            config.port,
            services.database.where,
            services.claims.describe(),
        )
        try:
            yield
        finally:
            await services.stop()
            services.database.engine.dispose()

    app = Litestar(
        route_handlers=ROUTES,
        dependencies={"cluster": Provide(lambda: services, use_cache=True, sync_to_thread=False)},
        guards=[require_key],
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        logging_config=None,  # our own format (serve.setup_logging) for every line
        request_class=ApiRequest,
        request_max_body_size=4 * 1024 * 1024,  # heartbeats; proxied bodies never reach Litestar
        openapi_config=OpenAPIConfig(title="llmlb router", version=__version__),
        debug=False,
    )
    app.state.cluster = services
    return BrowserGuard(proxy.ProxyApp(app, services), OriginPolicy(config.host, config.origins))
