"""The messages between the node and its runner processes, and how they travel.

A runner is a child process that holds one loaded model (engine/runner_main.py); the node
talks to it over one Unix stream socket. Every message is a msgspec Struct, encoded as
MessagePack and framed with its length (4 bytes, big-endian). The node sends commands; the
runner answers with one `Events` frame per decode step (every request's pieces of that step
together), so the cost per token is a share of one small frame, not a frame per request.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from llmlb.engine.base import GenOptions, GenStats, TemplateCaps, TokenLogprob

HEADER = struct.Struct(">I")
MAX_FRAME = 512 * 1024 * 1024  # a prompt of 64 MiB in JSON, with room; a runner sends less


class ErrorInfo(msgspec.Struct, frozen=True):
    """An LlmlbError on the wire: its HTTP status and its one-line message."""

    status: int
    message: str


# -- node -> runner ----------------------------------------------------------------------------


class Load(msgspec.Struct, tag=True):
    """The first message: load `model` (the catalog row's fields) for chat or embeddings."""

    model: dict[str, Any]
    kind: str  # "chat" | "embed"
    n_ctx: int
    parallel: int


class Generate(msgspec.Struct, tag=True):
    """A chat (messages) or a raw completion (prompt)."""

    id: int
    opts: GenOptions
    messages: list[dict[str, Any]] | None = None
    variables: dict[str, Any] | None = None
    prompt: str | None = None
    context: list[int] | None = None  # tokens before the prompt; the reply's tokens come back


class Embed(msgspec.Struct, tag=True):
    id: int
    inputs: list[str | list[int]]  # texts, or token arrays


class Probe(msgspec.Struct, tag=True):
    """What a chat template can do (rendered with made-up messages)."""

    id: int
    name: str  # the model's, for messages
    source: str


class Cancel(msgspec.Struct, tag=True):
    id: int


class Shutdown(msgspec.Struct, tag=True):
    """The model is being unloaded: save what the prompt cache should keep, within `secs`,
    then leave when the socket closes."""

    secs: float


Command = Load | Generate | Embed | Probe | Cancel | Shutdown


# -- runner -> node ----------------------------------------------------------------------------


class Ready(msgspec.Struct, tag=True):
    """The model is loaded (or, for a runner without a model, the process is up)."""

    n_ctx: int = 0
    parallel: int = 0
    processor: str = ""
    size_bytes: int = 0  # weights and KV cache
    base_rss: int = 0  # the process itself before the model: interpreter and libraries
    has_template: bool = False
    supports_images: bool = False
    gpu: bool = False


class LoadFailed(msgspec.Struct, tag=True):
    reason: str


class Started(msgspec.Struct, tag=True):
    """A generation's prompt is ready and queued for decoding."""

    id: int
    prompt_tokens: int
    opens_thinking: bool = False


class Piece(msgspec.Struct, tag=True):
    id: int
    text: str
    logprobs: list[TokenLogprob] = []


class Done(msgspec.Struct, tag=True):
    """The runner has let go of a request; `error` when it failed."""

    id: int
    stats: GenStats | None = None
    error: ErrorInfo | None = None


class Vectors(msgspec.Struct, tag=True):
    id: int
    vectors: list[list[float]]
    tokens: int


class Caps(msgspec.Struct, tag=True):
    id: int
    caps: TemplateCaps


class Progress(msgspec.Struct, tag=True):
    """A step that produced nothing to send (a prompt chunk, a load stage): still alive."""


class Log(msgspec.Struct, tag=True):
    level: int
    name: str
    message: str


class Holds(msgspec.Struct, tag=True):
    """What the prompt cache holds now, by text-prefix hashes (llmlb/prefix.py): a sequence
    (`seq`) or a file on disk (`entry`); an empty `prefix` when it holds nothing any more."""

    seq: int = -1
    entry: str = ""
    prefix: list[int] = []


Event = Started | Piece | Done | Vectors | Caps | Progress | LoadFailed | Ready | Log | Holds


class Events(msgspec.Struct, tag=True):
    items: list[Event]


Reply = Events

_encoder = msgspec.msgpack.Encoder()
command_decoder = msgspec.msgpack.Decoder(Command)
reply_decoder = msgspec.msgpack.Decoder(Events)


def frame(message: msgspec.Struct) -> bytes:
    data = _encoder.encode(message)
    return HEADER.pack(len(data)) + data


def frame_size(header: bytes) -> int:
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes is larger than {MAX_FRAME}")
    return size
