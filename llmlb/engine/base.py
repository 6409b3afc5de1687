"""What the scheduler needs from an inference backend, independent of llama.cpp."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class GenOptions:
    """One generation's sampling and limits, already validated by the API layer.

    Defaults are ollama's documented ones, so a request that sets nothing samples as ollama
    would. Both APIs map onto these fields (OpenAI's names where they differ are noted).
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64  # tokens the penalties look back over; -1 = the whole context
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None  # None = random
    stop: list[str] = field(default_factory=list)
    max_tokens: int | None = None  # ollama num_predict, OpenAI max_tokens/max_completion_tokens
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives per token (0-20); only with logprobs
    grammar: str | None = None  # GBNF constraining the output: JSON mode, schemas, tool calls


@dataclass
class TokenLogprob:
    """One generated token with its log probability and, if asked, the best alternatives."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


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
