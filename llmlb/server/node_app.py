"""The node server's Litestar app: ollama-compatible /api and OpenAI-compatible /v1."""

from __future__ import annotations

import logging

from litestar import Litestar, MediaType, get

from llmlb import __version__
from llmlb.server import node_parts
from llmlb.server.errors import exception_handlers
from llmlb.server.node_state import NodeState

log = logging.getLogger("llmlb.node")

MAX_BODY = 64 * 1024 * 1024  # base64 images make chat bodies large; anything past this is abuse


@get("/", media_type=MediaType.TEXT, include_in_schema=False)
async def root() -> str:
    return "llmlb is running"


@get("/api/version")
async def version() -> dict:
    return {"version": __version__}


def create_app(state: NodeState) -> Litestar:
    async def startup(app: Litestar) -> None:
        for start in node_parts.starters():
            await start(state)

    async def shutdown(app: Litestar) -> None:
        await state.stop()
        state.catalog.dispose()

    app = Litestar(
        route_handlers=[root, version, *node_parts.routes()],
        on_startup=[startup],
        on_shutdown=[shutdown],
        exception_handlers=exception_handlers,
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        debug=False,
    )
    app.state.node = state
    return app
