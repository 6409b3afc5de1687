"""Several generations for one request: OpenAI's `n`, and a list of prompts in /v1/completions.

Each choice is a run of its own (its own claim on the model, its own sampler: with a `seed`,
choice i draws with seed + i, so that the choices differ and a request repeats). They start
together and run side by side in the model's batch; their events are read as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from litestar import Request

from llmlb.engine.base import GenOptions
from llmlb.engine.scheduler import Scheduler
from llmlb.server import pipeline as pipe


@dataclass
class Choice:
    index: int
    job: pipe.Prepared
    opts: GenOptions
    run: pipe.Run | None = None
    text_offset: int = 0  # where the next completion logprob's text starts

    @property
    def turn(self) -> pipe.Turn:
        assert self.run is not None
        return self.run.turn


def choices(jobs: list[pipe.Prepared], n: int) -> list[Choice]:
    """`n` choices of each job (a prompt), numbered as OpenAI numbers them; with a seed, each
    its own."""
    out = []
    for i, job in enumerate(jobs):
        seed = job.opts.seed
        for k in range(n):
            opts = dataclasses.replace(job.opts, seed=None if seed is None else seed + k)
            out.append(Choice(i * n + k, job, opts))
    return out


async def start(request: Request, scheduler: Scheduler, picks: list[Choice]) -> None:
    """Start every choice and wait for all their first events. If one fails, the others
    stop and the failure is raised."""

    async def one(c: Choice) -> None:
        c.run = await pipe.run(request, scheduler, c.job, c.opts)

    results = await asyncio.gather(*(one(c) for c in picks), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        await close(picks)
        raise failed[0]


async def close(picks: list[Choice]) -> None:
    for c in picks:
        events = c.run.events if c.run is not None else None
        if events is not None and hasattr(events, "aclose"):
            with contextlib.suppress(Exception):
                await events.aclose()


DONE = object()


async def events(picks: list[Choice]) -> AsyncIterator[tuple[Choice, Any]]:
    """(choice, event) as they come, and (choice, DONE) when a choice ends."""
    if len(picks) == 1:  # the common case, without a queue
        c = picks[0]
        assert c.run is not None
        async for event in c.run.events:
            yield c, event
        yield c, DONE
        return
    queue: asyncio.Queue[tuple[Choice, Any]] = asyncio.Queue()

    async def pump(c: Choice) -> None:
        assert c.run is not None
        try:
            async for event in c.run.events:
                await queue.put((c, event))
            await queue.put((c, DONE))
        except Exception as exc:
            await queue.put((c, exc))

    tasks = [asyncio.create_task(pump(c)) for c in picks]
    try:
        left = len(picks)
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
        await close(picks)


async def collect(picks: list[Choice], request: Request | None) -> None:
    """Run every choice to its end (their Turns gather the text), or stop them all when the
    client hangs up."""

    async def drain() -> None:
        async for _ in events(picks):
            pass

    await pipe.watched(drain(), request)
