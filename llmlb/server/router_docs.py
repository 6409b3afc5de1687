"""The proxied routes in the router's OpenAPI document.

The proxy (balancer/proxy.py) serves these paths in front of Litestar, so no handler here is
ever called; they exist so that /schema describes the whole API a client can use, with the
same request bodies a node takes (which is what the node behind the proxy validates).
"""

from __future__ import annotations

from typing import Any, cast

from litestar import post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody

from llmlb.balancer.proxy import PROXIED
from llmlb.server.requests import (
    ModelOnly,
    OllamaChat,
    OllamaEmbed,
    OllamaEmbeddings,
    OllamaGenerate,
    OpenAIChat,
    OpenAICompletion,
    OpenAIEmbeddings,
)
from llmlb.server.responses_requests import ResponsesRequest

BODIES: dict[str, Any] = {
    "/api/chat": OllamaChat,
    "/api/generate": OllamaGenerate,
    "/api/embed": OllamaEmbed,
    "/api/embeddings": OllamaEmbeddings,
    "/api/show": ModelOnly,
    "/v1/chat/completions": OpenAIChat,
    "/v1/completions": OpenAICompletion,
    "/v1/embeddings": OpenAIEmbeddings,
    "/v1/responses": ResponsesRequest,
}
assert set(BODIES) == PROXIED, "every proxied route is documented"


def _documented(path: str, body: Any) -> HTTPRouteHandler:
    async def proxied(data: Any) -> dict:
        raise RuntimeError(f"{path} is served by the proxy in front of this app")

    # the real body type, built at run time for each path
    proxied.__annotations__ = {"data": cast(Any, JSONBody)[body], "return": dict}
    proxied.__name__ = "proxied_" + path.strip("/").replace("/", "_")
    return post(path, status_code=200, summary="Forwarded to a node that has the model")(proxied)


ROUTES = [_documented(path, body) for path, body in sorted(BODIES.items())]
