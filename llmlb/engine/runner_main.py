"""A runner: one loaded model in a process of its own, serving the node over a socket.

The node starts it (engine/runner.py) as `python -m llmlb.engine.runner_main FD PARENT_PID`.
Everything native or untrusted runs here: llama.cpp's context and decode loop, chat templates,
tokenizing, grammars. If any of it aborts, the node sees this process end; if it hangs, the
node hears nothing and ends it; either way only this model's requests fail. A runner without
a model renders templates for the node (what a template can do, with made-up messages).

Threads: the main thread reads commands; one prepare thread renders and tokenizes prompts
(under a deadline) and hands them to the decode loop's thread; embeddings and images each
have a thread of their own. The runner exits when its socket closes or its parent dies.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# llama.cpp's native libraries before numpy's: the other order crashes loads on CUDA builds
import llama_cpp  # noqa: F401  (imported for the load order alone)

from llmlb import settings
from llmlb.engine import wire
from llmlb.engine.base import GenStats
from llmlb.engine.deadline import Deadlines, Overtime
from llmlb.engine.llama_loop import Job
from llmlb.engine.llama_template import caps_of
from llmlb.engine.sink import Outbox, Sink
from llmlb.errors import BadRequest, LlmlbError

log = logging.getLogger("llmlb.runner")
PR_SET_PDEATHSIG = 1


TEMPLATE_SECS = 5.0  # real templates render a long chat in milliseconds


class Channel:
    """The runner's end of the socket: framed commands in, framed events out (any thread)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._in = sock.makefile("rb", buffering=1 << 16)
        self._lock = threading.Lock()

    def commands(self):
        while True:
            header = self._in.read(wire.HEADER.size)
            if len(header) < wire.HEADER.size:
                return
            data = self._in.read(wire.frame_size(header))
            yield wire.command_decoder.decode(data)

    def send(self, items: list[wire.Event]) -> None:
        data = wire.frame(wire.Events(items))
        try:
            with self._lock:
                self.sock.sendall(data)
        except OSError:  # the node is gone: nobody to work for
            os._exit(0)


class ChannelLog(logging.Handler):
    """Log records go to the node, which writes them into its own log."""

    def __init__(self, channel: Channel):
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self.format(record).split("\n", 1)[-1]
            self.channel.send([wire.Log(record.levelno, record.name, message)])
        except Exception:
            self.handleError(record)


def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Host:
    """The model this runner holds (or none), and the requests on it."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.send = channel.send
        self.backend: Any = None  # LlamaBackend
        self.embedder: Any = None  # LlamaEmbedder
        self.sinks: dict[int, Sink] = {}
        self.deadlines = Deadlines(alive=self._progress)
        self._prepare: queue.SimpleQueue[wire.Generate | wire.Probe] = queue.SimpleQueue()
        self._embeds: queue.SimpleQueue[wire.Embed] = queue.SimpleQueue()
        self._last_progress = 0.0
        threading.Thread(target=self._prepare_forever, name="prepare", daemon=True).start()
        threading.Thread(target=self._embed_forever, name="embed", daemon=True).start()

    # -- commands (main thread) ------------------------------------------------------------
    def serve(self) -> None:
        base = rss_bytes()
        for command in self.channel.commands():
            if isinstance(command, wire.Load):
                self.load(command, base)
            elif isinstance(command, wire.Cancel):
                sink = self.sinks.get(command.id)
                if sink is not None:
                    sink.cancel()
            elif isinstance(command, wire.Embed):
                self._sink(command.id)
                self._embeds.put(command)
            elif isinstance(command, wire.Shutdown):
                self.shutdown(command.secs)
            else:
                self._sink(command.id)
                self._prepare.put(command)

    def shutdown(self, secs: float) -> None:
        """The node unloads the model: the prompt cache saves what it keeps, within `secs`;
        the socket's end follows, and then the process."""
        if self.backend is not None:
            self.send([wire.Progress()])  # saving: the node waits for it
            try:
                self.backend.shutdown(secs)
            except Exception:
                log.exception("saving the prompt cache of %s failed", self.backend.name)

    def _sink(self, id: int) -> Sink:
        sink = Sink(id, self.send, self._forget)
        self.sinks[id] = sink
        return sink

    def _forget(self, id: int) -> None:
        self.sinks.pop(id, None)

    def _progress(self, _fraction: float = 0.0) -> None:
        """Alive and working (a load, an embedding, a template within its deadline)."""
        now = time.monotonic()
        if now - self._last_progress >= 0.5:  # alive, for the node's stall watch
            self._last_progress = now
            self.send([wire.Progress()])

    def load(self, command: wire.Load, base_rss: int) -> None:
        from llmlb.store.models import Model

        model = Model(**command.model)
        done: Any
        try:
            if command.kind == "embed":
                from llmlb.engine.llama_embed import LlamaEmbedder

                self.embedder = done = LlamaEmbedder(model, command.n_ctx, self._progress)
                ready = wire.Ready(n_ctx=done.n_ctx, parallel=1)
            else:
                from llmlb.engine.llama_cpp import LlamaBackend

                outbox = Outbox(self.send)
                self.backend = done = LlamaBackend(
                    model, command.n_ctx, command.parallel, outbox, self._progress
                )
                ready = wire.Ready(
                    n_ctx=done.n_ctx,
                    parallel=done.parallel,
                    has_template=done.has_chat_template,
                    supports_images=done.supports_images,
                )
        except LlmlbError as exc:
            self.send([wire.LoadFailed(exc.message)])
            return
        except Exception as exc:
            log.exception("loading %s failed", model.name)
            self.send([wire.LoadFailed(f"{type(exc).__name__}: {exc}")])
            return
        ready.processor = done.processor
        ready.gpu = done.gpu
        ready.size_bytes = done.size_bytes
        ready.base_rss = base_rss
        self.send([ready])

    # -- prompts, templates (the prepare thread) ----------------------------------------------
    def _prepare_forever(self) -> None:
        while True:
            command = self._prepare.get()
            sink = self.sinks.get(command.id)
            if sink is None:  # cancelled before we got to it: its Done went out already
                continue
            try:
                if isinstance(command, wire.Probe):
                    self._probe(command, sink)
                elif command.messages is not None and any(
                    isinstance(m.get("content"), list) for m in command.messages
                ):
                    threading.Thread(
                        target=self._vision, args=(command, sink), name="vision", daemon=True
                    ).start()
                else:
                    self._generate(command, sink)
            except Exception as exc:  # a bug: this request fails, the runner goes on
                log.exception("preparing request %d failed", command.id)
                sink.done(None, exc)

    @contextmanager
    def _rendering(self, what: str) -> Iterator[None]:
        """A deadline for rendering a template; past it, a 400 that names the limit."""
        try:
            with self.deadlines.limit(TEMPLATE_SECS):
                yield
        except Overtime:
            raise BadRequest(
                f"{what} did not finish rendering within {TEMPLATE_SECS:g} s (the limit)"
            ) from None

    def _probe(self, command: wire.Probe, sink: Sink) -> None:
        try:
            with self._rendering(f"the chat template of '{command.name}'"):
                caps = caps_of(command.source)
        except LlmlbError as exc:
            sink.done(None, exc)
            return
        if sink.claim_end():
            self.send([wire.Caps(command.id, caps)])

    def _generate(self, command: wire.Generate, sink: Sink) -> None:
        backend = self.backend
        stats = GenStats()
        if backend is None:
            sink.done(stats, LlmlbError("this runner holds no chat model"))
            return
        try:
            if command.messages is not None:
                with self._rendering(f"the chat template of '{backend.name}'"):
                    tokens, opens = backend.chat_tokens(
                        command.messages, command.opts, command.variables or {}
                    )
            else:
                tokens, opens = backend.prompt_tokens(command.prompt or ""), False
            if command.context is not None:
                tokens = backend.after(command.context, tokens)
            sampler = backend.sampler(command.opts)
        except LlmlbError as exc:
            sink.done(stats, exc)
            return
        if sink.cancelled.is_set():
            sampler.close()
            stats.finish_reason = "cancelled"
            sink.done(stats)
            return
        self.send([wire.Started(command.id, len(tokens), opens)])
        job = Job(tokens, command.opts, stats, sink, sampler)
        job.keep_tokens = command.context is not None
        backend.submit(job)

    def _vision(self, command: wire.Generate, sink: Sink) -> None:
        stats = GenStats()
        try:
            pieces = self.backend.vision_chat(command.messages, command.opts, sink.cancelled, stats)
            for piece in pieces:
                self.send([wire.Piece(command.id, piece.text, piece.logprobs)])
                if sink.cancelled.is_set():
                    break
            sink.done(stats)
        except ValueError as exc:  # llama-cpp-python's way to refuse a prompt
            sink.done(stats, BadRequest(str(exc)))
        except LlmlbError as exc:
            sink.done(stats, exc)
        except Exception as exc:
            log.exception("a chat with images failed")
            sink.done(stats, LlmlbError(f"generation failed: {exc}"))

    # -- embeddings (their own thread) -----------------------------------------------------
    def _embed_forever(self) -> None:
        from llmlb.engine.llama_embed import Cancelled

        while True:
            command = self._embeds.get()
            sink = self.sinks.get(command.id)
            if sink is None:
                continue
            if self.embedder is None:
                sink.done(None, LlmlbError("this runner holds no embedding model"))
                continue
            try:
                vectors, tokens = self.embedder.embed(
                    command.inputs, sink.cancelled, self._progress
                )
            except Cancelled:
                sink.done(None)
                continue
            except LlmlbError as exc:
                sink.done(None, exc)
                continue
            except Exception as exc:
                log.exception("embedding failed")
                sink.done(None, exc)
                continue
            if sink.claim_end():
                self.send([wire.Vectors(command.id, vectors, tokens)])


def _die_with_parent(parent: int) -> None:
    """The kernel ends us when the node dies, even by kill -9 (Linux); elsewhere the closed
    socket does, a moment later."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)


def main(argv: list[str]) -> None:
    fd, parent = int(argv[0]), int(argv[1])
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the node, which stops us
    channel = Channel(socket.socket(fileno=fd))
    root = logging.getLogger()
    root.handlers[:] = [ChannelLog(channel)]
    root.setLevel(logging.DEBUG if settings.debug() else logging.INFO)
    host = Host(channel)
    channel.send([wire.Ready(base_rss=rss_bytes())])  # up: the node may send its Load
    host.serve()
    os._exit(0)  # the node closed the socket: leave at once, freeing nothing by hand


if __name__ == "__main__":
    main(sys.argv[1:])
