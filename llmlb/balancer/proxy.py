"""Forward one API request to a node chosen by the policy; streams pass through chunk by chunk.

The upstream side uses aiohttp: its HTTP parser is C, and parsing the node's chunked stream is
the router's main per-token cost (httpx's pure-Python h11 cost about 0.3 ms a chunk).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, AsyncIterator

import aiohttp
import httpx
from litestar import Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from llmlb.balancer.registry import NodeEntry
from llmlb.errors import BadRequest, Unavailable

log = logging.getLogger("llmlb.router")
MAX_TRIES = 3
STREAMING = ("text/event-stream", "application/x-ndjson")
HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "authorization",
              "x-api-key", "accept-encoding"}
_TOKENS_IN = re.compile(rb'"(?:prompt_eval_count|prompt_tokens)":\s*(\d+)')
_TOKENS_OUT = re.compile(rb'"(?:eval_count|completion_tokens)":\s*(\d+)')


def _last_int(pattern: re.Pattern, data: bytes) -> int:
    found = pattern.findall(data)
    return int(found[-1]) if found else 0


class Claim:
    """One request's hold on a node; released exactly once, whatever happens to the client."""

    def __init__(self, state, node: NodeEntry, path: str, model: str, key_id: str | None, started: float):
        self.state, self.node, self.path, self.model, self.key_id = state, node, path, model, key_id
        self.started, self.first_byte = started, None
        self.status, self.tail, self.done = 0, b"", False

    def release(self, ok: bool = True) -> None:
        if self.done:
            return
        self.done = True
        ok = ok and self.status < 500
        if ok and self.status < 400 and self.model not in self.node.loaded:
            self.node.loaded.append(self.model)  # it loads on first use; the next heartbeat confirms
        self.state.registry.release(self.node, ok)
        duration = (time.perf_counter() - self.started) * 1000
        ttft = (self.first_byte - self.started) * 1000 if self.first_byte else None
        self.state.metrics.observe(self.node.id, self.status if ok else 502, duration)
        self.state.history.record(endpoint=self.path, model=self.model, node_id=self.node.id,
                                  status=self.status if ok else 502, duration_ms=round(duration, 2),
                                  ttft_ms=round(ttft, 2) if ttft is not None else None,
                                  tokens_in=_last_int(_TOKENS_IN, self.tail),
                                  tokens_out=_last_int(_TOKENS_OUT, self.tail), key_id=self.key_id)


def _error_event(ndjson: bool, message: str) -> bytes:
    if ndjson:
        return (json.dumps({"error": message}) + "\n").encode()
    return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error', 'code': 502}})}\n\n".encode()


async def _passthrough(claim: Claim, upstream: aiohttp.ClientResponse, ndjson: bool) -> AsyncIterator[bytes]:
    ok = True
    try:
        async for chunk in upstream.content.iter_any():
            if claim.first_byte is None:
                claim.first_byte = time.perf_counter()
            claim.tail = (claim.tail + chunk)[-2048:]
            yield chunk
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # the node went away mid-stream
        ok = False
        log.warning("node %s failed mid-stream: %s", claim.node.id[:8], exc)
        yield _error_event(ndjson, f"node {claim.node.id[:8]} failed during the response: {exc!r}")
    finally:
        upstream.release()
        claim.release(ok)


async def forward(state, request: Request, path: str, key_id: str | None) -> Response:
    body = await request.body()
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), str) or not data["model"]:
        raise BadRequest("field 'model' must be a non-empty string")
    model = state.registry.canonical(data["model"])
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    started = time.perf_counter()
    tried: set[str] = set()
    last_error = ""
    for _ in range(MAX_TRIES):
        try:
            node = await state.registry.acquire(model, frozenset(tried))
        except Unavailable:
            if tried:
                raise Unavailable(f"every node with '{model}' failed: {last_error}") from None
            raise
        claim = Claim(state, node, path, model, key_id, started)
        try:
            upstream = await state.upstream.post(node.url + path, data=body, headers=headers)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            last_error = f"{node.host}:{node.port}: {type(exc).__name__}"
            claim.release(ok=False)
            tried.add(node.id)
            continue
        claim.status = upstream.status
        if upstream.status >= 500:  # nothing reached the client yet: try another node
            last_error = f"{node.host}:{node.port}: HTTP {upstream.status}"
            upstream.release()
            claim.release(ok=False)
            tried.add(node.id)
            continue
        ctype = upstream.headers.get("content-type", "application/json")
        out_headers = {"x-llmlb-node": node.id[:8]}
        if ctype.startswith(STREAMING) and upstream.status < 400:
            return Stream(_passthrough(claim, upstream, ctype.startswith("application/x-ndjson")),
                          status_code=upstream.status, media_type=ctype, headers=out_headers,
                          background=BackgroundTask(_release_unstarted, claim, upstream))
        try:
            content = await upstream.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            claim.release(ok=False)
            raise Unavailable(f"node {node.id[:8]} failed during the response: {exc!r}") from exc
        finally:
            upstream.release()
        claim.tail = content[-2048:]  # no time to first token: the answer came whole
        claim.release(ok=True)
        return Response(content, status_code=upstream.status, media_type=ctype, headers=out_headers)
    raise Unavailable(f"every node with '{model}' failed: {last_error}")


async def _release_unstarted(claim: Claim, upstream: aiohttp.ClientResponse) -> None:
    """The client left before the stream began: nothing else would hand the node back."""
    if not claim.done:
        upstream.release()
        claim.release(ok=True)


async def union(state, path: str) -> list[dict[str, Any]]:
    """GET `path` on every online node, for /api/tags."""
    nodes = [n for n in state.registry.nodes.values() if state.registry.online(n)]

    async def one(node: NodeEntry):
        try:
            r = await state.http.get(node.url + path, timeout=5)
            return r.json().get("models", []) if r.status_code == 200 else []
        except (httpx.HTTPError, ValueError):
            return []

    seen: dict[str, dict] = {}
    for models in await asyncio.gather(*(one(n) for n in nodes)):
        for m in models:
            seen.setdefault(m.get("name"), m)
    return list(seen.values())
