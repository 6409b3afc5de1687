"""ollama-compatible inference: /api/generate, /api/chat, /api/embed(dings), /api/ps, /api/stop."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream

from llmlb.engine.scheduler import Scheduler
from llmlb.engine.templates import Templates
from llmlb.engine.tool_calls import CallDelta, ToolCall
from llmlb.errors import BadRequest, NotFound
from llmlb.server import pipeline as pipe
from llmlb.server.messages import token_logprobs
from llmlb.server.metrics_api import NodeMetrics
from llmlb.server.requests import (
    ChatMessage,
    ModelOnly,
    OllamaChat,
    OllamaEmbed,
    OllamaEmbeddings,
    OllamaGenerate,
    Think,
)
from llmlb.server.store_api import details

NDJSON = "application/x-ndjson"
log = logging.getLogger("llmlb.api")

Shape = Callable[[str, str], dict]


def _tool_calls(calls: list[ToolCall]) -> tuple[list[dict[str, Any]], str]:
    """ollama's tool calls (arguments as an object), and the text of any whose arguments
    are not a JSON object (cut off by num_predict): that is given back as content."""
    out, broken = [], ""
    for c in calls:
        try:
            args = json.loads(c.arguments)
        except ValueError:
            args = None
        if not isinstance(args, dict):
            broken += c.arguments
            continue
        out.append({"id": c.id, "function": {"index": c.index, "name": c.name, "arguments": args}})
    return out, broken


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _thinks(think: Think | None) -> bool | None:
    """ollama's `think`: true/false, or a level ("high", ...) that means true."""
    return None if think is None else think is not False


def _final(turn: pipe.Turn, model: str) -> dict[str, Any]:
    s = turn.stats
    return {
        "model": model,
        "created_at": _now(),
        "done": True,
        "done_reason": {"length": "length", "cancelled": "stop"}.get(s.finish_reason, "stop"),
        "total_duration": turn.total_ns,
        "load_duration": turn.load_ns,
        "prompt_eval_count": s.evaluated_tokens,  # as ollama: a cached prefix is not evaluated
        "prompt_eval_duration": s.prompt_ns,
        "eval_count": s.completion_tokens,
        "eval_duration": s.eval_ns,
        **({"context": s.context} if s.context is not None else {}),
    }


async def _respond(
    metrics: NodeMetrics,
    body: OllamaChat | OllamaGenerate,
    run: pipe.Run,
    shape: Shape,
    request: Request,
) -> Response:
    """Stream NDJSON (default) or answer one object; `shape(kind, text)` builds a chunk."""
    turn = run.turn
    model_name = body.target
    want_logprobs = body.logprobs  # top_logprobs without logprobs is refused at decoding
    if body.stream:

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for event in run.events:
                    if isinstance(event, CallDelta):  # ollama sends a call once it is whole
                        if not event.done:
                            continue
                        calls, broken = _tool_calls([turn.calls[event.index]])
                        part = shape("content", broken)
                        if calls:
                            part["message"]["tool_calls"] = calls
                    else:
                        part = shape(event.kind, event.text)
                    chunk = {
                        "model": model_name,
                        "created_at": _now(),
                        **part,
                        "done": False,
                    }
                    if want_logprobs:
                        chunk["logprobs"] = token_logprobs(turn.take_logprobs())
                    yield (json.dumps(chunk) + "\n").encode()
            except Exception as exc:  # after the first byte the status is sent: say it here
                log.warning("%s stream for %s failed: %s", request.url.path, model_name, exc)
                yield (json.dumps({"error": f"generation failed: {exc}"}) + "\n").encode()
                return
            pipe.record(metrics, turn)
            final = _final(turn, model_name)
            if want_logprobs:
                final["logprobs"] = token_logprobs(turn.take_logprobs())
            yield (json.dumps({**final, **shape("content", "")}) + "\n").encode()

        return Stream(lines(), media_type=NDJSON)
    await pipe.collect(run.events, request)
    pipe.record(metrics, turn)
    calls, broken = _tool_calls(turn.calls)
    full = shape("content", turn.content + broken)
    if calls:
        full["message"]["tool_calls"] = calls
    if turn.thinking and _thinks(body.think) is not False:
        full = _merge_thinking(full, turn.thinking)
    if want_logprobs:
        full["logprobs"] = token_logprobs(turn.logprobs)
    return Response({**_final(turn, model_name), **full})


def _merge_thinking(full: dict, thinking: str) -> dict:
    if "message" in full:
        return {"message": {**full["message"], "thinking": thinking}}
    return {**full, "thinking": thinking}


async def _load_only(
    request: Request,
    scheduler: Scheduler,
    body: OllamaChat | OllamaGenerate,
    shape: Shape,
) -> Response:
    """ollama's idiom: an empty prompt loads the model (or, with keep_alive 0, unloads it)."""
    model = await scheduler.resolve(body.target)
    keep_alive = pipe.keep_alive_secs(body.keep_alive)
    if keep_alive == 0:
        await scheduler.unload(model.name)
        reason = "unload"
    else:
        lease, _ = await pipe.claim(request, scheduler, model, "chat", keep_alive)
        await lease.release()
        reason = "load"
    return Response(
        {
            "model": body.target,
            "created_at": _now(),
            **shape("content", ""),
            "done": True,
            "done_reason": reason,
        }
    )


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
async def chat(
    request: Request,
    data: JSONBody[OllamaChat],
    scheduler: NamedDependency[Scheduler],
    metrics: NamedDependency[NodeMetrics],
    templates: NamedDependency[Templates],
) -> Response:
    if not data.messages:
        return await _load_only(request, scheduler, data, _chat_shape)
    job = await pipe.prepare_chat(
        scheduler,
        templates,
        data.target,
        data.messages,
        data.gen_options(),
        keep_alive=data.keep_alive,
        tools=data.tool_list,
        schema=data.schema,
        json_mode=data.json_mode,
        think=_thinks(data.think),
    )
    run = await pipe.run(request, scheduler, job)
    return await _respond(metrics, data, run, _chat_shape, request)


@post("/api/generate", status_code=200)
async def generate(
    request: Request,
    data: JSONBody[OllamaGenerate],
    scheduler: NamedDependency[Scheduler],
    metrics: NamedDependency[NodeMetrics],
    templates: NamedDependency[Templates],
) -> Response:
    if not data.prompt and not data.images:
        return await _load_only(request, scheduler, data, _generate_shape)
    if data.raw and data.images:
        raise BadRequest("images cannot be sent with raw prompts")
    opts, think = data.gen_options(), _thinks(data.think)
    model = await scheduler.resolve(data.target)
    # as ollama's default template {{ .Prompt }}: without a template, the prompt as it is
    if data.raw or not (model.chat_template or data.images):
        job = await pipe.prepare_raw(
            scheduler,
            templates,
            data.target,
            data.prompt,
            opts,
            keep_alive=data.keep_alive,
            schema=data.schema,
            json_mode=data.json_mode,
            think=think,
            context=None if data.raw else data.context,
            model=model,
        )
    else:
        wanted = [ChatMessage(role="user", content=data.prompt, images=data.images)]
        if data.system:
            wanted.insert(0, ChatMessage(role="system", content=data.system))
        job = await pipe.prepare_chat(
            scheduler,
            templates,
            data.target,
            wanted,
            opts,
            keep_alive=data.keep_alive,
            schema=data.schema,
            json_mode=data.json_mode,
            think=think,
            model=model,
        )
    # as ollama: an answer's `context` continues the conversation (not in raw mode, nor
    # with images)
    back = None if data.raw or data.images else (data.context or [])
    run = await pipe.run(request, scheduler, job, context=back)
    return await _respond(metrics, data, run, _generate_shape, request)


@post("/api/embed", status_code=200)
async def embed(
    request: Request,
    data: JSONBody[OllamaEmbed],
    scheduler: NamedDependency[Scheduler],
) -> dict:
    turn = pipe.Turn()
    vectors, tokens, load_ns = await pipe.embed(
        request, scheduler, data.target, data.inputs, data.keep_alive, data.dimensions
    )
    turn.load_ns = load_ns
    return {
        "model": data.target,
        "embeddings": vectors,
        "total_duration": turn.total_ns,
        "load_duration": load_ns,
        "prompt_eval_count": tokens,
    }


@post("/api/embeddings", status_code=200)
async def embeddings_legacy(
    request: Request,
    data: JSONBody[OllamaEmbeddings],
    scheduler: NamedDependency[Scheduler],
) -> dict:
    vectors, _, _ = await pipe.embed(
        request, scheduler, data.target, [data.prompt], data.keep_alive
    )
    return {"embedding": vectors[0]}


@get("/api/ps")
async def ps(scheduler: NamedDependency[Scheduler]) -> dict:
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
                "details": details(m),
                "expires_at": r["expires_at"].isoformat() if r["expires_at"] else None,
                "context_length": r["context_length"],
                "kind": r["kind"],
                "processor": r["processor"],
                "stopping": r["stopping"],
                "busy": r["busy"],
                "pids": r["pids"],
                "runner_bytes": r["runner_bytes"],  # of size: the runner processes themselves
            }
        )
    held = [
        {
            "name": h.name,
            "reason": h.reason,
            "until": datetime.fromtimestamp(h.until, UTC).isoformat(),
        }
        for h in scheduler.held_back()
    ]
    return {"models": models, "gpu": gpu.as_dict(), "held_back": held}


@post("/api/stop", status_code=200)
async def stop(
    data: JSONBody[ModelOnly],
    scheduler: NamedDependency[Scheduler],
) -> dict:
    model = await scheduler.resolve(data.target)
    if not await scheduler.unload(model.name):
        raise NotFound(f"model '{data.target}' is not loaded")
    return {"status": f"stopped '{data.target}'"}


routes = [chat, generate, embed, embeddings_legacy, ps, stop]
