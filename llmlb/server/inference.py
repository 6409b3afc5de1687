"""The path every generation takes, whatever the API style: claim, stream, split thinking,
count. Both API modules (ollama_api, openai_api) build on these; neither imports the other.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from litestar import Request

from llmlb import prefix, settings
from llmlb.engine import chat_plan, model_defaults
from llmlb.engine.base import GenOptions, GenStats, TemplateCaps, TokenLogprob
from llmlb.engine.scheduler import Lease, Scheduler
from llmlb.engine.templates import Templates
from llmlb.engine.thinking import ThinkingSplitter
from llmlb.engine.tool_calls import CallDelta, Parser, ToolCall
from llmlb.errors import BadRequest, LlmlbError
from llmlb.server.claims import hold
from llmlb.server.metrics_api import NodeMetrics
from llmlb.server.requests import ChatMessage, ImagePart, ImageURL, KeepAlive
from llmlb.store.models import Model

T = TypeVar("T")
IMAGE_MAGIC = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


@dataclass
class Turn:
    """One generation's outcome, filled while it streams."""

    stats: GenStats = field(default_factory=GenStats)
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    load_ns: int = 0
    content: str = ""
    thinking: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)  # every token's, when asked
    logprobs_sent: int = 0
    calls: list[ToolCall] = field(default_factory=list)  # the tool calls read from the reply

    def take_logprobs(self) -> list[TokenLogprob]:
        """The log probabilities that arrived since the last call (for a streamed chunk)."""
        new = self.logprobs[self.logprobs_sent :]
        self.logprobs_sent = len(self.logprobs)
        return new

    @property
    def total_ns(self) -> int:
        """From arrival to now; never less than the load it includes."""
        return max(int((time.perf_counter() - self.started) * 1e9), self.load_ns)


def keep_alive_secs(value: KeepAlive | None) -> float | None:
    if value is None:
        return None
    try:
        return settings.keep_alive_secs(value)
    except settings.SettingsError as exc:
        raise BadRequest(exc.message) from exc


async def resolve(scheduler: Scheduler, name: str) -> Model:
    return await scheduler.resolve(name)


async def claim(
    request: Request,
    scheduler: Scheduler,
    model: Model,
    kind: str,
    keep_alive: KeepAlive | None,
) -> tuple[Lease, int]:
    """Claim a loaded model for this request: (lease, nanoseconds spent loading/waiting).

    The lease is tied to the request (claims.hold): whatever happens between here and the
    end of the response, it is released."""
    secs = keep_alive_secs(keep_alive)
    started = time.perf_counter()
    lease = await scheduler.acquire(model.name, kind, secs)
    hold(request, lease)
    return lease, int((time.perf_counter() - started) * 1e9)


def record(metrics: NodeMetrics, turn: Turn) -> None:
    ttft = turn.first_token_at - turn.started if turn.first_token_at else None
    metrics.generation(turn.stats.prompt_tokens, turn.stats.completion_tokens, ttft)
    metrics.prompt_cache(turn.stats)


async def embed(
    request: Request,
    scheduler: Scheduler,
    model: Model,
    inputs: list[str],
    keep_alive: KeepAlive | None,
) -> tuple[list[list[float]], int, int]:
    """(vectors, prompt tokens, load ns) for several inputs. A client that hangs up stops
    the work (the runner stops between two decodes)."""
    lease, load_ns = await claim(request, scheduler, model, "embed", keep_alive)
    try:
        vectors, tokens = await _watched(lease.backend.embed(inputs), request)
    finally:
        await lease.release()
    return vectors, tokens, load_ns


def image_data_url(b64: str, field_name: str = "images") -> str:
    """Check an image by its bytes and turn it into a data URL for llama.cpp."""
    if b64.startswith("data:"):
        b64 = b64.split(",", 1)[-1]
    try:
        raw = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise BadRequest(f"field '{field_name}' holds invalid base64") from exc
    mime = next((m for magic, m in IMAGE_MAGIC.items() if raw.startswith(magic)), None)
    if mime is None and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None:
        raise BadRequest(
            f"field '{field_name}' holds data that is not a PNG, JPEG, WebP or GIF image"
        )
    return f"data:{mime};base64,{b64}"


def chat_messages(messages: list[ChatMessage], model: Model) -> list[dict]:
    """Typed chat messages in llama-cpp-python's format; images checked by their bytes."""
    out: list[dict] = []
    for i, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        images: list[str] = []
        content = m.content or ""
        if isinstance(content, list):  # OpenAI content parts
            texts = []
            for part in content:
                if isinstance(part, ImagePart):
                    url = (
                        part.image_url.url
                        if isinstance(part.image_url, ImageURL)
                        else part.image_url
                    )
                    if not url.startswith("data:"):
                        raise BadRequest(
                            "only data: URLs are accepted for images (no remote fetches)"
                        )
                    images.append(image_data_url(url, f"messages[{i}].content"))
                else:
                    texts.append(part.text)
            content = "\n".join(texts)
        for img in m.images or []:
            images.append(image_data_url(img, f"messages[{i}].images"))
        if images and not model.projector_path:
            raise BadRequest(f"model '{model.name}' does not support images")
        if images:
            parts: list[dict] = [{"type": "image_url", "image_url": {"url": u}} for u in images]
            out.append({"role": role, "content": [*parts, {"type": "text", "text": content}]})
        else:
            out.append({"role": role, "content": content})
        if m.tool_calls:
            out[-1]["tool_calls"] = [
                {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                for c in m.tool_calls
            ]
        if role == "tool":
            if m.tool_call_id:
                out[-1]["tool_call_id"] = m.tool_call_id
            if m.tool_name or m.name:
                out[-1]["name"] = m.tool_name or m.name
    return out


async def template_caps(templates: Templates, model: Model) -> TemplateCaps:
    """What the model's chat template renders (none: nothing)."""
    source = model.chat_template
    return await templates.caps(source, model.name) if source else TemplateCaps()


async def check_think(
    templates: Templates, model: Model, think: bool | None, typed: str | None = None
) -> None:
    """`think` on a model that cannot think is refused, as ollama does."""
    if think and not (await template_caps(templates, model)).thinking:
        raise BadRequest(f"model '{typed or model.name}' does not support thinking")


def plan_raw(opts: GenOptions, schema: dict | None, json_mode: bool) -> None:
    """A raw prompt's output format: the grammar alone."""
    opts.grammar = chat_plan.format_grammar(schema, json_mode, "the JSON schema in 'format'")


async def plan_chat(
    templates: Templates,
    model: Model,
    messages: list[dict],
    opts: GenOptions,
    *,
    tools: list[chat_plan.Tool] | None = None,
    choice: str = "auto",
    forced: str | None = None,
    parallel: bool = True,
    schema: dict | None = None,
    json_mode: bool = False,
    think: bool | None = None,
    typed: str | None = None,
) -> chat_plan.ChatPlan:
    """What the template gets and how the reply is held and read (engine.chat_plan), after
    the checks that need the model: before it is claimed, so a refusal costs nothing.
    `typed`: the model's name as the request gave it, for messages."""
    source = model.chat_template
    caps = await template_caps(templates, model)
    if think and not caps.thinking:
        raise BadRequest(f"model '{typed or model.name}' does not support thinking")
    chat = prefix.messages_of(messages)  # the client's messages name the prefix, for the router
    opts.prefix = [p.hash for p in prefix.chat_chain(model.name, chat)] if chat is not None else []
    messages = model_defaults.messages(model, messages)  # its Modelfile's SYSTEM and MESSAGEs
    uses_tools = bool(tools) and choice != "none"
    if uses_tools and not source:
        name = typed or model.name
        raise BadRequest(f"model '{name}' has no chat template, so it cannot be given tools")
    if uses_tools and any(isinstance(m.get("content"), list) for m in messages):
        raise BadRequest("tools cannot be used together with images")
    plan = chat_plan.plan(
        source,
        caps,
        messages,
        tools=tools,
        choice=choice,
        forced=forced,
        parallel=parallel,
        schema=schema,
        json_mode=json_mode,
        think=think,
    )
    opts.grammar, opts.grammar_trigger = plan.grammar, plan.trigger
    return plan


Event = tuple[str, str] | tuple[str, CallDelta]


def _content(text: str, turn: Turn, parser: Parser | None) -> list[Event]:
    """Reply text, through the tool-call parser when the request has tools."""
    if parser is None:
        turn.content += text
        return [("content", text)] if text else []
    return _parsed(parser.feed(text), turn)


def _parsed(events: list[str | CallDelta], turn: Turn) -> list[Event]:
    out: list[Event] = []
    for e in events:
        if isinstance(e, str):
            turn.content += e
            out.append(("content", e))
        else:
            out.append(("call", e))
    return out


async def generate(
    lease: Lease, produce, turn: Turn, think: bool | None, parser: Parser | None = None
) -> AsyncGenerator[Event]:
    """("thinking"|"content", text) and ("call", CallDelta) events; releases the lease when
    done or abandoned. `produce()` starts the generation (backend.chat/complete). Log
    probabilities, when asked for, collect in turn.logprobs (turn.take_logprobs() for each
    streamed chunk); tool calls in turn.calls."""
    splitter: ThinkingSplitter | None = None
    if parser is not None:
        turn.calls = parser.calls
    try:
        async for piece in lease.stream(produce):
            if turn.first_token_at is None:
                turn.first_token_at = time.perf_counter()
            if splitter is None:  # the prompt is rendered by now: does it open <think>?
                splitter = ThinkingSplitter(turn.stats.opens_thinking)
            turn.logprobs += piece.logprobs
            thinking, content = splitter.feed(piece.text)
            if thinking:
                turn.thinking += thinking
                if think is not False:
                    yield "thinking", thinking
            for event in _content(content, turn, parser):
                yield event
        if splitter is not None:
            thinking, content = splitter.flush()
            turn.thinking += thinking
            if thinking and think is not False:
                yield "thinking", thinking
            for event in _content(content, turn, parser):
                yield event
        if parser is not None:
            for event in _parsed(parser.finish(), turn):
                yield event
    finally:
        await lease.release()


class ClientGone(LlmlbError):
    """The client hung up before its answer was ready; nobody reads what we send."""

    status = 499  # nginx's "client closed request"


async def _hung_up(request: Request | None) -> None:
    """Return once the client disconnects (its body is read, so the next ASGI message is the
    disconnect); never returns without a request."""
    if request is None:
        await asyncio.Event().wait()
        return
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _watched(step: Awaitable[T], request: Request | None) -> T:
    """`step`, unless the client hangs up first: then ClientGone (and `step` is cancelled,
    which cancels the generation: its sequence is freed, a prefill in flight stopped)."""
    task = asyncio.ensure_future(step)
    if request is None:
        return await task
    watcher = asyncio.ensure_future(_hung_up(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise ClientGone("the client disconnected")
    return task.result()


async def primed(
    pieces: AsyncGenerator[Event], request: Request | None = None
) -> AsyncIterator[Event]:
    """Wait for the first piece before answering, so that a failure before the first token
    (prompt too long, model error) is a proper HTTP error and not a broken stream. A client
    that hangs up meanwhile (during a long prompt) cancels the generation."""
    try:
        first = await _watched(pieces.__anext__(), request)
    except StopAsyncIteration:
        first = None
    except ValueError as exc:  # llama-cpp-python's way to refuse a prompt (vision path)
        await pieces.aclose()
        raise BadRequest(str(exc)) from exc
    except BaseException:
        await pieces.aclose()
        raise

    async def chain() -> AsyncIterator[Event]:
        try:
            if first is not None:
                yield first
                async for item in pieces:
                    yield item
        finally:
            await pieces.aclose()

    return chain()


async def collect(pieces: AsyncIterator[Event], request: Request | None = None) -> None:
    """Run a non-streamed generation to its end (the Turn gathers the text), or stop it when
    the client hangs up: nothing is written until the end, so only the connection tells."""

    async def run() -> None:
        async for _ in pieces:
            pass

    await _watched(run(), request)


def _token_logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def token_logprobs(lps: list[TokenLogprob]) -> list[dict[str, Any]]:
    """Each token with its bytes and its top alternatives: the shape ollama and OpenAI chat
    share."""
    return [
        {
            **_token_logprob(lp.token, lp.logprob),
            "top_logprobs": [_token_logprob(t, v) for t, v in lp.top],
        }
        for lp in lps
    ]
