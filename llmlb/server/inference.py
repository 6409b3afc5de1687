"""The path every generation takes, whatever the API style: validate, lease, stream, split thinking."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from litestar import Request

from llmlb import settings
from llmlb.engine.base import GenOptions, GenStats, TokenLogprob
from llmlb.engine.thinking import ThinkingSplitter
from llmlb.errors import BadRequest, LlmlbError
from llmlb.server.body import field as get_field

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


def options_from(data: dict, prefix: str = "") -> GenOptions:
    """Sampling options from an ollama `options` object or OpenAI top-level fields; unset
    fields keep ollama's defaults (GenOptions)."""

    def typed(name, kind):
        try:
            return get_field(data, name, kind)
        except BadRequest as exc:  # name the field as the client wrote it (options.x)
            raise BadRequest(exc.message.replace(f"'{name}'", f"'{prefix}{name}'", 1)) from None

    def num(name, lo, hi, kind=(int, float), low_open=False):
        value = typed(name, kind)
        if value is not None and not (lo < value <= hi if low_open else lo <= value <= hi):
            edge = "greater than" if low_open else "between"
            rng = f"{lo} and at most {hi}" if low_open else f"{lo} and {hi}"
            raise BadRequest(f"field '{prefix}{name}' must be {edge} {rng}")
        return value

    opts = GenOptions()
    for name, lo, hi in (
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("min_p", 0.0, 1.0),
        ("typical_p", 0.0, 1.0),
        ("presence_penalty", -2.0, 2.0),
        ("frequency_penalty", -2.0, 2.0),
    ):
        value = num(name, lo, hi)
        if value is not None:
            setattr(opts, name, float(value))
    rp = num("repeat_penalty", 0.0, 10.0, low_open=True)
    if rp is not None:
        opts.repeat_penalty = float(rp)
    k = num("top_k", 0, 1_000_000, int)
    if k is not None:
        opts.top_k = k
    last_n = num("repeat_last_n", -1, 1_000_000, int)
    if last_n is not None:
        opts.repeat_last_n = last_n
    seed = typed("seed", int)
    if seed is not None:
        opts.seed = seed
    stop = data.get("stop")
    if isinstance(stop, str):
        opts.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        opts.stop = stop
    elif stop is not None:
        raise BadRequest(f"field '{prefix}stop' must be a string or a list of strings")
    return opts


def logprobs_from(opts: GenOptions, want: Any, top: Any, name: str = "logprobs") -> None:
    """`logprobs` (a boolean) and `top_logprobs` (0-20), as OpenAI chat and ollama take them."""
    if want is not None and not isinstance(want, bool):
        raise BadRequest(f"field '{name}' must be a boolean")
    if top is not None and (
        isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20
    ):
        raise BadRequest("field 'top_logprobs' must be an integer between 0 and 20")
    if top and not want:
        raise BadRequest(f"field 'top_logprobs' needs '{name}': true")
    opts.logprobs = bool(want)
    opts.top_logprobs = top or 0


def max_tokens(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field '{name}' must be an integer")
    if value < 0:
        return None  # ollama: -1 = no limit
    if value == 0:
        raise BadRequest(f"field '{name}' must be at least 1")
    return value


def keep_alive_from(data: dict) -> float | None:
    if data.get("keep_alive") is None:
        return None
    return settings.parse_duration(data["keep_alive"])


def image_data_url(b64: str, field_name: str = "images") -> str:
    """Check an image by its bytes and turn it into a data URL for llama.cpp."""
    if not isinstance(b64, str):
        raise BadRequest(f"field '{field_name}' must hold base64 strings")
    if b64.startswith("data:"):
        b64 = b64.split(",", 1)[-1]
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise BadRequest(f"field '{field_name}' holds invalid base64") from exc
    mime = next((m for magic, m in IMAGE_MAGIC.items() if raw.startswith(magic)), None)
    if mime is None and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None:
        raise BadRequest(
            f"field '{field_name}' holds data that is not a PNG, JPEG, WebP or GIF image"
        )
    return f"data:{mime};base64,{b64}"


async def generate(
    scheduler, lease, produce, turn: Turn, think: bool | None, starts_thinking: bool = False
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

    async def chain() -> AsyncIterator[tuple[str, str]]:
        if first is not None:
            yield first
            async for item in pieces:
                yield item

    return chain()


async def collect(pieces: AsyncIterator[tuple[str, str]], request: Request | None = None) -> None:
    """Run a non-streamed generation to its end (the Turn gathers the text), or stop it when
    the client hangs up: nothing is written until the end, so only the connection tells."""

    async def run() -> None:
        async for _ in pieces:
            pass

    await _watched(run(), request)


def chat_messages(raw: Any, supports_images: bool, model_name: str) -> list[dict]:
    """Validate chat messages and turn them into llama-cpp-python's format."""
    if not isinstance(raw, list) or not raw:
        raise BadRequest("field 'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise BadRequest(f"field 'messages[{i}]' must be an object")
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool", "developer"):
            raise BadRequest(f"field 'messages[{i}].role' must be system, user, assistant or tool")
        role = "system" if role == "developer" else role
        content = m.get("content") or ""
        images: list[str] = []
        if isinstance(content, list):  # OpenAI content parts
            texts = []
            for part in content:
                if not isinstance(part, dict):
                    raise BadRequest(f"field 'messages[{i}].content' parts must be objects")
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    url = (
                        (part.get("image_url") or {}).get("url")
                        if isinstance(part.get("image_url"), dict)
                        else part.get("image_url")
                    )
                    if not isinstance(url, str) or not url.startswith("data:"):
                        raise BadRequest(
                            "only data: URLs are accepted for images (no remote fetches)"
                        )
                    images.append(url)
                else:
                    raise BadRequest(f"unsupported content part type {part.get('type')!r}")
            content = "\n".join(texts)
        elif not isinstance(content, str):
            raise BadRequest(f"field 'messages[{i}].content' must be a string")
        for img in m.get("images") or []:
            images.append(image_data_url(img, f"messages[{i}].images"))
        if images and not supports_images:
            raise BadRequest(f"model '{model_name}' does not support images")
        if images:
            parts = [{"type": "image_url", "image_url": {"url": u}} for u in images]
            out.append({"role": role, "content": [*parts, {"type": "text", "text": content}]})
        else:
            out.append({"role": role, "content": content})
    return out
