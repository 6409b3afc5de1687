"""ollama's model management through the router: one call sent to several nodes, and what
each answered.

Which nodes (server/router_manage.py picks per call): the ones a client names (`?node=ID`,
repeatable, a full id or a unique prefix), or by default every online node, or for a create
from a model the online nodes that list it. The heartbeats' lists lag behind (a model pulled,
made or copied a moment ago), so calls that only some nodes can do (delete, stop, copy) go to
every online node, and a node's 404 (it has no such model) is no failure when another node
did it (`summary(absent_ok=True)`).

Streamed answers (pull, create) pass each node's NDJSON lines on as they come, each with
`node` added; a node's error line becomes a status line (`"status": "failed"`, `node_error`),
so that the other nodes' progress goes on, and the last line says how it went everywhere:
`{"status": "success", "nodes": [...]}` or `{"error": "...", "nodes": [...]}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmlb.balancer.cluster import Cluster, TooBig, read_capped
from llmlb.balancer.nodes import NodeEntry
from llmlb.balancer.registry import Registry
from llmlb.errors import BadRequest, ModelNotFound, Unavailable

log = logging.getLogger("llmlb.router")
ANSWER_BYTES = 8 * 1024 * 1024  # a management answer is a line or two of JSON
LINE_BYTES = 64 * 1024  # one NDJSON progress line (aiohttp refuses longer ones)
# a node's pull or create answers progress lines; a plain call answers within this
CALL_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=600)
MIN_PREFIX = 4


@dataclass
class Outcome:
    """One node's answer to one call."""

    node: NodeEntry
    status: int  # HTTP status; 502 when it could not be reached or broke off
    error: str | None = None
    answer: Any = None  # its JSON body (or last line), when it sent one

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": short(self.node), "address": address(self.node)}
        out["status"] = self.status
        if self.error is not None:
            out["error"] = self.error
        elif self.answer is not None:
            out["answer"] = self.answer
        return out


def short(node: NodeEntry) -> str:
    return node.id[:8]


def address(node: NodeEntry) -> str:
    return f"{node.host}:{node.port}"


# -- which nodes ----------------------------------------------------------------------------


def named(registry: Registry, wanted: list[str]) -> list[NodeEntry]:
    """The nodes a client named by id or a unique prefix of it; each must be online."""
    out: list[NodeEntry] = []
    for ident in wanted:
        found = [n for n in registry.nodes.values() if n.id == ident]
        if not found and len(ident) >= MIN_PREFIX:
            found = [n for n in registry.nodes.values() if n.id.startswith(ident)]
        if not found:
            raise BadRequest(f"node '{ident}' is not registered with this router")
        if len(found) > 1:
            raise BadRequest(f"node '{ident}' is ambiguous; give more of its id")
        node = found[0]
        if not registry.online(node):
            raise Unavailable(f"node {short(node)} ({address(node)}) is {registry.label(node)}")
        if node not in out:
            out.append(node)
    return out


def online(registry: Registry) -> list[NodeEntry]:
    nodes = [n for n in registry.nodes.values() if registry.online(n)]
    if not nodes:
        raise Unavailable("no node is online")
    return nodes


def having(registry: Registry, model: str) -> list[NodeEntry]:
    """The online nodes that list `model` (a name or alias); every online node when none
    does (a download in progress, or a model made since the last heartbeat)."""
    nodes = online(registry)
    try:
        name = registry.canonical(model)
    except ModelNotFound:
        return nodes
    listed = [n for n in nodes if name in n.names().values()]
    return listed or nodes


# -- calls ----------------------------------------------------------------------------------


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return raw[:500].decode("utf-8", "replace")


def _error_of(status: int, answer: Any) -> str:
    if isinstance(answer, dict):
        err = answer.get("error")
        if isinstance(err, dict):
            err = err.get("message")
        if err is not None:
            return str(err)
    return f"HTTP {status}"


async def call(
    cluster: Cluster,
    node: NodeEntry,
    method: str,
    path: str,
    body: bytes | AsyncIterator[bytes] | None,
    headers: dict[str, str],
) -> Outcome:
    """One node's whole answer to one request (at most ANSWER_BYTES of it)."""
    try:
        async with cluster.http.request(
            method, node.url + path, data=body, headers=headers, timeout=CALL_TIMEOUT
        ) as r:
            answer = _decoded(await read_capped(r, ANSWER_BYTES))
            if r.status >= 400:
                return Outcome(node, r.status, _error_of(r.status, answer))
            return Outcome(node, r.status, answer=answer)
    except (aiohttp.ClientError, TimeoutError, TooBig) as exc:
        return Outcome(node, 502, f"node could not be reached or broke off: {exc!r}"[:500])


async def call_all(
    cluster: Cluster,
    nodes: list[NodeEntry],
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
) -> list[Outcome]:
    return list(
        await asyncio.gather(*(call(cluster, n, method, path, body, headers) for n in nodes))
    )


def summary(
    what: str, outcomes: list[Outcome], absent_ok: bool = False
) -> tuple[int, dict[str, Any]]:
    """(status, body) of a call every node answered: 200 when all did it, else the first
    failure's status and one line naming each node that failed and why. `absent_ok`: a
    node's 404 (it has no such model, or has it not loaded) is no failure when another
    node did it."""
    nodes = [o.as_json() for o in outcomes]
    failed = [o for o in outcomes if o.status >= 400]
    if absent_ok and len(failed) < len(outcomes) and all(o.status == 404 for o in failed):
        failed = []
    if not failed:
        return 200, {"status": "success", "nodes": nodes}
    reasons = "; ".join(f"{short(o.node)} ({address(o.node)}): {o.error}" for o in failed)
    message = f"{what} failed on {len(failed)} of {len(outcomes)} nodes: {reasons}"
    return failed[0].status, {"error": message, "nodes": nodes}


# -- streamed calls -------------------------------------------------------------------------


async def _lines(
    cluster: Cluster,
    node: NodeEntry,
    path: str,
    body: bytes,
    headers: dict[str, str],
    out: asyncio.Queue[tuple[NodeEntry, dict[str, Any] | Outcome]],
) -> None:
    """One node's progress lines into `out`, then its Outcome."""
    last: dict[str, Any] = {}
    try:
        async with cluster.http.post(
            node.url + path, data=body, headers=headers, timeout=CALL_TIMEOUT
        ) as r:
            if r.status >= 400:
                answer = _decoded(await read_capped(r, ANSWER_BYTES))
                await out.put((node, Outcome(node, r.status, _error_of(r.status, answer))))
                return
            async for raw in r.content:
                line = _decoded(raw[:LINE_BYTES])
                if not isinstance(line, dict):
                    continue
                last = line
                if "error" in line:
                    status = line.get("status_code") or 500
                    await out.put((node, Outcome(node, status, _error_of(status, line))))
                    return
                await out.put((node, line))
    except (aiohttp.ClientError, TimeoutError, TooBig, ValueError) as exc:
        await out.put((node, Outcome(node, 502, f"node broke off: {exc!r}"[:500])))
        return
    if last.get("status") == "success":
        await out.put((node, Outcome(node, 200, answer=last)))
    else:
        await out.put((node, Outcome(node, 502, "the node's answer ended before 'success'")))


async def stream_all(
    cluster: Cluster,
    what: str,
    nodes: list[NodeEntry],
    path: str,
    body: bytes,
    headers: dict[str, str],
    outcomes: list[Outcome],
) -> AsyncIterator[dict[str, Any]]:
    """Every node's progress lines as they come, each naming its node; then the summary
    line (`status: success`, or `error`), with every node's outcome. `outcomes` is filled
    with each node's, in the order of `nodes`, before the summary line."""
    queue: asyncio.Queue[tuple[NodeEntry, dict[str, Any] | Outcome]] = asyncio.Queue()
    tasks = [asyncio.ensure_future(_lines(cluster, n, path, body, headers, queue)) for n in nodes]
    ended: dict[str, Outcome] = {}
    try:
        while len(ended) < len(nodes):
            node, item = await queue.get()
            if isinstance(item, Outcome):
                ended[node.id] = item
                if item.status >= 400:
                    yield {"status": "failed", "node": short(node), "node_error": item.error}
                continue
            yield {**item, "node": short(node)}
    finally:
        for task in tasks:  # the client went away: the nodes' connections close too
            task.cancel()
    outcomes += [ended[n.id] for n in nodes]
    yield summary(what, outcomes)[1]


# -- uploads --------------------------------------------------------------------------------


class _Sink:
    """One node's share of an upload: the chunks it has yet to send. A node that ended (it
    answered, or failed) takes no more, so the others never wait on it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)
        self.ended = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.queue.get()) is not None:
            yield chunk

    def end(self) -> None:
        self.ended = True
        while not self.queue.empty():  # a put waiting for room goes through
            self.queue.get_nowait()


async def upload_all(
    cluster: Cluster,
    nodes: list[NodeEntry],
    path: str,
    chunks: AsyncIterator[bytes],
    headers: dict[str, str],
) -> list[Outcome]:
    """The client's body to every node at once, as it arrives: memory holds a few chunks
    per node, and the body goes at the pace of the slowest node."""
    sinks = [_Sink() for _ in nodes]

    async def send(node: NodeEntry, sink: _Sink) -> Outcome:
        try:
            return await call(cluster, node, "POST", path, sink.chunks(), headers)
        finally:
            sink.end()

    async def feed() -> None:
        async for chunk in chunks:
            for sink in sinks:
                if not sink.ended:
                    await sink.queue.put(chunk)
        for sink in sinks:  # the end; a body cut short ends nothing (the sends are cancelled)
            if not sink.ended:
                await sink.queue.put(None)

    sending = [asyncio.ensure_future(send(n, s)) for n, s in zip(nodes, sinks, strict=True)]
    try:
        await feed()
        return list(await asyncio.gather(*sending))
    finally:
        for task in sending:
            task.cancel()
