"""One request to one node, and its answer passed on: the side of the proxy that faces nodes.

What may go to another node: only a request the node never saw (the connection could not be
made) or one it refused before doing any work (503 or 429). A node that took the request and
then failed it (a 500, a dropped connection, silence) may have failed *because of* the
request, so the client gets that answer and the request goes nowhere else: one poison request
costs one node, never the cluster.

A node that accepts a connection and then says nothing is found out without a deadline on the
answer itself (a model load, or a long answer that is not streamed, takes minutes): after
`first_byte_secs` of silence the router asks the node's `/`, which a live node answers at once
(loads and generation run off its event loop), and waits on only while it keeps answering.

Answers pass through as they arrive, never held whole, and at most MAX_ANSWER bytes of each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp

from llmlb.balancer.cluster import Cluster
from llmlb.balancer.nodes import NodeEntry
from llmlb.errors import BadGateway, GatewayTimeout

log = logging.getLogger("llmlb.router")
MAX_ANSWER = 1 << 30  # 1 GiB: far past any answer (2,048 embeddings of 4,096 floats are ~170 MB)
STREAMING = ("text/event-stream", "application/x-ndjson")
REFUSED = frozenset({429, 503})  # a node's "not now", said before it did any work


class Unreachable(Exception):
    """The connection could not be made: the node never saw the request."""


class Tally:
    """What the history wants from an answer: when its first byte came, and its end (the
    token counts are in the last lines)."""

    def __init__(self) -> None:
        self.first_byte: float | None = None
        self.tail = b""


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict):
    return await http.post(url, data=body, headers=headers)


def _discard(task: asyncio.Task) -> None:
    """A request given up on: close its response should it still come."""
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def open_answer(
    cluster: Cluster, node: NodeEntry, path: str, body: bytes, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    """The node's response, its status and headers read. Unreachable when the request could
    not be sent; BadGateway or GatewayTimeout when the node took it and failed it."""
    where = f"node {node.id[:8]} ({node.host}:{node.port})"
    task = asyncio.create_task(_post(cluster.http, node.url + path, body, headers))
    handed = False
    try:
        while not (await asyncio.wait({task}, timeout=cluster.first_byte_secs))[0]:
            if not await cluster.probe(node):
                raise GatewayTimeout(
                    f"{where} took the request and stopped answering; "
                    "it was not sent to another node"
                )
        try:
            response = task.result()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise Unreachable(f"{node.host}:{node.port}: {type(exc).__name__}") from exc
        except aiohttp.ServerTimeoutError as exc:
            raise GatewayTimeout(f"{where} sent no answer in time") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BadGateway(
                f"{where} closed the connection after it received the request "
                f"({type(exc).__name__}); it was not sent to another node, in case the "
                "request caused it"
            ) from exc
        handed = True
        return response
    finally:
        if not handed:
            task.cancel()
            task.add_done_callback(_discard)


def _start(status: int, ctype: str, node_id: str, length: int | None = None) -> dict:
    headers = [(b"content-type", ctype.encode("latin-1"))]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    headers.append((b"x-llmlb-node", node_id[:8].encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


def _error_event(ndjson: bool, message: str) -> bytes:
    if ndjson:
        return (json.dumps({"error": message}) + "\n").encode()
    error = {"message": message, "type": "server_error", "code": 502}
    return f"data: {json.dumps({'error': error})}\n\n".encode()


async def relay(upstream: aiohttp.ClientResponse, send, node_id: str, tally: Tally) -> bool:
    """Pass the node's answer on, chunk by chunk. False when the node failed during it: a
    stream then ends with an error event, an answer that is not streamed is cut short (the
    client sees the connection close before its length). BadGateway, before anything is
    sent, for an answer that says it is larger than MAX_ANSWER."""
    ctype = upstream.headers.get("content-type", "application/json")
    streaming = ctype.startswith(STREAMING) and upstream.status < 400
    length = upstream.content_length
    if length is not None and length > MAX_ANSWER:
        raise BadGateway(
            f"node {node_id[:8]} answered {length} bytes, more than the router passes on "
            f"({MAX_ANSWER})"
        )
    await send(_start(upstream.status, ctype, node_id, None if streaming else length))
    size = 0
    try:
        async for chunk in upstream.content.iter_any():
            size += len(chunk)
            if size > MAX_ANSWER:
                raise aiohttp.ClientPayloadError(f"more than {MAX_ANSWER} bytes")
            if streaming and tally.first_byte is None:
                tally.first_byte = time.perf_counter()
            tally.tail = (tally.tail + chunk)[-2048:]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (TimeoutError, aiohttp.ClientError) as exc:  # the node went away mid-answer
        log.warning("node %s failed during the answer: %s", node_id[:8], exc)
        if streaming:
            message = f"node {node_id[:8]} failed during the response: {exc!r}"
            event = _error_event(ctype.startswith("application/x-ndjson"), message)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        return False
    await send({"type": "http.response.body", "body": b""})
    return True
