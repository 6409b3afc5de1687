"""What the scheduler needs from an inference backend, independent of llama.cpp."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class GenOptions:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    repeat_penalty: float = 1.0


@dataclass
class GenStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    prompt_ns: int = 0  # from start to the first sampled token
    eval_ns: int = 0  # from the first sampled token to the end


class Backend(Protocol):
    name: str
    size_bytes: int
    processor: str
    supports_images: bool

    def chat(
        self,
        messages: list[dict[str, Any]],
        opts: GenOptions,
        cancel: threading.Event,
        stats: GenStats,
    ) -> Iterator[str]: ...

    def complete(
        self, prompt: str, opts: GenOptions, cancel: threading.Event, stats: GenStats
    ) -> Iterator[str]: ...

    def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]: ...

    def close(self) -> None: ...
