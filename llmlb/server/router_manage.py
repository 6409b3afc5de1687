"""The router's side of ollama's model management and of stored responses: each call goes to
the nodes it concerns (balancer/manage.py), and the answer says what each node answered.

Which nodes, unless the client names them with `?node=ID` (repeatable; an id or a unique
prefix of at least 4 characters, each online):
- pull, blobs (HEAD, POST): every online node (blobs are content-addressed; HEAD is 200 only
  when every node has the blob, so that a client uploads it when any lacks it);
- create: the online nodes that list its `from` model, else every online node (a model made
  of uploaded files: the blobs went to every node);
- delete, stop, copy: every online node; one that lacks the model (for stop: has it not
  loaded) answers 404, which fails the call only when no node did it.
/api/push is not something llmlb does (models come from Hugging Face): 400, as on a node.

GET and DELETE /v1/responses/{id} go to the node that stored the response (balancer/stored.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated

import aiohttp
import msgspec
from litestar import Request, Response, delete, get, head, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.response import Stream

from llmlb.balancer import manage
from llmlb.balancer.cluster import Cluster
from llmlb.balancer.nodes import NodeEntry
from llmlb.balancer.stored import owner
from llmlb.errors import BadGateway, BadRequest, from_status
from llmlb.server.requests import ModelName, ModelOnly, PullRequest, _Named, push_refused

NDJSON = "application/x-ndjson"
JSON_HEADERS = {"content-type": "application/json"}
PULL_HEADERS = ("x-hf-token", "x-hf-endpoint")  # what `llmlb node pull` sends a node
DIGEST = re.compile(r"^sha256[:-][0-9a-f]{64}$")


class CreateTarget(_Named, kw_only=True):
    """What the router reads of /api/create; each node checks the whole body itself."""

    from_: ModelName | None = msgspec.field(default=None, name="from")
    stream: bool = True


class CopyTarget(msgspec.Struct, kw_only=True):
    source: ModelName
    destination: ModelName


Nodes = Annotated[list[str] | None, QueryParameter(max_items=64)]
Digest = Annotated[str, PathParameter(max_length=80)]
ResponseIdParam = Annotated[str, PathParameter(max_length=80)]


def _chosen(cluster: Cluster, node: list[str] | None, default: list[NodeEntry]) -> list[NodeEntry]:
    return manage.named(cluster.registry, node) if node else default


def _answer(what: str, outcomes: list[manage.Outcome], absent_ok: bool = False) -> Response:
    status, body = manage.summary(what, outcomes, absent_ok)
    return Response(body, status_code=status)


async def _progress(
    cluster: Cluster, what: str, nodes: list[NodeEntry], path: str, body: bytes, headers, stream
) -> Response:
    """A pull or create on several nodes: their lines as they come, or the summary alone."""
    outcomes: list[manage.Outcome] = []
    lines = manage.stream_all(cluster, what, nodes, path, body, headers, outcomes)
    if stream:

        async def ndjson() -> AsyncIterator[bytes]:
            async for line in lines:
                yield (json.dumps(line) + "\n").encode()

        return Stream(ndjson(), media_type=NDJSON)
    async for _ in lines:
        pass
    return _answer(what, outcomes)


@post("/api/pull", status_code=200)
async def pull(
    request: Request, data: JSONBody[PullRequest], cluster: NamedDependency[Cluster], node: Nodes
) -> Response:
    nodes = _chosen(cluster, node, manage.online(cluster.registry))
    headers = dict(JSON_HEADERS)
    headers |= {h: request.headers[h] for h in PULL_HEADERS if request.headers.get(h)}
    raw = json.loads(await request.body())
    body = json.dumps({**raw, "stream": True}).encode()  # progress keeps each node's link alive
    return await _progress(cluster, "pull", nodes, "/api/pull", body, headers, data.stream)


@post("/api/create", status_code=200)
async def create(
    request: Request, data: JSONBody[CreateTarget], cluster: NamedDependency[Cluster], node: Nodes
) -> Response:
    reg = cluster.registry
    default = manage.having(reg, data.from_) if data.from_ else manage.online(reg)
    nodes = _chosen(cluster, node, default)
    raw = json.loads(await request.body())
    body = json.dumps({**raw, "stream": True}).encode()
    return await _progress(cluster, "create", nodes, "/api/create", body, JSON_HEADERS, data.stream)


@post("/api/copy", status_code=200)
async def copy(
    request: Request, data: JSONBody[CopyTarget], cluster: NamedDependency[Cluster], node: Nodes
) -> Response:
    return await _everywhere(cluster, node, request, "POST", "/api/copy", "copy")


@delete("/api/delete", status_code=200)
async def remove(
    request: Request, data: JSONBody[ModelOnly], cluster: NamedDependency[Cluster], node: Nodes
) -> Response:
    return await _everywhere(cluster, node, request, "DELETE", "/api/delete", "delete")


@post("/api/stop", status_code=200)
async def stop(
    request: Request, data: JSONBody[ModelOnly], cluster: NamedDependency[Cluster], node: Nodes
) -> Response:
    return await _everywhere(cluster, node, request, "POST", "/api/stop", "stop")


async def _everywhere(
    cluster: Cluster, node: list[str] | None, request: Request, method: str, path: str, what: str
) -> Response:
    """The call to every online node (or those `?node=` names): those that have the model do
    it, a 404 from one that lacks it fails the call only when no node did it."""
    nodes = _chosen(cluster, node, manage.online(cluster.registry))
    outcomes = await manage.call_all(
        cluster, nodes, method, path, await request.body(), JSON_HEADERS
    )
    return _answer(what, outcomes, absent_ok=True)


def _digest(digest: str) -> str:
    if not DIGEST.match(digest):
        raise BadRequest(f"'{digest}' is not a blob digest (sha256:<64 hex digits>)")
    return digest


@head("/api/blobs/{digest:str}", status_code=200)
async def blob_exists(digest: Digest, cluster: NamedDependency[Cluster], node: Nodes) -> None:
    """200 when every node has the blob; else the first other answer (404: upload it)."""
    nodes = _chosen(cluster, node, manage.online(cluster.registry))
    path = f"/api/blobs/{_digest(digest)}"
    outcomes = await manage.call_all(cluster, nodes, "HEAD", path, None, {})
    status, body = manage.summary("blob check", outcomes)
    if status >= 400:
        raise from_status(status, body["error"])


@post("/api/blobs/{digest:str}", status_code=201, request_max_body_size=None)
async def blob_upload(
    request: Request, digest: Digest, cluster: NamedDependency[Cluster], node: Nodes
) -> Response:
    """The body to every node at once as it arrives: 201 when a node made the blob, 200
    when all had it."""
    nodes = _chosen(cluster, node, manage.online(cluster.registry))
    path = f"/api/blobs/{_digest(digest)}"
    headers = {"content-type": "application/octet-stream"}
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest("Content-Length is not a number")
        headers["content-length"] = length
    outcomes = await manage.upload_all(cluster, nodes, path, request.stream(), headers)
    status, body = manage.summary("blob upload", outcomes)
    if status < 400:
        status = 201 if any(o.status == 201 for o in outcomes) else 200
    return Response(body, status_code=status)


@post("/api/push", status_code=200)
async def push(data: JSONBody[ModelOnly]) -> None:
    raise push_refused(data.target)


async def _to_owner(cluster: Cluster, method: str, response_id: str) -> Response:
    node = owner(cluster.registry, response_id)
    url = f"{node.url}/v1/responses/{response_id}"
    try:
        async with cluster.http.request(method, url, timeout=manage.CALL_TIMEOUT) as r:
            raw = await r.read()
            media = r.headers.get("content-type", "application/json")
            status = r.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BadGateway(f"node {node.id[:8]} ({node.host}:{node.port}) failed: {exc!r}") from exc
    headers = {"x-llmlb-node": node.id[:8]}
    return Response(raw, status_code=status, media_type=media, headers=headers)


@get("/v1/responses/{response_id:str}")
async def get_response(response_id: ResponseIdParam, cluster: NamedDependency[Cluster]) -> Response:
    return await _to_owner(cluster, "GET", response_id)


@delete("/v1/responses/{response_id:str}", status_code=200)
async def delete_response(
    response_id: ResponseIdParam, cluster: NamedDependency[Cluster]
) -> Response:
    return await _to_owner(cluster, "DELETE", response_id)


ROUTES = [
    pull,
    create,
    copy,
    remove,
    stop,
    blob_exists,
    blob_upload,
    push,
    get_response,
    delete_response,
]
