"""One generation pipeline for every API style: prepare a request, then run it.

`prepare_chat` / `prepare_raw` do what needs the model but not a claim on it (its resolution,
the template's checks, thinking, tools, the reply's grammar, keep_alive in seconds) and give an
immutable `Prepared`: a refusal there costs nothing. `run` claims the model (tied to the HTTP
request: released whatever ends it), starts the generation and waits for its first event, so
that a failure before the first token is a proper HTTP error; it gives a `Run`: the events as
they come (`Text` and tool-call `CallDelta`s) and its `Turn`, the outcome, complete at the end.
ollama's NDJSON, OpenAI's SSE (chat, completions, n choices) and the Responses API are writers
over runs (ollama_api, openai_api, responses_api).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from litestar import Request

from llmlb import prefix, settings
from llmlb.engine import chat_plan, model_defaults
from llmlb.engine.base import GenOptions, GenStats, TemplateCaps, TokenLogprob
from llmlb.engine.llama_template import NoChatTemplate
from llmlb.engine.scheduler import Lease, Scheduler
from llmlb.engine.templates import Templates
from llmlb.engine.thinking import ThinkingSplitter
from llmlb.engine.tool_calls import PARSERS, CallDelta, Parser, ToolCall
from llmlb.errors import BadRequest, LlmlbError
from llmlb.server.claims import hold
from llmlb.server.messages import chat_messages
from llmlb.server.metrics_api import NodeMetrics
from llmlb.server.requests import ChatMessage, KeepAlive
from llmlb.store.models import Model
from llmlb.validation import Format

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Text:
    """Reply text: `kind` "content" or "thinking"."""

    kind: str
    text: str


Event = Text | CallDelta


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


@dataclass(frozen=True)
class Prepared:
    """A generation, checked and resolved: all that `run` needs."""

    model: Model
    typed: str  # the model's name as the request gave it
    opts: GenOptions  # with the reply's grammar; run() gives the engine a copy
    keep_alive: float | None  # seconds; None: the model's current keep-alive
    messages: list[dict[str, Any]] | None = None  # a chat (None: the raw `prompt`)
    variables: dict[str, Any] = field(default_factory=dict)  # what the template gets besides
    prompt: str = ""
    context: list[int] | None = None  # an earlier answer's tokens to continue (ollama)
    reply_format: str | None = None  # how tool calls are read (None: plain text)
    parallel: bool = True  # several tool calls allowed
    think: bool | None = None  # False: thinking is not shown

    def parser(self) -> Parser | None:
        return PARSERS[self.reply_format](self.parallel) if self.reply_format else None


def keep_alive_secs(value: KeepAlive | None) -> float | None:
    if value is None:
        return None
    try:
        return settings.keep_alive_secs(value)
    except settings.SettingsError as exc:
        raise BadRequest(exc.message) from exc


async def template_caps(templates: Templates, model: Model) -> TemplateCaps:
    """What the model's chat template renders (none: nothing)."""
    source = model.chat_template
    return await templates.caps(source, model.name) if source else TemplateCaps()


async def prepare_chat(
    scheduler: Scheduler,
    templates: Templates,
    typed: str,
    messages: list[ChatMessage],
    opts: GenOptions,
    *,
    keep_alive: KeepAlive | None = None,
    tools: list[chat_plan.Tool] | None = None,
    choice: str = "auto",
    forced: str | None = None,
    parallel: bool = True,
    schema: dict | None = None,
    json_mode: bool = False,
    think: bool | None = None,
    needs_template: bool = True,
    model: Model | None = None,
) -> Prepared:
    """A chat: what the template gets and how the reply is held and read (engine.chat_plan).
    A model without a template is refused from its metadata (`needs_template=False`: the
    caller sends the prompt as it is instead, see prepare_raw). `model`: when the caller has
    resolved `typed` already."""
    model = model or await scheduler.resolve(typed)
    seconds = keep_alive_secs(keep_alive)
    source = model.chat_template
    uses_tools = bool(tools) and choice != "none"
    if needs_template and not source and model.format == Format.GGUF and not uses_tools:
        raise NoChatTemplate(typed)
    chat = chat_messages(messages, model)
    said = prefix.messages_of(chat)  # the client's messages name the prefix, for the router
    chain = [p.hash for p in prefix.chat_chain(model.name, said)] if said is not None else []
    caps = await template_caps(templates, model)
    if think and not caps.thinking:
        raise BadRequest(f"model '{typed}' does not support thinking")
    chat = model_defaults.messages(model, chat)  # its Modelfile's SYSTEM and MESSAGEs
    if uses_tools and not source:
        raise BadRequest(f"model '{typed}' has no chat template, so it cannot be given tools")
    if uses_tools and any(isinstance(m.get("content"), list) for m in chat):
        raise BadRequest("tools cannot be used together with images")
    plan = chat_plan.plan(
        source,
        caps,
        chat,
        tools=tools,
        choice=choice,
        forced=forced,
        parallel=parallel,
        schema=schema,
        json_mode=json_mode,
        think=think,
    )
    held = dataclasses.replace(
        opts, grammar=plan.grammar, grammar_trigger=plan.trigger, prefix=chain
    )
    return Prepared(
        model,
        typed,
        held,
        seconds,
        messages=plan.messages,
        variables=plan.variables,
        reply_format=plan.format,
        parallel=plan.parallel,
        think=think,
    )


async def prepare_raw(
    scheduler: Scheduler,
    templates: Templates,
    typed: str,
    prompt: str,
    opts: GenOptions,
    *,
    keep_alive: KeepAlive | None = None,
    schema: dict | None = None,
    json_mode: bool = False,
    think: bool | None = None,
    context: list[int] | None = None,
    model: Model | None = None,
) -> Prepared:
    """A prompt sent as it is: its output format is a grammar alone."""
    model = model or await scheduler.resolve(typed)
    if think and not (await template_caps(templates, model)).thinking:
        raise BadRequest(f"model '{typed}' does not support thinking")
    grammar = chat_plan.format_grammar(schema, json_mode, "the JSON schema in 'format'")
    return Prepared(
        model,
        typed,
        dataclasses.replace(opts, grammar=grammar),
        keep_alive_secs(keep_alive),
        prompt=prompt,
        context=context,
        think=think,
    )


@dataclass
class Run:
    """A generation under way: its events (the first one already came) and its outcome."""

    turn: Turn
    events: AsyncIterator[Event]
    opts: GenOptions


async def run(
    request: Request,
    scheduler: Scheduler,
    job: Prepared,
    opts: GenOptions | None = None,
    context: list[int] | None = None,
) -> Run:
    """Claim the model and start `job` (with `opts` instead of the job's own, for one of
    several choices); `context`: ask for the conversation's tokens back (None: not)."""
    opts = dataclasses.replace(opts or job.opts)  # the engine's own: it fills in defaults
    turn = Turn()
    lease, turn.load_ns = await claim(request, scheduler, job.model, "chat", job.keep_alive)
    backend = lease.backend
    assert backend is not None  # a lease holds a loaded model
    ask = job.context if job.context is not None else context

    def produce():
        if job.messages is not None:
            return backend.chat(job.messages, opts, turn.stats, job.variables, context=ask)
        return backend.complete(job.prompt, opts, turn.stats, context=ask)

    events = await primed(generate(lease, produce, turn, job.think, job.parser()), request)
    return Run(turn, events, opts)


async def claim(
    request: Request,
    scheduler: Scheduler,
    model: Model,
    kind: str,
    keep_alive: float | None,
) -> tuple[Lease, int]:
    """Claim a loaded model for this request: (lease, nanoseconds spent loading/waiting).

    The lease is tied to the request (claims.hold): whatever happens between here and the
    end of the response, it is released."""
    started = time.perf_counter()
    lease = await scheduler.acquire(model, kind, keep_alive)
    hold(request, lease)
    return lease, int((time.perf_counter() - started) * 1e9)


def record(metrics: NodeMetrics, turn: Turn) -> None:
    ttft = turn.first_token_at - turn.started if turn.first_token_at else None
    metrics.generation(turn.stats.prompt_tokens, turn.stats.completion_tokens, ttft)
    metrics.prompt_cache(turn.stats)


async def embed(
    request: Request,
    scheduler: Scheduler,
    typed: str,
    inputs: list[str | list[int]],
    keep_alive: KeepAlive | None,
    dimensions: int | None = None,
) -> tuple[list[list[float]], int, int]:
    """(vectors, prompt tokens, load ns) for several inputs (texts or token arrays). A client
    that hangs up stops the work (the runner stops between two decodes). `dimensions`: the
    first that many of each vector, normalised again (as OpenAI and ollama shorten them)."""
    model = await scheduler.resolve(typed)
    seconds = keep_alive_secs(keep_alive)
    lease, load_ns = await claim(request, scheduler, model, "embed", seconds)
    try:
        assert lease.backend is not None
        vectors, tokens = await watched(lease.backend.embed(inputs), request)
    finally:
        await lease.release()
    if dimensions is not None:
        vectors = [_shortened(v, dimensions, model.name) for v in vectors]
    return vectors, tokens, load_ns


def _shortened(vector: list[float], dimensions: int, name: str) -> list[float]:
    if dimensions > len(vector):
        raise BadRequest(
            f"field 'dimensions' is {dimensions}; '{name}' makes embeddings of {len(vector)}"
        )
    cut = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in cut))
    return [x / norm for x in cut] if norm else cut


# -- the events of one generation --------------------------------------------------------------


def _content(text: str, turn: Turn, parser: Parser | None) -> list[Event]:
    """Reply text, through the tool-call parser when the request has tools."""
    if parser is None:
        turn.content += text
        return [Text("content", text)] if text else []
    return _parsed(parser.feed(text), turn)


def _parsed(events: list[str | CallDelta], turn: Turn) -> list[Event]:
    out: list[Event] = []
    for e in events:
        if isinstance(e, str):
            turn.content += e
            out.append(Text("content", e))
        else:
            out.append(e)
    return out


async def generate(
    lease: Lease, produce, turn: Turn, think: bool | None, parser: Parser | None = None
) -> AsyncGenerator[Event]:
    """Text("thinking"|"content") and CallDelta events; releases the lease when done or
    abandoned. `produce()` starts the generation (backend.chat/complete). Log probabilities,
    when asked for, collect in turn.logprobs (turn.take_logprobs() for each streamed chunk);
    tool calls in turn.calls."""
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
                    yield Text("thinking", thinking)
            for event in _content(content, turn, parser):
                yield event
        if splitter is not None:
            thinking, content = splitter.flush()
            turn.thinking += thinking
            if thinking and think is not False:
                yield Text("thinking", thinking)
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


async def watched(step: Awaitable[T], request: Request | None) -> T:
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
        first = await watched(pieces.__anext__(), request)
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

    async def drain() -> None:
        async for _ in pieces:
            pass

    await watched(drain(), request)
