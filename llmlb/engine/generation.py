"""The meeting point of a request and the engine: a queue of pieces and a cancel flag.

The engine (a decode loop thread, or a worker thread for the vision path) puts pieces and
finally one end mark; the request reads them on the event loop. Neither side ever touches
the other's state: the engine never sees the HTTP request, the handler never sees llama.cpp.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from llmlb.engine.base import Piece
from llmlb.errors import LlmlbError

_END = object()


class Stream:
    """Created on the event loop; fed from any thread (put/finish); read with `async for`."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._done: asyncio.Future = self.loop.create_future()
        self._finished = False
        self._lock = threading.Lock()
        self.cancelled = threading.Event()
        self.on_cancel: Callable[[], None] | None = None  # the engine's hook: stop work in flight

    # -- the engine's side (any thread) ----------------------------------------
    def put(self, piece: Piece) -> None:
        with contextlib.suppress(RuntimeError):  # a closed event loop: nobody listens any more
            self.loop.call_soon_threadsafe(self._queue.put_nowait, piece)

    def finish(self, error: BaseException | None = None) -> None:
        """The last call: the engine has let go of the request. Later calls are ignored."""
        if self._claim_end():
            with contextlib.suppress(RuntimeError):  # a closed event loop: nobody listens
                self.loop.call_soon_threadsafe(self._end, error)

    def _claim_end(self) -> bool:
        with self._lock:
            if self._finished:
                return False
            self._finished = True
            return True

    def _end(self, error: BaseException | None) -> None:
        self._queue.put_nowait(error if error is not None else _END)
        if not self._done.done():
            self._done.set_result(None)

    # -- the request's side (the event loop) -----------------------------------
    @property
    def done(self) -> asyncio.Future:
        return self._done

    def cancel(self) -> None:
        if not self.cancelled.is_set():
            self.cancelled.set()
            hook = self.on_cancel
            if hook is not None:
                hook()

    async def __aiter__(self) -> AsyncIterator[Piece]:
        while True:
            item = await self._queue.get()
            # a reader that fell behind takes the backlog as one piece: fewer writes
            while isinstance(item, Piece) and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if not isinstance(nxt, Piece):
                    self._queue.put_nowait(nxt)  # the end or an error: after this piece
                    break
                item = item + nxt
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class Outbox:
    """What one decode step produced for all its requests, handed to the event loop in one
    call (one wake-up per step, not one per request and token). Used by one thread."""

    def __init__(self) -> None:
        self._items: list[tuple[Stream, object]] = []

    def put(self, stream: Stream, piece: Piece) -> None:
        self._items.append((stream, piece))

    def finish(self, stream: Stream, error: BaseException | None = None) -> None:
        if stream._claim_end():
            self._items.append((stream, error if error is not None else _END))

    def flush(self) -> None:
        if not self._items:
            return
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Stream, object]]] = {}
        for stream, item in items:
            by_loop.setdefault(stream.loop, []).append((stream, item))
        for loop, batch in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed event loop: nobody listens
                loop.call_soon_threadsafe(_deliver, batch)


def _deliver(batch: list[tuple[Stream, object]]) -> None:
    for stream, item in batch:
        if isinstance(item, Piece):
            stream._queue.put_nowait(item)
        else:
            stream._end(None if item is _END else item)  # type: ignore[arg-type]


def run_in_thread(
    stream: Stream,
    produce: Callable[[threading.Event], Iterator[Piece]],
) -> Stream:
    """Feed `stream` from a blocking iterator run in a worker thread (the vision path)."""

    def work() -> None:
        try:
            for piece in produce(stream.cancelled):
                stream.put(piece)
                if stream.cancelled.is_set():
                    break
            stream.finish()
        except LlmlbError as exc:
            stream.finish(exc)
        except Exception as exc:  # surfaces in the reader
            stream.finish(LlmlbError(f"generation failed: {exc}"))

    stream.loop.run_in_executor(None, work)
    return stream
