"""Forward one API request to a node chosen by the policy; streams pass through chunk by chunk.

This is plain ASGI in front of the Litestar app: the proxied routes are the router's hot path,
and Litestar's request and streaming-response layers cost about 0.1 ms a chunk, which at 16
concurrent streams on two cores added several ms to each request. The upstream side uses
aiohttp for its C HTTP parser (httpx's pure-Python h11 cost about 0.3 ms a chunk); what may be
re-sent to another node, and how an answer passes through, is in balancer/upstream.py.

The API key is checked from the headers before a byte of the body is read, and the body is
decoded only for its `model` (other fields are skipped, not built).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

import msgspec

from llmlb.balancer import upstream as up
from llmlb.balancer.affinity import request_chain
from llmlb.balancer.cluster import Cluster
from llmlb.balancer.nodes import Held
from llmlb.balancer.stored import owner
from llmlb.errors import BadRequest, LlmlbError, TooLarge, Unavailable, error_body
from llmlb.jsonio import InvalidField, decode_as

log = logging.getLogger("llmlb.router")
MAX_NODES = 2  # a request goes to two nodes at most, and to the second only if the first
# never saw it or refused it before any work (see upstream.py)
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
        "/v1/responses",
    }
)
# Cheap reads a node answers from its catalog: sent to any node with the model, without a claim,
# so they never wait behind generations for a free slot.
READS = frozenset({"/api/show"})
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
    "expect",
}
_TOKENS_IN = re.compile(rb'"(?:prompt_eval_count|prompt_tokens|input_tokens)":\s*(\d+)')
_TOKENS_OUT = re.compile(rb'"(?:eval_count|completion_tokens|output_tokens)":\s*(\d+)')
MAX_TOKENS = 2**62  # what the history's BIGINT column holds; a node may send any digits


def _last_int(pattern: re.Pattern, data: bytes) -> int:
    found = pattern.findall(data)
    return min(int(found[-1][:20]), MAX_TOKENS) if found else 0


class Claim(up.Tally):
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
        super().__init__()
        self.cluster, self.held, self.path, self.model = cluster, held, path, model
        self.node = held.node
        self.key_id = key_id
        self.started = started
        self.status, self.done = 0, False

    def release(self, ok: bool = True, node_fault: bool = True) -> None:
        """`ok` False: the request failed on this node; `node_fault` says whether the node
        itself failed (it cools down), or answered an error for this request (it does not)."""
        if self.done:
            return
        self.done = True
        if ok and self.status < 400 and self.model not in self.node.loaded:
            self.node.loaded.append(self.model)  # it loads on first use; a heartbeat confirms
        self.cluster.admission.release(self.held, ok, node_fault)
        duration = (time.perf_counter() - self.started) * 1000
        ttft = (self.first_byte - self.started) * 1000 if self.first_byte else None
        self.cluster.history.record(
            endpoint=self.path,
            model=self.model,
            node_id=self.node.id,
            status=self.status or 502,
            duration_ms=round(duration, 2),
            ttft_ms=round(ttft, 2) if ttft is not None else None,
            tokens_in=_last_int(_TOKENS_IN, self.tail),
            tokens_out=_last_int(_TOKENS_OUT, self.tail),
            key_id=self.key_id,
        )


class ClientGone(Exception):
    """The client hung up."""


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


async def send_error(send, path: str, exc: LlmlbError, unread: bool = False) -> None:
    """The error in the API's format. `unread`: the body was not read (refused from the
    headers), so the connection closes rather than read a body nobody wants."""
    if exc.status >= 500:
        log.warning("POST %s: %s", path, exc.message)
    extra = [(b"retry-after", b"1")] if exc.status in (429, 503) else []
    if unread:
        extra.append((b"connection", b"close"))
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
    body_read = False

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
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        key_id = cluster.keys.identify(headers)  # 401 from the headers alone
        body = await _read_body(scope, receive)
        body_read = True

        async def watch() -> None:  # after the body, receive() only ever says "disconnect"
            while (await receive())["type"] != "http.disconnect":
                pass
            if not finished:
                gone.set()
                me.cancel()

        watcher = asyncio.create_task(watch())
        await _forward(cluster, path, headers, key_id, body, tracked_send, outcome)
    except ClientGone:
        pass
    except asyncio.CancelledError:
        if not gone.is_set():
            raise  # the server is stopping, not the client leaving
    except LlmlbError as exc:
        if not outcome.status:
            await send_error(tracked_send, path, exc, unread=not body_read)
    except Exception:
        log.exception("unexpected error on POST %s", path)
        if not outcome.status:
            await send_error(tracked_send, path, LlmlbError("internal error"), not body_read)
    finally:
        finished = True  # before the watcher can run again: a hang-up now cancels nothing
        if watcher is not None:
            watcher.cancel()
        status = outcome.status if outcome.status and not gone.is_set() else 499
        cluster.metrics.observe(outcome.node, status, time.perf_counter() - outcome.started)


class _Target(msgspec.Struct):
    """What the router reads of a body; every other field is skipped unbuilt."""

    model: str | None = None
    name: str | None = None  # older ollama clients
    previous_response_id: str | None = None  # /v1/responses: the node that stored it


BAD_MODEL = "field 'model' must be a non-empty string of at most 512 characters"


def _target(body: bytes) -> _Target:
    try:
        target = decode_as(body or b"{}", _Target)
    except InvalidField as exc:
        if exc.where == "previous_response_id":
            raise BadRequest("field 'previous_response_id' must be a string") from None
        raise BadRequest(BAD_MODEL) from None
    model = target.model or target.name
    if not model or len(model) > 512:
        raise BadRequest(BAD_MODEL)
    return target


def requested_model(body: bytes) -> str:
    """The model a proxied body names (`model`, or `name` as older ollama clients send)."""
    target = _target(body)
    return target.model or target.name or ""


def _pinned(cluster: Cluster, response_id: str, model: str) -> set[str]:
    """A continued response goes to the node that stored it: every other node is left out."""
    node = owner(cluster.registry, response_id, "Previous response")
    if model not in node.names().values():
        raise BadRequest(
            f"previous response '{response_id}' is kept by node {node.id[:8]}, "
            f"which does not have model '{model}'"
        )
    return {n for n in cluster.registry.nodes if n != node.id}


async def _forward(
    cluster: Cluster, path: str, headers: dict, key_id: str | None, body: bytes, send, outcome
) -> None:
    target = _target(body)
    model = cluster.registry.canonical(target.model or target.name or "")
    forwarded = {k: v for k, v in headers.items() if k not in DROPPED}
    if path in READS:
        await _read(cluster, path, model, body, forwarded, send, outcome)
        return
    started = time.perf_counter()
    chain = request_chain(path, model, body) if cluster.admission.balance is not None else []
    tried: set[str] = set()
    if path == "/v1/responses" and target.previous_response_id:
        tried = _pinned(cluster, target.previous_response_id, model)
    last_error = ""
    for _ in range(MAX_NODES):
        try:
            held = await cluster.admission.acquire(model, frozenset(tried), chain)
        except Unavailable:
            if last_error:
                raise Unavailable(f"every node with '{model}' failed: {last_error}") from None
            raise
        node = held.node
        claim = Claim(cluster, held, path, model, key_id, started)
        try:
            upstream = await up.open_answer(cluster, node, path, body, forwarded)
        except up.Unreachable as exc:  # never sent: another node may have it
            last_error = str(exc)
            claim.release(ok=False)
            tried.add(node.id)
            continue
        except LlmlbError as exc:  # sent, then dropped or silent: answered, not re-sent
            claim.status = exc.status
            claim.release(ok=False)
            raise
        except asyncio.CancelledError:
            claim.status = 499  # the client left while we waited: not the node's fault
            claim.release()
            raise
        claim.status = upstream.status
        if upstream.status in up.REFUSED:  # "not now", before any work: another node may
            last_error = f"{node.host}:{node.port}: HTTP {upstream.status}"
            upstream.release()
            claim.release(ok=False)
            tried.add(node.id)
            continue
        outcome.node = node.id
        await _respond(claim, upstream, send)
        return
    raise Unavailable(f"every node with '{model}' failed: {last_error}")


async def _read(cluster: Cluster, path: str, model: str, body: bytes, headers, send, outcome):
    tried: set[str] = set()
    for _ in range(MAX_NODES):
        node = cluster.registry.any_node(model, frozenset(tried))
        try:
            upstream = await up.open_answer(cluster, node, path, body, headers)
        except up.Unreachable as exc:
            log.warning("node %s failed %s: %s", node.id[:8], path, exc)
            tried.add(node.id)
            continue
        complete = False
        try:
            if upstream.status in up.REFUSED:
                tried.add(node.id)
                continue
            outcome.node = node.id
            complete = await up.relay(upstream, send, node.id, up.Tally())
            return
        finally:
            if complete:
                upstream.release()  # read to its end: the connection serves again
            else:
                upstream.close()
    raise Unavailable(f"every node with '{model}' failed to answer {path}")


async def _respond(claim: Claim, upstream, send) -> None:
    """The node's answer to the client; the claim is released however it ends."""
    ended = "gone"  # until the answer is through: the client left (or the server stops)
    try:
        ended = "complete" if await up.relay(upstream, send, claim.node.id, claim) else "broken"
    except LlmlbError:
        ended = "refused"  # an answer too large to pass on, refused before a byte went out
        raise
    finally:
        if ended == "complete":
            upstream.release()
        else:
            upstream.close()  # the node stops generating for a client that is gone
        if ended == "gone":
            claim.status = 499  # nginx's "client closed request", for the history
            claim.release()
        elif ended == "broken":  # the node failed during its answer
            claim.status = 502
            claim.release(ok=False)
        elif ended == "refused":
            claim.status = 502
            claim.release(ok=False, node_fault=False)
        else:
            # a node that answered an error (a 500 for a request that crashed its model) is
            # working: the error is the request's, and other requests keep going there
            claim.release(ok=claim.status < 500, node_fault=False)


class ProxyApp:
    """ASGI: the proxied routes here, everything else to the Litestar app."""

    def __init__(self, app, cluster: Cluster):
        self.app, self.cluster = app, cluster

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] in PROXIED:
            await handle(self.cluster, scope, receive, send)
        else:
            await self.app(scope, receive, send)
