"""The node's side of a runner process: start it, talk to it, watch it, end it.

Each loaded model lives in its own process (engine/runner_main.py), as ollama runs its runners
and vLLM its engine core: llama.cpp aborts on bad input and cannot be interrupted, and a chat
template is a program. Here a runner that dies fails only its own requests, each with a clear
error (`model 'x' stopped unexpectedly (SIGABRT): <its last words>`); one that falls silent
while it has work for LLMLB_STALL_SECS is ended the same way. The node never waits on a
runner without a way out: every wait ends when the process does.

The channel is a Unix socket pair: the child inherits one end (pass_fds) and dies with the
node (PR_SET_PDEATHSIG, and EOF on the socket). Its stdout and stderr are native output only
(log records travel on the socket), so their last line is what a crash said.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import fields
from enum import StrEnum
from typing import Any

import msgspec

from llmlb import prefix, settings
from llmlb.engine import model_defaults, wire
from llmlb.engine.base import Crashed, GenOptions, GenStats, Piece, TemplateCaps
from llmlb.engine.generation import Stream
from llmlb.engine.holdings import Holdings
from llmlb.errors import LlmlbError, Unavailable, from_status
from llmlb.store.models import Model

log = logging.getLogger("llmlb.runner")
STOP_SECS = 2.0  # a runner asked to leave (socket closed) gets this long, then SIGTERM
TERM_SECS = 1.0  # and this long after SIGTERM, then SIGKILL
SAVE_SECS = 3.0  # ... and this long more while it saves its prompt cache (wire.Shutdown)
WATCH_EVERY = 0.5
TAIL_LINES = 40
# a native source path in an abort message, shortened to the file: `llama-model.cpp:1420`
_SOURCE_PATH = re.compile(r"(?<![\w.])/\S*/([\w.-]+\.(?:c|cc|cpp|cu|h|hpp):\d+)")


class RunnerState(StrEnum):
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    STOPPING = "stopping"
    EXITED = "exited"


def _signal_name(returncode: int | None) -> str:
    if returncode is None:
        return "unknown"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class Runner:
    """One runner process. `label` names it in errors (the model's name)."""

    def __init__(
        self,
        label: str,
        proc: asyncio.subprocess.Process,
        reader,
        writer,
        holdings: Holdings | None = None,
    ):
        self.label = label
        self.holdings = holdings  # what its prompt cache holds, for the router
        self.proc = proc
        self.pid = proc.pid
        self._reader: asyncio.StreamReader = reader
        self._writer: asyncio.StreamWriter = writer
        self.state = RunnerState.STARTING
        self.stall_secs = settings.stall_secs()
        self.heard = time.monotonic()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._ids = itertools.count(1)
        self._streams: dict[int, tuple[Stream, GenStats]] = {}
        self._calls: dict[int, asyncio.Future] = {}
        self._waiter: asyncio.Future | None = None  # a Ready (or LoadFailed) awaited
        self._stalled = False
        self._eof = False  # our end is shut for writing (stop)
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[str | None] = loop.create_future()  # crash reason
        self._tasks = [
            asyncio.create_task(self._read(), name=f"runner {label}"),
            asyncio.create_task(self._output(), name=f"runner {label} output"),
            asyncio.create_task(self._watch(), name=f"runner {label} watch"),
        ]

    # -- life ------------------------------------------------------------------------------
    @classmethod
    async def start(cls, label: str, holdings: Holdings | None = None) -> Runner:
        """A runner process, up and waiting for its model (or for template probes)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {**os.environ, "GGML_NO_BACKTRACE": "1"}  # no gdb attach on an abort
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "llmlb.engine.runner_main",
                str(theirs.fileno()),
                str(os.getpid()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                # signals to the node's process group (a terminal's Ctrl+C, a service
                # manager's SIGTERM) are the node's to handle: it stops its runners itself
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
        runner = cls(label, proc, reader, writer, holdings)
        try:
            await runner._await_ready()
        except BaseException:
            await runner.kill()
            raise
        runner.state = RunnerState.READY
        return runner

    async def load(self, model: Model, kind: str, n_ctx: int, parallel: int) -> wire.Ready:
        """Load `model` in this runner; a failure is `model 'x' failed to load: <why>`, in
        llama.cpp's words or the runner's last ones (Crashed when it died of it)."""
        self.state = RunnerState.LOADING
        self._send(wire.Load(model.model_dump(mode="json"), kind, n_ctx, parallel))
        try:
            ready = await self._await_ready()
        except Crashed as exc:
            raise Crashed(f"model '{self.label}' failed to load {exc.message}") from None
        except LlmlbError as exc:
            raise type(exc)(f"model '{self.label}' failed to load: {exc.message}") from None
        self.state = RunnerState.READY
        return ready

    async def _await_ready(self) -> wire.Ready:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            done, _ = await asyncio.wait(
                {self._waiter, self.exited}, return_when=asyncio.FIRST_COMPLETED
            )
            if self._waiter in done:
                return self._waiter.result()
            raise Crashed(self._last_words())
        finally:
            self._waiter = None

    async def stop(self) -> None:
        """Ask the runner to leave: a loaded model saves its prompt cache first (the runner
        says so at once, and then has SAVE_SECS more), then the socket's end; then insist:
        SIGTERM, SIGKILL. A runner that says nothing gets STOP_SECS, as before."""
        if self.state is RunnerState.EXITED:
            return
        asked = time.monotonic()
        saving = self.state is RunnerState.READY
        self.state = RunnerState.STOPPING
        if saving:
            self._send(wire.Shutdown(SAVE_SECS))
        self._eof = True
        if self._writer.can_write_eof():
            self._writer.write_eof()  # (its last events still come in)
        else:
            self._writer.close()
        if await self._exits_within(STOP_SECS):
            return
        if saving and self.heard >= asked and await self._exits_within(SAVE_SECS):
            return
        for then in (self.proc.terminate, self.proc.kill):
            with contextlib.suppress(ProcessLookupError):
                then()
            if await self._exits_within(TERM_SECS):
                return
        await asyncio.shield(self.exited)

    async def _exits_within(self, secs: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), secs)
            return True
        except TimeoutError:
            return False

    async def kill(self) -> None:
        """End it now (its requests fail as if it had been stopped)."""
        if self.state is not RunnerState.EXITED:
            self.state = RunnerState.STOPPING
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await asyncio.shield(self.exited)

    @property
    def alive(self) -> bool:
        return self.state not in (RunnerState.STOPPING, RunnerState.EXITED)

    @property
    def busy(self) -> bool:
        return bool(self._streams or self._calls or self._waiter)

    # -- requests --------------------------------------------------------------------------
    def generate(
        self,
        opts: GenOptions,
        stats: GenStats,
        messages: list[dict[str, Any]] | None = None,
        variables: dict[str, Any] | None = None,
        prompt: str | None = None,
        context: list[int] | None = None,
    ) -> Stream:
        stream = Stream()
        if not self.alive:
            stream.end(self._gone_error())
            return stream
        id = next(self._ids)
        self._streams[id] = (stream, stats)
        stream.on_cancel = lambda: self._send(wire.Cancel(id))
        self._send(wire.Generate(id, opts, messages, variables, prompt, context))
        return stream

    async def embed(self, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
        result = await self._call(lambda id: wire.Embed(id, inputs))
        if result is None:
            raise Unavailable(f"model '{self.label}' stopped the request")
        return result.vectors, result.tokens

    async def probe(self, name: str, source: str) -> TemplateCaps:
        result = await self._call(lambda id: wire.Probe(id, name, source))
        return result.caps

    async def _call(self, command) -> Any:
        if not self.alive:
            raise self._gone_error()
        id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._calls[id] = future
        self._send(command(id))
        try:
            return await future
        except asyncio.CancelledError:  # (which cancelled the future too)
            self._send(wire.Cancel(id))  # the runner stops at its next chance
            raise
        finally:
            self._calls.pop(id, None)

    def _send(self, command: msgspec.Struct) -> None:
        if not self._writer.is_closing() and not self._eof:
            self._writer.write(wire.frame(command))

    # -- what the runner says --------------------------------------------------------------
    async def _read(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(wire.HEADER.size)
                data = await self._reader.readexactly(wire.frame_size(header))
                self.heard = time.monotonic()
                for event in wire.reply_decoder.decode(data).items:
                    self._dispatch(event)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the process ended (or closed its end): _ended says why
        except (ValueError, msgspec.DecodeError) as exc:  # a broken frame: it cannot go on
            log.error("runner of %s sent a broken frame (%s); ending it", self.label, exc)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        finally:
            await self._ended()

    def _dispatch(self, event: wire.Event) -> None:
        if isinstance(event, wire.Piece):
            entry = self._streams.get(event.id)
            if entry is not None:
                entry[0].push(Piece(event.text, event.logprobs))
        elif isinstance(event, wire.Started):
            entry = self._streams.get(event.id)
            if entry is not None:
                entry[1].prompt_tokens = event.prompt_tokens
                entry[1].opens_thinking = event.opens_thinking
        elif isinstance(event, wire.Done):
            self._done(event)
        elif isinstance(event, wire.Vectors | wire.Caps):
            future = self._calls.get(event.id)
            if future is not None and not future.done():
                future.set_result(event)
        elif isinstance(event, wire.Log):
            logging.getLogger(event.name).log(event.level, "%s", event.message)
        elif isinstance(event, wire.Holds):
            if self.holdings is not None:
                self.holdings.apply(self.pid, event)
        elif isinstance(event, wire.Ready | wire.LoadFailed):
            waiter = self._waiter
            if waiter is None or waiter.done():
                return
            if isinstance(event, wire.Ready):
                waiter.set_result(event)
            else:
                waiter.set_exception(LlmlbError(event.reason))

    def _done(self, event: wire.Done) -> None:
        error = from_status(event.error.status, event.error.message) if event.error else None
        entry = self._streams.pop(event.id, None)
        if entry is not None:
            stream, stats = entry
            if event.stats is not None:
                for f in fields(GenStats):
                    if f.name != "opens_thinking":
                        setattr(stats, f.name, getattr(event.stats, f.name))
            stream.end(error)
            return
        future = self._calls.get(event.id)
        if future is not None and not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(None)  # stopped (cancelled) without a result

    async def _output(self) -> None:
        """The runner's stdout and stderr: native output, kept for the words of a crash."""
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            text = _SOURCE_PATH.sub(r"\1", line.decode("utf-8", "replace").rstrip())
            if text:
                self.tail.append(text)
                log.warning("runner of %s: %s", self.label, text)

    async def _watch(self) -> None:
        """A runner with work that says nothing for LLMLB_STALL_SECS is stuck: end it."""
        while self.state is not RunnerState.EXITED:
            await asyncio.sleep(WATCH_EVERY)
            quiet = time.monotonic() - self.heard
            if self.busy and quiet > self.stall_secs and not self._stalled:
                self._stalled = True
                log.error(
                    "runner of %s has said nothing for %.0f s with work in hand; ending it",
                    self.label,
                    quiet,
                )
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()

    # -- the end ---------------------------------------------------------------------------
    async def _ended(self) -> None:
        """The socket closed: wait for the process, then fail whatever it still had."""
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_SECS + TERM_SECS)
        except TimeoutError:  # it closed the socket but lingers: it is no use to anyone
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._tasks[1], 1.0)  # its last words
        requested = self.state is RunnerState.STOPPING and not self._stalled
        self.state = RunnerState.EXITED
        if self.holdings is not None:
            self.holdings.forget_runner(self.pid)
        self._writer.close()
        crash = None if requested else self._death_words()
        error = self._gone_error(crash)
        for stream, _ in self._streams.values():
            stream.end(error)
        self._streams.clear()
        for future in self._calls.values():
            if not future.done():
                future.set_exception(error)
        if crash is not None:
            log.error("%s", crash)
        if not self.exited.done():
            self.exited.set_result(crash)
        self._tasks[2].cancel()

    def _last_words(self) -> str:
        """`(SIGABRT): <the last line it wrote>`, or why we ended it."""
        if self._stalled:
            return (
                f"(stalled): its runner said nothing for {self.stall_secs:g} s "
                "(LLMLB_STALL_SECS) and was ended"
            )
        last = self.tail[-1] if self.tail else ""
        return f"({_signal_name(self.proc.returncode)})" + (f": {last}" if last else "")

    def _death_words(self) -> str:
        return f"model '{self.label}' stopped unexpectedly {self._last_words()}"

    def _gone_error(self, crash: str | None = None) -> LlmlbError:
        if crash is not None:
            return Crashed(crash)
        return Unavailable(f"model '{self.label}' was unloaded")


class RunnerBackend:
    """A model loaded in a runner: what the scheduler and the handlers see (engine.base's
    Backend)."""

    def __init__(self, runner: Runner, ready: wire.Ready, model: Model, kind: str):
        self.runner = runner
        self.model = model
        self.name = model.name
        self.kind = kind
        self.n_ctx = ready.n_ctx
        self.parallel = ready.parallel
        self.processor = ready.processor
        self.gpu = ready.gpu
        self.has_chat_template = ready.has_template
        self.supports_images = ready.supports_images
        self.size_bytes = ready.size_bytes + ready.base_rss  # the process counts too
        self.base_rss = ready.base_rss

    @property
    def pid(self) -> int:
        return self.runner.pid

    @property
    def exited(self) -> asyncio.Future[str | None]:
        return self.runner.exited

    def chat(
        self,
        messages: list[dict[str, Any]],
        opts: GenOptions,
        stats: GenStats,
        variables: dict[str, Any] | None = None,
        context: list[int] | None = None,
    ) -> Stream:
        model_defaults.apply(self.model, opts)  # its Modelfile's PARAMETERs, where not set
        return self.runner.generate(
            opts, stats, messages=messages, variables=variables, context=context
        )

    def complete(
        self, prompt: str, opts: GenOptions, stats: GenStats, context: list[int] | None = None
    ) -> Stream:
        model_defaults.apply(self.model, opts)
        if not opts.prefix:  # (a chat sent as a raw prompt keeps its messages' chain)
            opts.prefix = [p.hash for p in prefix.prompt_chain(self.name, prompt)]
        return self.runner.generate(opts, stats, prompt=prompt, context=context)

    async def embed(self, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
        return await self.runner.embed(inputs)

    async def close(self) -> None:
        await self.runner.stop()


async def load(
    model: Model,
    n_ctx: int,
    embedding: bool,
    parallel: int,
    holdings: Holdings | None = None,
) -> RunnerBackend:
    """The scheduler's loader: `model` in a runner of its own."""
    runner = await Runner.start(model.name, holdings)
    kind = "embed" if embedding else "chat"
    try:
        ready = await runner.load(model, kind, n_ctx, parallel)
    except BaseException:
        await runner.stop()
        raise
    return RunnerBackend(runner, ready, model, kind)
