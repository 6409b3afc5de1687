"""Several generations for one request: OpenAI's `n`, and a list of prompts in /v1/completions.

Each choice is a generation of its own (its own claim on the model, its own sampler: with a
`seed`, choice i draws with seed + i, so that the choices differ and a request repeats). They
start together and run side by side in the model's batch; their events are read as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request

from llmlb.engine.base import GenOptions
from llmlb.engine.tool_calls import Parser
from llmlb.server import inference as inf

MAX_CHOICES = 32


@dataclass
class Choice:
    index: int
    opts: GenOptions
    turn: inf.Turn = field(default_factory=inf.Turn)
    parser: Parser | None = None
    prompt: str = ""  # a completion's prompt (for `echo`)
    pieces: AsyncIterator[inf.Event] | None = None
    text_offset: int = 0  # where the next completion logprob's text starts


def options(base: GenOptions, n: int) -> list[GenOptions]:
    """`n` copies of the request's options; with a seed, each its own."""
    return [
        dataclasses.replace(base, seed=None if base.seed is None else base.seed + i)
        for i in range(n)
    ]


async def start(
    request: Request,
    choices: list[Choice],
    begin: Callable[[Choice], Any],
) -> None:
    """Claim and start every choice (`begin(choice)` gives its primed event stream); wait for
    all their first events. If one fails, the others stop and the failure is raised."""

    async def one(choice: Choice) -> None:
        choice.pieces = await begin(choice)

    results = await asyncio.gather(*(one(c) for c in choices), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        await close(choices)
        raise failed[0]


async def close(choices: list[Choice]) -> None:
    for c in choices:
        pieces = c.pieces
        if pieces is not None and hasattr(pieces, "aclose"):
            with contextlib.suppress(Exception):
                await pieces.aclose()


DONE = object()


async def events(choices: list[Choice]) -> AsyncIterator[tuple[Choice, Any]]:
    """(choice, event) as they come, and (choice, DONE) when a choice ends."""
    if len(choices) == 1:  # the common case, without a queue
        c = choices[0]
        assert c.pieces is not None
        async for event in c.pieces:
            yield c, event
        yield c, DONE
        return
    queue: asyncio.Queue[tuple[Choice, Any]] = asyncio.Queue()

    async def pump(c: Choice) -> None:
        assert c.pieces is not None
        try:
            async for event in c.pieces:
                await queue.put((c, event))
            await queue.put((c, DONE))
        except Exception as exc:
            await queue.put((c, exc))

    tasks = [asyncio.create_task(pump(c)) for c in choices]
    try:
        left = len(choices)
        while left:
            c, event = await queue.get()
            if isinstance(event, Exception):
                raise event
            if event is DONE:
                left -= 1
            yield c, event
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close(choices)


async def collect(choices: list[Choice], request: Request | None) -> None:
    """Run every choice to its end (their Turns gather the text), or stop them all when the
    client hangs up."""

    async def run() -> None:
        async for _ in events(choices):
            pass

    await inf.watched(run(), request)
