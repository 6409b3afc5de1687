"""The meeting point of a request and the engine: a queue of pieces and a cancel flag.

The engine side (a runner's reader on the event loop: push/end; or any thread: put/finish)
puts pieces and finally one end mark; the request reads them on the event loop. Neither side
ever touches the other's state: the engine never sees the HTTP request, the handler never
sees llama.cpp.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from llmlb.engine.base import Cancellable, Piece
from llmlb.errors import LlmlbError

_END = object()


class Stream(Cancellable):
    """Created on the event loop; fed from any thread (put/finish); read with `async for`."""

    def __init__(self) -> None:
        super().__init__()  # on_cancel: the engine's hook, to stop work in flight
        self.loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._done: asyncio.Future = self.loop.create_future()
        self._finished = False
        self._lock = threading.Lock()

    # -- the engine's side, on the event loop -----------------------------------
    def push(self, piece: Piece) -> None:
        self._queue.put_nowait(piece)

    def end(self, error: BaseException | None = None) -> None:
        """The last call: the engine has let go of the request. Later calls are ignored."""
        if self._claim_end():
            self._end(error)

    def abort(self, error: BaseException) -> None:
        """The reader gets `error` now (whatever the engine says later is dropped), and the
        engine is told to stop."""
        self.end(error)
        self.cancel()

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
