"""OpenAI-compatible inference: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from litestar import Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from llmlb.errors import BadRequest
from llmlb.server import inference as inf
from llmlb.server.body import field, json_object
from llmlb.server.metrics_api import metrics_of
from llmlb.server.ollama_api import _embed, _lease, _record, _resolve, _scheduler, embed_inputs
from llmlb.store import catalog

SSE = "text/event-stream"


def _model_name(data: dict) -> str:
    name = data.get("model")
    if not isinstance(name, str) or not name:
        raise BadRequest("field 'model' must be a non-empty string")
    return name


def _options(data: dict, kind: str = "chat") -> inf.GenOptions:
    opts = inf.options_from(data)
    limit = data.get("max_completion_tokens", data.get("max_tokens"))
    opts.max_tokens = inf.max_tokens(limit, "max_tokens")
    if field(data, "n", int, default=1) != 1:
        raise BadRequest("field 'n' must be 1: one completion per request")
    if kind == "chat":
        inf.logprobs_from(opts, data.get("logprobs"), data.get("top_logprobs"))
    else:  # the legacy completions API: logprobs is how many alternatives (0-5)
        top = field(data, "logprobs", int)
        if top is not None and not 0 <= top <= 5:
            raise BadRequest("field 'logprobs' must be an integer between 0 and 5")
        opts.logprobs, opts.top_logprobs = top is not None, top or 0
    return opts


def _usage(turn: inf.Turn) -> dict[str, Any]:
    s = turn.stats
    return {
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": s.cached_tokens},
    }


def _token(lp: inf.TokenLogprob) -> dict[str, Any]:
    return {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode())}


def _chat_logprobs(lps: list[inf.TokenLogprob]) -> dict[str, Any]:
    """OpenAI chat's shape: every token with its bytes and its top alternatives."""
    content = [
        {**_token(lp), "top_logprobs": [_token(inf.TokenLogprob(t, v)) for t, v in lp.top]}
        for lp in lps
    ]
    return {"content": content, "refusal": None}


def _completion_logprobs(lps: list[inf.TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, alternatives as {token: logprob}."""
    offsets = []
    for lp in lps:
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in lps],
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [dict(lp.top) for lp in lps],
        "text_offset": offsets,
    }


def _finish(turn: inf.Turn) -> str:
    return "length" if turn.stats.finish_reason == "length" else "stop"


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


async def _run(request: Request, data: dict, kind: str) -> Response:
    state = request.app.state.node
    name = _model_name(data)
    opts = _options(data, kind)
    model = await _resolve(state, name)
    if kind == "chat":
        messages = inf.chat_messages(data.get("messages"), bool(model.projector_path), model.name)
    else:
        prompt = data.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("field 'prompt' must be a string")
    stream = field(data, "stream", bool, default=False)
    include_usage = (
        bool((data.get("stream_options") or {}).get("include_usage")) if stream else False
    )
    lease, load_ns = await _lease(state, model.name, "chat", data)
    turn = inf.Turn(load_ns=load_ns)
    backend = lease.backend

    def produce():
        if kind == "chat":
            return backend.chat(messages, opts, turn.stats)
        return backend.complete(prompt, opts, turn.stats)

    text_offset = 0

    def logprobs_of(lps: list[inf.TokenLogprob]) -> dict[str, Any] | None:
        nonlocal text_offset
        if not opts.logprobs:
            return None
        if kind == "chat":
            return _chat_logprobs(lps)
        out = _completion_logprobs(lps, text_offset)
        text_offset += sum(len(lp.token) for lp in lps)
        return out

    pieces = await inf.primed(
        inf.generate(_scheduler(state), lease, produce, turn, think=True), request
    )
    ident = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    obj = "chat.completion" if kind == "chat" else "text_completion"
    endpoint = "/v1/chat/completions" if kind == "chat" else "/v1/completions"

    def chunk(delta: dict | None, finish: str | None, text: str = "") -> dict:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if kind == "chat":
            choice["delta"] = delta or {}
        else:
            choice["text"] = text
        return {
            "id": ident,
            "object": obj + (".chunk" if kind == "chat" else ""),
            "created": created,
            "model": name,
            "choices": [choice],
        }

    if stream:

        async def body() -> AsyncIterator[bytes]:
            if kind == "chat":
                yield _sse(chunk({"role": "assistant", "content": ""}, None))
            # the per-token event is the hot path: format it around a prebuilt prefix
            head = json.dumps(chunk({"content": ""}, None) if kind == "chat" else chunk(None, None))
            if kind == "chat":
                prefix = "data: " + head[: head.rindex('"content": ""')]
                content_pre, reason_pre = prefix + '"content": ', prefix + '"reasoning_content": '
                tail = "}}]}\n\n"
            else:
                content_pre = "data: " + head[: head.rindex('"text": ""')] + '"text": '
                tail = "}]}\n\n"
            try:
                async for piece_kind, text in pieces:
                    if opts.logprobs:  # not the hot path: build the whole chunk
                        lps = logprobs_of(turn.take_logprobs())
                        if kind == "chat":
                            key = "content" if piece_kind == "content" else "reasoning_content"
                            c = chunk({key: text}, None)
                        else:
                            c = chunk(None, None, text)
                        c["choices"][0]["logprobs"] = lps
                        yield _sse(c)
                    elif piece_kind == "content":
                        yield (content_pre + json.dumps(text) + tail).encode()
                    elif kind == "chat":
                        yield (reason_pre + json.dumps(text) + tail).encode()
            except (
                Exception
            ) as exc:  # after the first byte the status is sent: say it in the stream
                yield _sse(
                    {
                        "error": {
                            "message": f"generation failed: {exc}",
                            "type": "server_error",
                            "code": 500,
                        }
                    }
                )
                return
            last = chunk({}, _finish(turn))
            if opts.logprobs:
                rest = turn.take_logprobs()  # of text held back until the end
                last["choices"][0]["logprobs"] = logprobs_of(rest) if rest else None
            yield _sse(last)
            _record(state, endpoint, turn)
            if include_usage:
                yield _sse(
                    {
                        "id": ident,
                        "object": obj + (".chunk" if kind == "chat" else ""),
                        "created": created,
                        "model": name,
                        "choices": [],
                        "usage": _usage(turn),
                    }
                )
            yield b"data: [DONE]\n\n"

        return Stream(
            body(),
            media_type=SSE,
            background=BackgroundTask(lease.release),
            headers={"Cache-Control": "no-cache"},
        )
    await inf.collect(pieces, request)
    _record(state, endpoint, turn)
    if kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": turn.content}
        if turn.thinking:
            message["reasoning_content"] = turn.thinking
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": _finish(turn),
            "logprobs": logprobs_of(turn.logprobs),
        }
    else:
        choice = {
            "index": 0,
            "text": turn.content,
            "finish_reason": _finish(turn),
            "logprobs": logprobs_of(turn.logprobs),
        }
    return Response(
        {
            "id": ident,
            "object": obj,
            "created": created,
            "model": name,
            "choices": [choice],
            "usage": _usage(turn),
        }
    )


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request) -> Response:
    return await _run(request, await json_object(request), "chat")


@post("/v1/completions", status_code=200)
async def completions(request: Request) -> Response:
    return await _run(request, await json_object(request), "completion")


@post("/v1/embeddings", status_code=200)
async def embeddings(request: Request) -> dict:
    state = request.app.state.node
    data = await json_object(request)
    name = _model_name(data)
    fmt = data.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise BadRequest("field 'encoding_format' must be 'float' or 'base64'")
    inputs = embed_inputs(data.get("input"))
    vectors, tokens, _ = await _embed(state, name, inputs, data)
    metrics_of(state).request("/v1/embeddings", 200)
    return {
        "object": "list",
        "model": name,
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, fmt)}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode(vector: list[float], fmt: str):
    """The openai client asks for base64 (little-endian float32) by default: it is smaller."""
    if fmt == "float":
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def _model_obj(name: str, created) -> dict:
    return {
        "id": name,
        "object": "model",
        "created": int(created.timestamp()) if created else 0,
        "owned_by": "llmlb",
    }


def _all(state) -> list[dict]:
    out = [
        _model_obj(m.name, m.created_at)
        for m in catalog.all_models(state.catalog)
        if m.format == "GGUF"
    ]
    out += [_model_obj(e.display, e.modified) for e in catalog.ollama_models()]
    return out


@get("/v1/models", sync_to_thread=True)
def models(request: Request) -> dict:
    return {"object": "list", "data": _all(request.app.state.node)}


@get("/v1/models/{model_id:path}", sync_to_thread=True)
def model(request: Request, model_id: str) -> dict:
    name = model_id.lstrip("/")
    m = catalog.resolve(request.app.state.node.catalog, name)  # ModelNotFound when unknown
    return _model_obj(m.name, m.created_at)


routes = [chat_completions, completions, embeddings, models, model]
