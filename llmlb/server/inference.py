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
from typing import TypeVar

from anyio import to_thread
from litestar import Request
from sqlalchemy.engine import Engine

from llmlb import settings
from llmlb.engine.base import GenStats, TokenLogprob
from llmlb.engine.scheduler import Lease, Scheduler
from llmlb.engine.thinking import ThinkingSplitter
from llmlb.errors import BadRequest, LlmlbError
from llmlb.server.claims import hold
from llmlb.server.metrics_api import NodeMetrics
from llmlb.server.requests import ChatMessage, ImagePart, ImageURL, KeepAlive
from llmlb.store import catalog
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


async def resolve(engine: Engine, name: str) -> Model:
    return await to_thread.run_sync(catalog.resolve, engine, name)


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


async def embed(
    request: Request,
    scheduler: Scheduler,
    model: Model,
    inputs: list[str],
    keep_alive: KeepAlive | None,
) -> tuple[list[list[float]], int, int]:
    """(vectors, prompt tokens, load ns) for several inputs."""
    lease, load_ns = await claim(request, scheduler, model, "embed", keep_alive)
    try:
        vectors, tokens = await to_thread.run_sync(lease.backend.embed, inputs)
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
    return out


async def generate(
    lease: Lease, produce, turn: Turn, think: bool | None, starts_thinking: bool = False
) -> AsyncGenerator[tuple[str, str]]:
    """("thinking"|"content", text) pieces; releases the lease when done or abandoned.
    `produce()` starts the generation (backend.chat/complete). Log probabilities, when asked
    for, collect in turn.logprobs (turn.take_logprobs() for each streamed chunk)."""
    splitter = ThinkingSplitter(starts_thinking)
    try:
        async for piece in lease.stream(produce):
            if turn.first_token_at is None:
                turn.first_token_at = time.perf_counter()
            turn.logprobs += piece.logprobs
            thinking, content = splitter.feed(piece.text)
            for kind, text in (("thinking", thinking), ("content", content)):
                if text:
                    if kind == "thinking":
                        turn.thinking += text
                    else:
                        turn.content += text
                    if kind == "content" or think is not False:
                        yield kind, text
        thinking, content = splitter.flush()
        turn.thinking += thinking
        turn.content += content
        if thinking and think is not False:
            yield "thinking", thinking
        if content:
            yield "content", content
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
    pieces: AsyncGenerator[tuple[str, str]], request: Request | None = None
) -> AsyncIterator[tuple[str, str]]:
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

    async def chain() -> AsyncIterator[tuple[str, str]]:
        try:
            if first is not None:
                yield first
                async for item in pieces:
                    yield item
        finally:
            await pieces.aclose()

    return chain()


async def collect(pieces: AsyncIterator[tuple[str, str]], request: Request | None = None) -> None:
    """Run a non-streamed generation to its end (the Turn gathers the text), or stop it when
    the client hangs up: nothing is written until the end, so only the connection tells."""

    async def run() -> None:
        async for _ in pieces:
            pass

    await _watched(run(), request)
