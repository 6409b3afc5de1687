"""What the scheduler needs from an inference backend, independent of llama.cpp."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmlb.errors import BadRequest, LlmlbError
from llmlb.validation import Format


def check_runnable(model: Any) -> None:
    """Only GGUF files run; a Safetensors model that could not be converted says why."""
    if model.format == Format.GGUF:
        return
    why = (model.details or {}).get("convert_error")
    raise BadRequest(
        f"model '{model.name}' is {model.format} and could not be converted to GGUF: {why}"
        if why
        else f"model '{model.name}' is {model.format}; only GGUF models can be run"
    )


class Crashed(LlmlbError):
    """A backend's process ended (or was ended) while it had work: its words say how. The
    scheduler counts these; the router never sends such a request to another node."""


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts (images dropped)."""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


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
    # lazy grammar: it applies from this text on (when the model has it as one token)
    grammar_trigger: str | None = None
    # the fields the request set itself: a model's default parameters fill only the others
    given: frozenset[str] = frozenset()
    # the request's text-prefix hashes (llmlb/prefix.py): once its prompt is in a sequence,
    # the node tells the router it holds them
    prefix: list[int] = field(default_factory=list)


@dataclass
class TokenLogprob:
    """One generated token with its log probability and, if asked, the best alternatives
    (text, log probability, bytes). `raw` is the token's own bytes: a token may hold part of
    a character, which its text cannot show."""

    token: str
    logprob: float
    top: list[tuple[str, float, bytes]] = field(default_factory=list)
    raw: bytes = b""


@dataclass
class Piece:
    """Text the engine releases to the client, with the log probabilities of the tokens that
    made it (when asked for)."""

    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def __add__(self, other: Piece) -> Piece:
        return Piece(self.text + other.text, self.logprobs + other.logprobs)


@dataclass
class GenStats:
    """Written by the engine while it generates; final once the generation is done."""

    prompt_tokens: int = 0  # the whole prompt, cached part included
    cached_tokens: int = 0  # prompt tokens whose KV cache was reused (not evaluated again)
    restored_tokens: int = 0  # ... of them, restored from the prompt cache on disk
    completion_tokens: int = 0  # every sampled token, an end-of-turn token included (as llama.cpp)
    finish_reason: str = "stop"  # stop, length or cancelled
    prompt_ns: int = 0  # from taking up the request to the first sampled token
    eval_ns: int = 0  # from the first sampled token to the end
    opens_thinking: bool = False  # the prompt ended inside <think>: the reply starts thinking
    context: list[int] | None = None  # the prompt's and the reply's tokens, when asked for

    @property
    def evaluated_tokens(self) -> int:
        """Prompt tokens actually evaluated: ollama's prompt_eval_count."""
        return self.prompt_tokens - self.cached_tokens


@dataclass(frozen=True)
class TemplateCaps:
    """What a chat template renders, found by rendering it with made-up messages
    (llama_template.caps_of, run in a runner process)."""

    system: bool = False  # a system message
    tools: bool = False  # the `tools` variable
    tool_calls: bool = False  # an assistant message's tool_calls
    object_arguments: bool = False  # ... only when their arguments are an object, not JSON text
    tool_responses: bool = False  # `tool` messages
    thinking_toggle: bool = False  # enable_thinking changes the prompt
    thinks: bool = False  # the model writes <think>...</think>

    @property
    def thinking(self) -> bool:
        return self.thinks or self.thinking_toggle


class Generation(Protocol):
    """One request's stream of pieces, produced on another thread and read on the event loop."""

    def __aiter__(self) -> AsyncIterator[Piece]: ...

    def cancel(self) -> None:
        """Stop soon (the client went away); the stream then ends without an error."""

    def abort(self, error: BaseException) -> None:
        """End the stream now with `error` (its model is being unloaded), and stop its work."""

    @property
    def done(self) -> asyncio.Future:
        """Resolves once the engine has let go of the request (its sequence is free)."""
        ...


class Backend(Protocol):
    """A loaded model, for chat and completion or for embeddings (engine/runner.py's
    RunnerBackend; the scheduler's loader makes them). chat() and complete() are called on
    the event loop and return at once; the work (templating, tokenizing, decoding) happens
    elsewhere (a runner process)."""

    name: str
    size_bytes: int  # what it holds in memory, its process included
    base_rss: int  # of that, its process alone (0: not known)
    processor: str
    supports_images: bool
    has_chat_template: bool
    parallel: int  # requests it decodes at once
    n_ctx: int  # context window of one request

    @property
    def pid(self) -> int | None:
        """Its process (None: it has none of its own)."""
        ...

    @property
    def exited(self) -> asyncio.Future[str | None] | None:
        """Resolves when its process ends: with the words of a crash, or None when asked to
        stop (None here: it has no process to watch)."""
        ...

    def chat(
        self,
        messages: list[dict[str, Any]],
        opts: GenOptions,
        stats: GenStats,
        variables: dict[str, Any] | None = None,
        context: list[int] | None = None,
    ) -> Generation: ...

    def complete(
        self, prompt: str, opts: GenOptions, stats: GenStats, context: list[int] | None = None
    ) -> Generation:
        """A raw prompt, after the tokens of `context` (an earlier answer's) if given; with
        `context` not None, stats.context is filled at the end."""
        ...

    async def embed(self, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
        """(unit vectors, tokens) of texts or token arrays; cancelling the call stops it."""
        ...

    async def close(self) -> None: ...


class Cancellable:
    """A request's cancel flag, set from any thread, and the engine's hook that stops its work
    in flight when it is set (a decode that serves only cancelled requests is aborted)."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.on_cancel: Callable[[], None] | None = None

    def cancel(self) -> None:
        if not self.cancelled.is_set():
            self.cancelled.set()
            hook = self.on_cancel
            if hook is not None:
                hook()
