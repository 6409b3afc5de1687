"""The load balancer's Litestar app (node registry, balancer, proxy)."""

from __future__ import annotations

from litestar import Litestar, MediaType, get

from llmlb.server.errors import exception_handlers


@get("/", media_type=MediaType.TEXT, include_in_schema=False)
async def root() -> str:
    return "llmlb router is running"


def create_router_app(host: str, port: int) -> Litestar:
    return Litestar(route_handlers=[root], exception_handlers=exception_handlers, openapi_config=None)
