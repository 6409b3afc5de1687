"""Local models: POST /api/create, POST/HEAD /api/blobs/{digest}, POST /api/copy (ollama's).

Everything a request can get wrong is checked before the first status line (jobs/
create_plan.py), so those are plain HTTP errors; the slow part then runs in a worker thread
(its native work in child processes) and reports as ollama's NDJSON status lines. A client
that hangs up stops it, and nothing is kept.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any

from anyio import from_thread, to_thread
from litestar import Request, Response, head, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter
from litestar.response import Stream

from llmlb.errors import BadRequest, LlmlbError, NotFound
from llmlb.jobs.blobs import hex_of
from llmlb.jobs.create import Creations
from llmlb.jobs.create_plan import CreateRequest
from llmlb.server.create_requests import CopyBody, CreateBody
from llmlb.server.node_services import NodeServices

NDJSON = "application/x-ndjson"
BlobDigest = Annotated[str, PathParameter(max_length=80)]  # sha256:<hex>, checked by hex_of


async def _create(
    request: Request, node: NodeServices, req: CreateRequest, stream: bool
) -> Response:
    creations: Creations = node.creations
    creations.claim(req.name)
    try:
        plan = await to_thread.run_sync(creations.plan, req)
    except BaseException:
        creations.release(req.name)
        raise
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    cancel = threading.Event()

    def say(item: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, item)

    def unload(name: str) -> None:
        from_thread.run(node.scheduler.unload, name)

    async def work() -> None:
        try:
            await to_thread.run_sync(
                creations.run, plan, say, cancel, unload, abandon_on_cancel=False
            )
        except LlmlbError as exc:
            say({"error": exc.message, "status_code": exc.status})
        except Exception as exc:  # a bug: still one line, and the name is free again
            say({"error": f"internal error: {type(exc).__name__}: {exc}", "status_code": 500})
        finally:
            creations.release(req.name)
            loop.call_soon_threadsafe(events.put_nowait, None)

    task = asyncio.ensure_future(work())

    async def lines() -> AsyncIterator[dict[str, Any]]:
        try:
            while (item := await events.get()) is not None:
                yield item
        finally:
            if not task.done():  # the client went away: stop the work, keep nothing
                cancel.set()
                await asyncio.shield(task)

    if stream:

        async def body() -> AsyncIterator[bytes]:
            async for item in lines():
                item.pop("status_code", None)
                yield (json.dumps(item) + "\n").encode()

        return Stream(body(), media_type=NDJSON)
    watcher = asyncio.ensure_future(_disconnected(request, cancel))
    last: dict[str, Any] = {}
    try:
        async for item in lines():
            last = item
    finally:
        watcher.cancel()
    if "error" in last:
        err = LlmlbError(last["error"])
        err.status = last.get("status_code") or 500
        raise err
    return Response(last, media_type="application/json")


async def _disconnected(request: Request, cancel: threading.Event) -> None:
    """A non-streamed create stops when its client hangs up (nothing else would tell)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    cancel.set()


@post("/api/create", status_code=200)
async def create(
    request: Request, data: JSONBody[CreateBody], node: NamedDependency[NodeServices]
) -> Response:
    return await _create(request, node, data.request(), data.stream)


@post("/api/copy", status_code=200)
async def copy(
    request: Request, data: JSONBody[CopyBody], node: NamedDependency[NodeServices]
) -> Response:
    """A new name over the same files: hard links, no bytes copied; `rm` of either leaves
    the other whole."""
    await _create(request, node, CreateRequest(name=data.destination, source=data.source), False)
    return Response(b"", status_code=200)


@head("/api/blobs/{digest:str}", status_code=200)
async def blob_exists(digest: BlobDigest, node: NamedDependency[NodeServices]) -> None:
    found = await to_thread.run_sync(node.creations.blobs.find, hex_of(digest))
    if found is None:
        raise NotFound(f"blob {digest} not found")


@post("/api/blobs/{digest:str}", status_code=201, request_max_body_size=None)
async def blob_upload(
    request: Request, digest: BlobDigest, node: NamedDependency[NodeServices]
) -> Response:
    """The body, checked against its sha256 while it streams to disk."""
    hexdigest = hex_of(digest)
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise BadRequest("Content-Length is not a number")
    created = await node.creations.blobs.receive(
        hexdigest, request.stream(), int(length) if length is not None else None
    )
    return Response(b"", status_code=201 if created else 200)


routes = [create, copy, blob_exists, blob_upload]
