"""OpenAI-compatible inference: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import numpy as np
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter
from litestar.response import Stream
from sqlalchemy.engine import Engine

from llmlb.engine.base import TokenLogprob
from llmlb.engine.scheduler import Scheduler
from llmlb.engine.templates import Templates
from llmlb.engine.tool_calls import CallDelta, ToolCall
from llmlb.server import choices
from llmlb.server import pipeline as pipe
from llmlb.server.choices import Choice
from llmlb.server.messages import token_logprobs
from llmlb.server.metrics_api import NodeMetrics
from llmlb.server.requests import OpenAIChat, OpenAICompletion, OpenAIEmbeddings
from llmlb.store import catalog
from llmlb.store.catalog import resolve as resolve_model
from llmlb.validation import Format

SSE = "text/event-stream"


def _chat_logprobs(lps: list[TokenLogprob]) -> dict[str, Any]:
    """OpenAI chat's shape: every token with its bytes and its top alternatives."""
    return {"content": token_logprobs(lps), "refusal": None}


def _completion_logprobs(lps: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, alternatives as {token: logprob}."""
    offsets = []
    for lp in lps:
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in lps],
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [{t: v for t, v, _ in lp.top} for lp in lps],
        "text_offset": offsets,
    }


def _finish(turn: pipe.Turn) -> str:
    if turn.stats.finish_reason == "length":
        return "length"
    return "tool_calls" if turn.calls else "stop"


def _tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def _call_delta(delta: CallDelta) -> dict[str, Any] | None:
    """OpenAI's streamed tool call: the first chunk has its id and name, later ones more of
    its arguments (the client's stream helpers join them)."""
    if delta.name is not None:
        fn = {"name": delta.name, "arguments": delta.arguments}
        return {
            "tool_calls": [
                {"index": delta.index, "id": delta.id, "type": "function", "function": fn}
            ]
        }
    if delta.arguments:
        return {"tool_calls": [{"index": delta.index, "function": {"arguments": delta.arguments}}]}
    return None


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


async def _prepare(
    data: OpenAIChat | OpenAICompletion, scheduler: Scheduler, templates: Templates
) -> list[pipe.Prepared]:
    """One prepared job per prompt (a chat has one)."""
    opts = data.gen_options()
    if isinstance(data, OpenAIChat):
        tool_choice, forced = data.choice
        job = await pipe.prepare_chat(
            scheduler,
            templates,
            data.model,
            data.messages,
            opts,
            keep_alive=data.keep_alive,
            tools=data.tool_list,
            choice=tool_choice,
            forced=forced,
            parallel=data.parallel_tool_calls,
            schema=data.schema,
            json_mode=data.json_mode,
        )
        return [job]
    model = await scheduler.resolve(data.model)
    return [
        await pipe.prepare_raw(
            scheduler, templates, data.model, p, opts, keep_alive=data.keep_alive, model=model
        )
        for p in data.prompts
    ]


async def _run(
    request: Request,
    data: OpenAIChat | OpenAICompletion,
    scheduler: Scheduler,
    metrics: NodeMetrics,
    templates: Templates,
) -> Response:
    jobs = await _prepare(data, scheduler, templates)
    picks = choices.choices(jobs, data.n)
    await choices.start(request, scheduler, picks)
    answer = _Answer(data, picks)
    if data.stream:
        return Stream(
            _sse_body(answer, metrics), media_type=SSE, headers={"Cache-Control": "no-cache"}
        )
    await choices.collect(picks, request)
    for c in picks:
        pipe.record(metrics, c.turn)
    return Response({**answer.head(whole=True), "choices": [answer.whole(c) for c in picks],
                     "usage": answer.usage()})  # fmt: skip


class _Answer:
    """What chat and legacy completions answers share: ids, chunks, usage, log probabilities."""

    def __init__(self, data: OpenAIChat | OpenAICompletion, picks: list[Choice]):
        self.data, self.picks = data, picks
        self.chat = isinstance(data, OpenAIChat)
        self.echo = isinstance(data, OpenAICompletion) and data.echo
        self.logprobs = bool(data.logprobs)
        self.ident = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def head(self, whole: bool = False) -> dict[str, Any]:
        obj = "chat.completion" if self.chat else "text_completion"
        if self.chat and not whole:
            obj += ".chunk"
        return {"id": self.ident, "object": obj, "created": self.created, "model": self.data.model}

    def logprobs_of(self, c: Choice, lps: list[TokenLogprob]) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        if self.chat:
            return _chat_logprobs(lps)
        out = _completion_logprobs(lps, c.text_offset)
        c.text_offset += sum(len(lp.token) for lp in lps)
        return out

    def usage(self) -> dict[str, Any]:
        n = self.data.n
        firsts = [c.turn.stats for c in self.picks if c.index % n == 0]  # one per prompt
        prompt = sum(s.prompt_tokens for s in firsts)
        completion = sum(c.turn.stats.completion_tokens for c in self.picks)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": sum(s.cached_tokens for s in firsts)},
        }

    def chunk(self, index: int, delta: dict | None, finish: str | None, text: str = "") -> dict:
        choice: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
        if self.chat:
            choice["delta"] = delta or {}
        else:
            choice["text"] = text
        return {**self.head(), "choices": [choice]}

    def whole(self, c: Choice) -> dict[str, Any]:
        """One choice of a non-streamed answer."""
        turn = c.turn
        entry: dict[str, Any] = {
            "index": c.index,
            "finish_reason": _finish(turn),
            "logprobs": self.logprobs_of(c, turn.logprobs),
        }
        if not self.chat:
            entry["text"] = (c.job.prompt if self.echo else "") + turn.content
            return entry
        content = turn.content if turn.content or not turn.calls else None
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if turn.calls:
            message["tool_calls"] = _tool_calls(turn.calls)
        if turn.thinking:
            message["reasoning_content"] = turn.thinking
        entry["message"] = message
        return entry


async def _sse_body(answer: _Answer, metrics: NodeMetrics) -> AsyncIterator[bytes]:
    """The streamed answer: each choice's events as they come, its finish when it ends."""
    picks, chunk = answer.picks, answer.chunk
    one = len(picks) == 1
    for c in picks:
        if answer.chat:
            yield _sse(chunk(c.index, {"role": "assistant", "content": ""}, None))
        elif answer.echo:
            yield _sse(chunk(c.index, None, None, c.job.prompt))
    # the per-token event is the hot path: one choice's is formatted around a prebuilt prefix
    head = json.dumps(chunk(0, {"content": ""}, None) if answer.chat else chunk(0, None, None))
    if answer.chat:
        prefix = "data: " + head[: head.rindex('"content": ""')]
        content_pre, reason_pre = prefix + '"content": ', prefix + '"reasoning_content": '
        tail = "}}]}\n\n"
    else:
        content_pre = "data: " + head[: head.rindex('"text": ""')] + '"text": '
        tail = "}]}\n\n"
    try:
        async for c, event in choices.events(picks):
            if event is choices.DONE:
                last = chunk(c.index, {}, _finish(c.turn))
                if answer.logprobs:
                    rest = c.turn.take_logprobs()  # of text held back until the end
                    last["choices"][0]["logprobs"] = answer.logprobs_of(c, rest) if rest else None
                yield _sse(last)
                pipe.record(metrics, c.turn)
            elif isinstance(event, CallDelta):
                delta = _call_delta(event)
                if delta is not None:
                    yield _sse(chunk(c.index, delta, None))
            elif answer.logprobs or not one:  # not the hot path: build the whole chunk
                if answer.chat:
                    key = "content" if event.kind == "content" else "reasoning_content"
                    part = chunk(c.index, {key: event.text}, None)
                else:
                    part = chunk(c.index, None, None, event.text)
                if answer.logprobs:
                    lps = c.turn.take_logprobs()
                    part["choices"][0]["logprobs"] = answer.logprobs_of(c, lps)
                yield _sse(part)
            elif event.kind == "content":
                yield (content_pre + json.dumps(event.text) + tail).encode()
            elif answer.chat:
                yield (reason_pre + json.dumps(event.text) + tail).encode()
    except Exception as exc:  # after the first byte the status is sent: say it in the stream
        yield _sse(
            {"error": {"message": f"generation failed: {exc}", "type": "server_error", "code": 500}}
        )
        return
    if answer.data.include_usage:
        yield _sse({**answer.head(), "choices": [], "usage": answer.usage()})
    yield b"data: [DONE]\n\n"


@post("/v1/chat/completions", status_code=200)
async def chat_completions(
    request: Request,
    data: JSONBody[OpenAIChat],
    scheduler: NamedDependency[Scheduler],
    metrics: NamedDependency[NodeMetrics],
    templates: NamedDependency[Templates],
) -> Response:
    return await _run(request, data, scheduler, metrics, templates)


@post("/v1/completions", status_code=200)
async def completions(
    request: Request,
    data: JSONBody[OpenAICompletion],
    scheduler: NamedDependency[Scheduler],
    metrics: NamedDependency[NodeMetrics],
    templates: NamedDependency[Templates],
) -> Response:
    return await _run(request, data, scheduler, metrics, templates)


@post("/v1/embeddings", status_code=200)
async def embeddings(
    request: Request,
    data: JSONBody[OpenAIEmbeddings],
    scheduler: NamedDependency[Scheduler],
) -> dict:
    vectors, tokens, _ = await pipe.embed(
        request, scheduler, data.model, data.inputs, data.keep_alive, data.dimensions
    )
    return {
        "object": "list",
        "model": data.model,
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, data.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    """The openai client asks for base64 (little-endian float32) by default: it is smaller."""
    if fmt == "float":
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def model_object(name: str, created: datetime | None) -> dict:
    return {
        "id": name,
        "object": "model",
        "created": int(created.timestamp()) if created else 0,
        "owned_by": "llmlb",
    }


def _all(engine: Engine) -> list[dict]:
    out = [
        model_object(m.name, m.created_at)
        for m in catalog.all_models(engine)
        if m.format == Format.GGUF
    ]
    out += [model_object(e.display, e.modified) for e in catalog.ollama_models()]
    return out


@get("/v1/models", sync_to_thread=True)
def models(catalog: NamedDependency[Engine]) -> dict:
    return {"object": "list", "data": _all(catalog)}


@get("/v1/models/{model_id:path}", sync_to_thread=True)
def model(
    model_id: Annotated[str, PathParameter(max_length=1024)], catalog: NamedDependency[Engine]
) -> dict:
    m = resolve_model(catalog, model_id.lstrip("/"))  # ModelNotFound when unknown
    return model_object(m.name, m.created_at)


routes = [chat_completions, completions, embeddings, models, model]
