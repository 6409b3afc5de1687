"""ollama-compatible inference: /api/generate, /api/chat, /api/embed(dings), /api/ps, /api/stop."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread
from litestar import Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from llmlb.errors import BadRequest, NotFound, Unavailable
from llmlb.server import inference as inf
from llmlb.server.body import field, json_object, model_field
from llmlb.server.metrics_api import metrics_of
from llmlb.server.store_api import _details
from llmlb.store import catalog

NDJSON = "application/x-ndjson"
log = logging.getLogger("llmlb.api")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _scheduler(state):
    scheduler = state.services.get("scheduler")
    if scheduler is None:
        raise Unavailable("the inference engine is not running")
    return scheduler


def _final(turn: inf.Turn, model: str) -> dict[str, Any]:
    end = time.perf_counter()
    s = turn.stats
    return {
        "model": model,
        "created_at": _now(),
        "done": True,
        "done_reason": {"length": "length", "cancelled": "stop"}.get(s.finish_reason, "stop"),
        "total_duration": int((end - turn.started) * 1e9),
        "load_duration": turn.load_ns,
        "prompt_eval_count": s.evaluated_tokens,  # as ollama: a cached prefix is not evaluated
        "prompt_eval_duration": s.prompt_ns,
        "eval_count": s.completion_tokens,
        "eval_duration": s.eval_ns,
    }


async def _lease(state, name: str, kind: str, data: dict):
    keep_alive = inf.keep_alive_from(data)
    t = time.perf_counter()
    lease = await _scheduler(state).acquire(name, kind, keep_alive)
    return lease, int((time.perf_counter() - t) * 1e9)


def _record(state, endpoint: str, turn: inf.Turn) -> None:
    ttft = turn.first_token_at - turn.started if turn.first_token_at else None
    m = metrics_of(state)
    m.request(endpoint, 200)
    m.generation(turn.stats.prompt_tokens, turn.stats.completion_tokens, ttft)


async def _respond(
    state,
    endpoint: str,
    data: dict,
    lease,
    produce,
    turn: inf.Turn,
    model_name: str,
    shape,
    request: Request | None = None,
) -> Response:
    """Stream NDJSON (default) or answer one object; `shape(kind, text)` builds a chunk."""
    think = field(data, "think", (bool, str))
    think = None if think is None else think not in (False, "false", "none")
    pieces = await inf.primed(inf.generate(_scheduler(state), lease, produce, turn, think), request)
    want_logprobs = bool(data.get("logprobs"))
    if field(data, "stream", bool, default=True):

        async def body() -> AsyncIterator[bytes]:
            try:
                async for kind, text in pieces:
                    line = {
                        "model": model_name,
                        "created_at": _now(),
                        **shape(kind, text),
                        "done": False,
                    }
                    if want_logprobs:
                        line["logprobs"] = _logprobs(turn.take_logprobs())
                    yield (json.dumps(line) + "\n").encode()
            except (
                Exception
            ) as exc:  # after the first byte the status is sent: say it in the stream
                log.warning("%s stream for %s failed: %s", endpoint, model_name, exc)
                yield (json.dumps({"error": f"generation failed: {exc}"}) + "\n").encode()
                return
            final = _final(turn, model_name)
            if want_logprobs:
                final["logprobs"] = _logprobs(turn.take_logprobs())
            _record(state, endpoint, turn)
            yield (json.dumps({**final, **shape("content", "")}) + "\n").encode()

        return Stream(body(), media_type=NDJSON, background=BackgroundTask(lease.release))
    await inf.collect(pieces, request)
    _record(state, endpoint, turn)
    full = shape("content", turn.content)
    if turn.thinking and think is not False:
        full = _merge_thinking(full, turn.thinking)
    if want_logprobs:
        full["logprobs"] = _logprobs(turn.logprobs)
    return Response({**_final(turn, model_name), **full})


def _logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def _logprobs(lps: list[inf.TokenLogprob]) -> list[dict[str, Any]]:
    """ollama's shape: each token with its bytes and its top alternatives."""
    return [
        {**_logprob(lp.token, lp.logprob), "top_logprobs": [_logprob(t, v) for t, v in lp.top]}
        for lp in lps
    ]


def _merge_thinking(full: dict, thinking: str) -> dict:
    if "message" in full:
        return {"message": {**full["message"], "thinking": thinking}}
    return {**full, "thinking": thinking}


async def _resolve(state, name: str):
    return await to_thread.run_sync(catalog.resolve, state.catalog, name)


async def _load_only(state, name: str, data: dict, endpoint: str, shape) -> Response:
    """ollama's idiom: an empty prompt loads the model (or, with keep_alive 0, unloads it)."""
    scheduler = _scheduler(state)
    model = await _resolve(state, name)
    if inf.keep_alive_from(data) == 0:
        await scheduler.unload(model.name)
        reason = "unload"
    else:
        lease = await scheduler.acquire(model.name, "chat", inf.keep_alive_from(data))
        await lease.release()
        reason = "load"
    metrics_of(state).request(endpoint, 200)
    return Response(
        {
            "model": name,
            "created_at": _now(),
            **shape("content", ""),
            "done": True,
            "done_reason": reason,
        }
    )


def _options(data: dict) -> inf.GenOptions:
    """ollama's `options` object, with num_predict as the token limit."""
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise BadRequest("field 'options' must be an object")
    opts = inf.options_from(options, "options.")
    opts.max_tokens = inf.max_tokens(options.get("num_predict"), "options.num_predict")
    inf.logprobs_from(opts, data.get("logprobs"), data.get("top_logprobs"))
    return opts


def _chat_shape(kind: str, text: str) -> dict:
    return {
        "message": {
            "role": "assistant",
            "content": text if kind == "content" else "",
            **({"thinking": text} if kind == "thinking" else {}),
        }
    }


def _generate_shape(kind: str, text: str) -> dict:
    return {"response": text} if kind == "content" else {"response": "", "thinking": text}


@post("/api/chat", status_code=200)
async def chat(request: Request) -> Response:
    state = request.app.state.node
    data = await json_object(request)
    name = model_field(data)
    opts = _options(data)
    if not data.get("messages"):
        return await _load_only(state, name, data, "/api/chat", _chat_shape)
    model = await _resolve(state, name)
    messages = inf.chat_messages(data.get("messages"), bool(model.projector_path), model.name)
    lease, load_ns = await _lease(state, model.name, "chat", data)
    turn = inf.Turn(load_ns=load_ns)
    backend = lease.backend

    def produce():
        return backend.chat(messages, opts, turn.stats)

    return await _respond(
        state, "/api/chat", data, lease, produce, turn, name, _chat_shape, request
    )


@post("/api/generate", status_code=200)
async def generate(request: Request) -> Response:
    state = request.app.state.node
    data = await json_object(request)
    name = model_field(data)
    opts = _options(data)
    prompt = field(data, "prompt", str, default="")
    images = field(data, "images", list, default=[])
    if not prompt and not images:
        return await _load_only(state, name, data, "/api/generate", _generate_shape)
    model = await _resolve(state, name)
    raw = field(data, "raw", bool, default=False)
    system = field(data, "system", str)
    if raw:
        if images:
            raise BadRequest("images cannot be sent with raw prompts")
        messages = None
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt, "images": images}
        ]
        messages = inf.chat_messages(messages, bool(model.projector_path), model.name)
    lease, load_ns = await _lease(state, model.name, "chat", data)
    turn = inf.Turn(load_ns=load_ns)
    backend = lease.backend
    if messages is not None and not images and not backend.has_chat_template:
        messages = None  # as ollama's default template {{ .Prompt }}: the prompt as it is

    def produce():
        if messages is None:
            return backend.complete(prompt, opts, turn.stats)
        return backend.chat(messages, opts, turn.stats)

    return await _respond(
        state, "/api/generate", data, lease, produce, turn, name, _generate_shape, request
    )


async def _embed(
    state, name: str, inputs: list[str], data: dict
) -> tuple[list[list[float]], int, int]:
    lease, load_ns = await _lease(state, name, "embed", data)
    try:
        vectors, tokens = await to_thread.run_sync(lease.backend.embed, inputs)
    finally:
        await lease.release()
    return vectors, tokens, load_ns


def embed_inputs(value: Any, name: str = "input") -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise BadRequest(f"field '{name}' must be a string or a non-empty list of strings")


@post("/api/embed", status_code=200)
async def embed(request: Request) -> dict:
    state = request.app.state.node
    data = await json_object(request)
    name = model_field(data)
    inputs = embed_inputs(data.get("input"))
    started = time.perf_counter()
    vectors, tokens, load_ns = await _embed(state, name, inputs, data)
    metrics_of(state).request("/api/embed", 200)
    return {
        "model": name,
        "embeddings": vectors,
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": load_ns,
        "prompt_eval_count": tokens,
    }


@post("/api/embeddings", status_code=200)
async def embeddings_legacy(request: Request) -> dict:
    state = request.app.state.node
    data = await json_object(request)
    name = model_field(data)
    vectors, _, _ = await _embed(state, name, embed_inputs(data.get("prompt"), "prompt"), data)
    return {"embedding": vectors[0]}


@get("/api/ps")
async def ps(request: Request) -> dict:
    state = request.app.state.node
    scheduler = _scheduler(state)
    gpu = await to_thread.run_sync(scheduler.gpus.read)
    models = []
    for r in scheduler.running():
        m = r["model"]
        models.append(
            {
                "name": r["name"],
                "model": r["name"],
                "size": r["size"],
                "size_vram": r["size"] if r["processor"].endswith("GPU") else 0,
                "digest": m.digest or "",
                "details": _details(m),
                "expires_at": r["expires_at"].isoformat() if r["expires_at"] else None,
                "context_length": r["context_length"],
                "kind": r["kind"],
                "processor": r["processor"],
                "stopping": r["stopping"],
                "busy": r["busy"],
            }
        )
    return {"models": models, "gpu": gpu.as_dict()}


@post("/api/stop", status_code=200)
async def stop(request: Request) -> dict:
    state = request.app.state.node
    name = model_field(await json_object(request))
    model = await _resolve(state, name)
    if not await _scheduler(state).unload(model.name):
        raise NotFound(f"model '{name}' is not loaded")
    return {"status": f"stopped '{name}'"}


routes = [chat, generate, embed, embeddings_legacy, ps, stop]
