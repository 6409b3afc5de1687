"""A scripted inference backend for in-process tests of the scheduler and the APIs.

It stands where llama.cpp stands (the Scheduler's loader), so everything above it runs for
real: claims, queues, keep-alive, the HTTP handlers. `fail_at` makes it raise at a step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from llmlb.engine.base import GenOptions, GenStats, Piece
from llmlb.engine.generation import Stream, run_in_thread


class Boom(RuntimeError):
    """The failure a FakeBackend raises where it was told to."""


@dataclass
class Script:
    tokens: list[str] = field(default_factory=lambda: ["Hello", " there", "."])
    fail_at: int | None = None  # raise before yielding token number N (0 = before the first)
    gate: threading.Event | None = None  # when set, each token waits for it


class FakeBackend:
    """A model without a process of its own: no pid, nothing to watch."""

    processor = "100% CPU"
    base_rss = 0
    pid = None
    exited = None
    supports_images = False
    has_chat_template = True
    n_ctx = 2048
    parallel = 1

    def __init__(self, model: Any, script: Script):
        self.name = model.name
        self.model = model
        self.script = script
        self.size_bytes = 1000
        self.closed = False

    def _run(self, cancel: threading.Event, stats: GenStats) -> Iterator[Piece]:
        stats.prompt_tokens = 3
        for i, token in enumerate(self.script.tokens):
            if self.script.fail_at == i:
                raise Boom(f"scripted failure at token {i}")
            if self.script.gate is not None:
                while not self.script.gate.wait(0.01):
                    if cancel.is_set():
                        break
            if cancel.is_set():
                stats.finish_reason = "cancelled"
                return
            stats.completion_tokens += 1
            yield Piece(token)

    def _generation(self, stats: GenStats) -> Stream:
        return run_in_thread(Stream(), lambda cancel: self._run(cancel, stats))

    def chat(
        self, messages: list[dict], opts: GenOptions, stats: GenStats, variables=None, context=None
    ) -> Stream:
        return self._generation(stats)

    def complete(self, prompt: str, opts: GenOptions, stats: GenStats, context=None) -> Stream:
        return self._generation(stats)

    async def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        if self.script.fail_at is not None:
            raise Boom("scripted embedding failure")
        return [[1.0, 0.0] for _ in inputs], len(inputs)

    async def close(self) -> None:
        self.closed = True


class FakeLoader:
    """The Scheduler's loader: every load gets the current script."""

    def __init__(self) -> None:
        self.script = Script()
        self.loads = 0
        self.loading = threading.Event()  # set when a load has begun
        self.gate: threading.Event | None = None  # when set, a load waits for it

    async def __call__(
        self, model: Any, n_ctx: int, embedding: bool, parallel: int = 1
    ) -> FakeBackend:
        self.loads += 1
        self.loading.set()
        if self.gate is not None and not await asyncio.to_thread(self.gate.wait, 60):
            raise Boom("the test never let the load finish")
        return FakeBackend(model, self.script)
