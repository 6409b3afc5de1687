"""Forward one API request to a node chosen by the policy; streams pass through chunk by chunk.

This is plain ASGI in front of the Litestar app: the proxied routes are the router's hot path,
and Litestar's request and streaming-response layers cost about 0.1 ms a chunk, which at 16
concurrent streams on two cores added several ms to each request. The upstream side uses
aiohttp for its C HTTP parser (httpx's pure-Python h11 cost about 0.3 ms a chunk).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

import aiohttp

from llmlb.balancer.cluster import Cluster
from llmlb.balancer.nodes import Held
from llmlb.errors import BadRequest, LlmlbError, TooLarge, Unavailable, error_body
from llmlb.jsonio import decode

log = logging.getLogger("llmlb.router")
MAX_TRIES = 3
MAX_BODY = 64 * 1024 * 1024
PROXIED = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/api/show",
    }
)
# Cheap reads a node answers from its catalog: sent to any node with the model, without a claim,
# so they never wait behind generations for a free slot.
READS = frozenset({"/api/show"})
STREAMING = ("text/event-stream", "application/x-ndjson")
# Not forwarded: hop-by-hop headers, the client's credentials for this router, and what
# browsers add (the router applies its own Host/Origin policy; nodes must not see a foreign one).
DROPPED = {
    "host",
    "origin",
    "referer",
    "cookie",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "authorization",
    "x-api-key",
    "accept-encoding",
}
_TOKENS_IN = re.compile(rb'"(?:prompt_eval_count|prompt_tokens)":\s*(\d+)')
_TOKENS_OUT = re.compile(rb'"(?:eval_count|completion_tokens)":\s*(\d+)')
MAX_TOKENS = 2**62  # what the history's BIGINT column holds; a node may send any digits


def _last_int(pattern: re.Pattern, data: bytes) -> int:
    found = pattern.findall(data)
    return min(int(found[-1][:20]), MAX_TOKENS) if found else 0


class Claim:
    """One request's hold on a node; released exactly once, whatever happens to the client."""

    def __init__(
        self,
        cluster: Cluster,
        held: Held,
        path: str,
        model: str,
        key_id: str | None,
        started: float,
    ):
        self.cluster, self.held, self.path, self.model = cluster, held, path, model
        self.node = held.node
        self.key_id = key_id
        self.started = started
        self.first_byte: float | None = None
        self.status, self.tail, self.done = 0, b"", False

    def release(self, ok: bool = True) -> None:
        if self.done:
            return
        self.done = True
        ok = ok and self.status < 500
        if ok and self.status < 400 and self.model not in self.node.loaded:
            self.node.loaded.append(self.model)  # it loads on first use; a heartbeat confirms
        self.cluster.registry.release(self.held, ok)
        duration = (time.perf_counter() - self.started) * 1000
        ttft = (self.first_byte - self.started) * 1000 if self.first_byte else None
        self.cluster.history.record(
            endpoint=self.path,
            model=self.model,
            node_id=self.node.id,
            status=self.status if ok else 502,
            duration_ms=round(duration, 2),
            ttft_ms=round(ttft, 2) if ttft is not None else None,
            tokens_in=_last_int(_TOKENS_IN, self.tail),
            tokens_out=_last_int(_TOKENS_OUT, self.tail),
            key_id=self.key_id,
        )


class ClientGone(Exception):
    """The client hung up."""


def _error_event(ndjson: bool, message: str) -> bytes:
    if ndjson:
        return (json.dumps({"error": message}) + "\n").encode()
    return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error', 'code': 502}})}\n\n".encode()


async def _read_body(scope, receive) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
            raise TooLarge("request body is too large")
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        part = message.get("body", b"")
        size += len(part)
        if size > MAX_BODY:
            raise TooLarge("request body is too large")
        parts.append(part)
        if not message.get("more_body"):
            return b"".join(parts)


async def _send_json(send, status: int, body: Any, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def send_error(send, path: str, exc: LlmlbError) -> None:
    if exc.status >= 500:
        log.warning("POST %s: %s", path, exc.message)
    extra = [(b"retry-after", b"1")] if exc.status in (429, 503) else []
    await _send_json(send, exc.status, error_body(path, exc.status, exc.message, exc.kind), extra)


class Outcome:
    """What one client request came to: for the metrics, counted once per request."""

    def __init__(self) -> None:
        self.status = 0
        self.node: str | None = None
        self.started = time.perf_counter()


async def handle(cluster: Cluster, scope, receive, send) -> None:
    """One proxied request, start to end; a client that hangs up cancels the work and frees the node."""
    path = scope["path"]
    outcome = Outcome()
    finished = False

    async def tracked_send(message) -> None:
        if message["type"] == "http.response.start":
            outcome.status = message["status"]
        await send(message)

    me = asyncio.current_task()
    assert me is not None  # ASGI apps run in a task
    gone = asyncio.Event()
    watcher: asyncio.Task | None = None
    try:
        if scope["method"] != "POST":
            message = f"method {scope['method']} is not allowed on {path}"
            await _send_json(
                tracked_send, 405, error_body(path, 405, message), [(b"allow", b"POST")]
            )
            return
        body = await _read_body(scope, receive)

        async def watch() -> None:  # after the body, receive() only ever says "disconnect"
            while (await receive())["type"] != "http.disconnect":
                pass
            if not finished:
                gone.set()
                me.cancel()

        watcher = asyncio.create_task(watch())
        await _forward(cluster, scope, body, tracked_send, outcome)
    except ClientGone:
        pass
    except asyncio.CancelledError:
        if not gone.is_set():
            raise  # the server is stopping, not the client leaving
    except LlmlbError as exc:
        if not outcome.status:
            await send_error(tracked_send, path, exc)
    except Exception:
        log.exception("unexpected error on POST %s", path)
        if not outcome.status:
            await send_error(tracked_send, path, LlmlbError("internal error"))
    finally:
        finished = True  # before the watcher can run again: a hang-up now cancels nothing
        if watcher is not None:
            watcher.cancel()
        status = outcome.status if outcome.status and not gone.is_set() else 499
        cluster.metrics.observe(outcome.node, status, time.perf_counter() - outcome.started)


def requested_model(data: Any) -> str:
    """The model a proxied body names (`model`, or `name` as older ollama clients send)."""
    model = data.get("model") or data.get("name") if isinstance(data, dict) else None
    if not isinstance(model, str) or not model or len(model) > 512:
        raise BadRequest("field 'model' must be a non-empty string of at most 512 characters")
    return model


async def _forward(cluster: Cluster, scope, body: bytes, send, outcome: Outcome) -> None:
    path = scope["path"]
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    key_id = cluster.keys.identify(headers)
    model = cluster.registry.canonical(requested_model(decode(body or b"{}")))
    forwarded = {k: v for k, v in headers.items() if k not in DROPPED}
    if path in READS:
        await _read(cluster, path, model, body, forwarded, send, outcome)
        return
    started = time.perf_counter()
    tried: set[str] = set()
    last_error = ""
    for _ in range(MAX_TRIES):
        try:
            held = await cluster.registry.acquire(model, frozenset(tried))
        except Unavailable:
            if tried:
                raise Unavailable(f"every node with '{model}' failed: {last_error}") from None
            raise
        node = held.node
        claim = Claim(cluster, held, path, model, key_id, started)
        try:
            upstream = await cluster.http.post(node.url + path, data=body, headers=forwarded)
        except (TimeoutError, aiohttp.ClientError) as exc:
            last_error = f"{node.host}:{node.port}: {type(exc).__name__}"
            claim.release(ok=False)
            tried.add(node.id)
            continue
        except asyncio.CancelledError:
            claim.status = 499  # the client left while we connected: not the node's fault
            claim.release()
            raise
        claim.status = upstream.status
        if upstream.status >= 500:  # nothing reached the client yet: try another node
            last_error = f"{node.host}:{node.port}: HTTP {upstream.status}"
            upstream.release()
            claim.release(ok=False)
            tried.add(node.id)
            continue
        outcome.node = node.id
        await _respond(claim, upstream, send)
        return
    raise Unavailable(f"every node with '{model}' failed: {last_error}")


async def _read(
    cluster: Cluster, path: str, model: str, body: bytes, headers, send, outcome
) -> None:
    tried: set[str] = set()
    for _ in range(MAX_TRIES):
        node = cluster.registry.any_node(model, frozenset(tried))
        try:
            async with cluster.http.post(node.url + path, data=body, headers=headers) as upstream:
                content = await upstream.read()
                if upstream.status >= 500:
                    raise aiohttp.ClientResponseError(
                        upstream.request_info, (), status=upstream.status
                    )
                ctype = upstream.headers.get("content-type", "application/json")
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("node %s failed %s: %r", node.id[:8], path, exc)
            tried.add(node.id)
            continue
        outcome.node = node.id
        await _send_whole(send, upstream.status, ctype, node.id, content)
        return
    raise Unavailable(f"every node with '{model}' failed to answer {path}")


def _start(status: int, ctype: str, node_id: str, length: int | None = None) -> dict:
    headers = [(b"content-type", ctype.encode("latin-1"))]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    headers.append((b"x-llmlb-node", node_id[:8].encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _send_whole(send, status: int, ctype: str, node_id: str, content: bytes) -> None:
    await send(_start(status, ctype, node_id, len(content)))
    await send({"type": "http.response.body", "body": content})


async def _respond(claim: Claim, upstream: aiohttp.ClientResponse, send) -> None:
    ctype = upstream.headers.get("content-type", "application/json")
    ok, finished = True, False
    try:
        if not (ctype.startswith(STREAMING) and upstream.status < 400):
            try:
                content = await upstream.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                ok = False
                raise Unavailable(
                    f"node {claim.node.id[:8]} failed during the response: {exc!r}"
                ) from exc
            finished = True
            claim.tail = content[-2048:]  # no time to first token: the answer came whole
            await _send_whole(send, upstream.status, ctype, claim.node.id, content)
            return
        await send(_start(upstream.status, ctype, claim.node.id))
        try:
            async for chunk in upstream.content.iter_any():
                if claim.first_byte is None:
                    claim.first_byte = time.perf_counter()
                claim.tail = (claim.tail + chunk)[-2048:]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finished = True
        except (TimeoutError, aiohttp.ClientError) as exc:  # the node went away mid-stream
            ok = False
            log.warning("node %s failed mid-stream: %s", claim.node.id[:8], exc)
            await send(
                {
                    "type": "http.response.body",
                    "more_body": True,
                    "body": _error_event(
                        ctype.startswith("application/x-ndjson"),
                        f"node {claim.node.id[:8]} failed during the response: {exc!r}",
                    ),
                }
            )
        await send({"type": "http.response.body", "body": b""})
    finally:
        if finished:
            upstream.release()
        else:
            upstream.close()  # the node stops generating for a client that is gone
            if ok:
                claim.status = 499  # nginx's "client closed request", for the history
        claim.release(ok)


class ProxyApp:
    """ASGI: the proxied routes here, everything else to the Litestar app."""

    def __init__(self, app, cluster: Cluster):
        self.app, self.cluster = app, cluster

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] in PROXIED:
            await handle(self.cluster, scope, receive, send)
        else:
            await self.app(scope, receive, send)
