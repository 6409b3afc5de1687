"""The node server: `create_node_app` builds every service and the Litestar app around them.

Handlers receive the services they use as typed Litestar dependencies (`scheduler:
Scheduler`, `node: NodeServices`, ...); nothing is looked up by name at run time, and no
lower layer reaches into the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# llama.cpp's native libraries must load before numpy's (gguf and llama_cpp import numpy): on an
# H200 with a CUDA 13 build, numpy 2.5's bundled OpenBLAS loaded first made every model load
# segfault, even with no layers offloaded. tests/unit/test_imports.py keeps this order.
import llama_cpp  # noqa: F401  (imported for the load order alone)
from litestar import Litestar, MediaType, get, head
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from llmlb import __version__
from llmlb.server import (
    create_api,
    metrics_api,
    ollama_api,
    openai_api,
    pull_api,
    responses_api,
    sessions_api,
    store_api,
)
from llmlb.server.body import ApiRequest
from llmlb.server.claims import ClaimGuard
from llmlb.server.errors import exception_handlers
from llmlb.server.node_services import NodeConfig, NodeServices, build_services
from llmlb.server.origins import BrowserGuard, OriginPolicy
from llmlb.server.request_count import RequestCounter

MAX_BODY = 64 * 1024 * 1024  # base64 images make chat bodies large; anything past this is abuse


@get("/", media_type=MediaType.TEXT, include_in_schema=False)
async def root() -> str:
    return "llmlb is running"


@head("/", media_type=MediaType.TEXT, include_in_schema=False)
async def root_head() -> None:
    """ollama's client checks a server with HEAD / before it sends anything."""


@get("/api/version")
async def version() -> dict:
    return {"version": __version__}


def create_node_app(config: NodeConfig, services: NodeServices | None = None) -> BrowserGuard:
    """The node's ASGI app. `services` may be given (tests build them with fakes)."""
    node = services or build_services(config)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    def provide(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    app = Litestar(
        route_handlers=[
            root,
            root_head,
            version,
            *store_api.routes,
            *create_api.routes,
            *pull_api.routes,
            *ollama_api.routes,
            *openai_api.routes,
            *responses_api.routes,
            *sessions_api.routes,
            *metrics_api.routes,
        ],
        dependencies={
            "node": provide(node),
            "catalog": provide(node.catalog),
            "scheduler": provide(node.scheduler),
            "downloads": provide(node.downloads),
            "metrics": provide(node.metrics),
            "templates": provide(node.templates),
        },
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        logging_config=None,  # our own format (serve.setup_logging) for every line
        request_class=ApiRequest,
        request_max_body_size=MAX_BODY,
        openapi_config=OpenAPIConfig(title="llmlb node", version=__version__),
        middleware=[  # outermost first
            lambda app: RequestCounter(app, node.metrics),
            ClaimGuard,
        ],
        debug=False,
    )
    # Host/Origin checks come first, for every request, routed or not
    return BrowserGuard(app, OriginPolicy(config.host, config.origins))
