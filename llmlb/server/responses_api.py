"""OpenAI's Responses API on a node: POST /v1/responses (one object, or the typed events the
openai clients' `responses.stream` reads), GET and DELETE /v1/responses/{id}.

Built on the generation path every API shares (server/inference.py: plan_chat, claim,
generate, primed, collect); responses_items turns input items into chat messages and the
generation's events into output items. A response is stored (unless `store` is false) in the
node's catalog, so `previous_response_id` continues its conversation: its input and output
come before the new input. Its id names this node (`resp_` + 8 hex of the node's id), which
is how the router sends a continuation back to the node that has it.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from anyio import to_thread
from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter
from litestar.response import Stream

from llmlb.engine.scheduler import Scheduler
from llmlb.engine.templates import Templates
from llmlb.errors import BadRequest, NotFound
from llmlb.server import inference as inf
from llmlb.server.metrics_api import NodeMetrics
from llmlb.server.node_services import NodeServices
from llmlb.server.responses_items import Event, Output, chat_messages, read_items, stored_items
from llmlb.server.responses_requests import RESPONSE_ID, Item, ResponsesRequest
from llmlb.store import responses as stored

log = logging.getLogger("llmlb.server")
SSE = "text/event-stream"
ResponseIdParam = Annotated[str, PathParameter(max_length=80)]


def new_id(node_id: str) -> str:
    """resp_ + the first 8 hex digits of this node's id + 24 random ones."""
    node = (node_id.replace("-", "") + "0" * 8)[:8].lower()
    return f"resp_{node}{uuid.uuid4().hex[:24]}"


def _usage(turn: inf.Turn) -> dict[str, Any]:
    s = turn.stats
    return {
        "input_tokens": s.prompt_tokens,
        "input_tokens_details": {"cached_tokens": s.cached_tokens},
        "output_tokens": s.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": s.prompt_tokens + s.completion_tokens,
    }


class _Answer:
    """One response object as it goes from created to completed (or incomplete, failed)."""

    def __init__(self, rid: str, data: ResponsesRequest):
        self.rid, self.data = rid, data
        self.created = int(time.time())

    def body(
        self,
        status: str,
        output: list[dict[str, Any]],
        turn: inf.Turn | None = None,
        error: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        ended = status in ("completed", "incomplete")
        return {
            "id": self.rid,
            "object": "response",
            "created_at": self.created,
            "completed_at": int(time.time()) if ended else None,
            "status": status,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "model": self.data.model,
            "output": output,
            **self.data.echo(),
            # last: the router reads the token counts from an answer's last bytes
            "usage": _usage(turn) if turn is not None and ended else None,
        }


def _status(turn: inf.Turn) -> str:
    return "incomplete" if turn.stats.finish_reason == "length" else "completed"


async def _conversation(node: NodeServices, data: ResponsesRequest) -> list[Item]:
    """The stored conversation `previous_response_id` names, then this request's input."""
    items: list[Item] = []
    if data.previous_response_id:
        row = await to_thread.run_sync(
            stored.get, node.catalog, data.previous_response_id, node.responses_days
        )
        if row is None:
            raise NotFound(f"Previous response with id '{data.previous_response_id}' not found.")
        items = read_items(row.input) + read_items(row.body.get("output", []))
    items += data.items
    if not items:
        raise BadRequest("field 'input' is empty: send text or at least one input item")
    return items


async def _store(node: NodeServices, body: dict[str, Any], items: list[Item]) -> None:
    """Keep the response for previous_response_id and GET. A failure to keep it is logged:
    the answer itself is whole and goes out."""
    save = functools.partial(
        stored.save,
        node.catalog,
        body["id"],
        body["model"],
        body,
        stored_items(items),
        max_bytes=node.responses_bytes,
        max_age_days=node.responses_days,
    )
    try:
        if not await to_thread.run_sync(save):
            log.warning("response %s is larger than LLMLB_RESPONSES_MB; not stored", body["id"])
    except Exception:
        log.exception("could not store response %s", body["id"])


def _sse(seq: int, kind: str, fields: dict[str, Any]) -> bytes:
    payload = {"type": kind, **fields, "sequence_number": seq}
    return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()


@post("/v1/responses", status_code=200)
async def create_response(
    request: Request,
    data: JSONBody[ResponsesRequest],
    node: NamedDependency[NodeServices],
    scheduler: NamedDependency[Scheduler],
    metrics: NamedDependency[NodeMetrics],
    templates: NamedDependency[Templates],
) -> Response:
    items = await _conversation(node, data)
    model = await inf.resolve(scheduler, data.model)
    opts = data.gen_options()
    choice, forced = data.choice
    plan = await inf.plan_chat(
        templates,
        model,
        inf.chat_messages(chat_messages(data.instructions, items), model),
        opts,
        tools=data.tool_list,
        choice=choice,
        forced=forced,
        parallel=data.parallel_tool_calls,
        schema=data.schema,
        json_mode=data.json_mode,
        think=data.think,
        typed=data.model,
    )
    turn = inf.Turn()
    lease, turn.load_ns = await inf.claim(request, scheduler, model, "chat", data.keep_alive)
    backend = lease.backend

    def produce():
        return backend.chat(plan.messages, opts, turn.stats, plan.variables)

    generated = inf.generate(lease, produce, turn, data.think, plan.parser())
    pieces = await inf.primed(generated, request)
    answer = _Answer(new_id(node.node_id), data)
    out = Output(opts.logprobs)

    def fed(kind: str, value) -> list[Event]:
        return out.feed(kind, value, turn.take_logprobs() if opts.logprobs else [])

    async def finished() -> dict[str, Any]:
        inf.record(metrics, turn)
        body = answer.body(_status(turn), out.items, turn)
        if data.store:
            await _store(node, body, items)
        return body

    if not data.stream:

        async def feeding() -> AsyncIterator[inf.Event]:
            async for piece in pieces:
                fed(*piece)
                yield piece

        await inf.collect(feeding(), request)
        out.finish(_status(turn), turn.calls, turn.take_logprobs())
        return Response(await finished())

    async def events() -> AsyncIterator[bytes]:
        seq = 0

        def sse(kind: str, fields: dict[str, Any]) -> bytes:
            nonlocal seq
            seq += 1
            return _sse(seq - 1, kind, fields)

        yield sse("response.created", {"response": answer.body("in_progress", [])})
        yield sse("response.in_progress", {"response": answer.body("in_progress", [])})
        try:
            async for kind, value in pieces:
                for event in fed(kind, value):
                    yield sse(*event)
        except Exception as exc:  # the status is sent: say it in the stream
            error = {"code": "server_error", "message": f"generation failed: {exc}"}
            yield sse("error", {**error, "param": None})
            yield sse(
                "response.failed", {"response": answer.body("failed", out.items, None, error)}
            )
            return
        for event in out.finish(_status(turn), turn.calls, turn.take_logprobs()):
            yield sse(*event)
        body = await finished()
        yield sse(f"response.{body['status']}", {"response": body})

    return Stream(events(), media_type=SSE, headers={"Cache-Control": "no-cache"})


def _checked(response_id: str) -> str:
    if not re.match(RESPONSE_ID, response_id):
        raise NotFound(f"Response with id '{response_id}' not found.")
    return response_id


@get("/v1/responses/{response_id:str}")
async def get_response(response_id: ResponseIdParam, node: NamedDependency[NodeServices]) -> dict:
    rid = _checked(response_id)
    row = await to_thread.run_sync(stored.get, node.catalog, rid, node.responses_days)
    if row is None:
        raise NotFound(f"Response with id '{rid}' not found.")
    return row.body


@delete("/v1/responses/{response_id:str}", status_code=200)
async def delete_response(
    response_id: ResponseIdParam, node: NamedDependency[NodeServices]
) -> dict:
    rid = _checked(response_id)
    if not await to_thread.run_sync(stored.remove, node.catalog, rid):
        raise NotFound(f"Response with id '{rid}' not found.")
    return {"id": rid, "object": "response", "deleted": True}


routes = [create_response, get_response, delete_response]
