"""Inside a runner: where a request's output goes, and how it leaves the process.

A Sink is one request as the engine sees it: an id, a cancel flag, and an end that happens
once. An Outbox gathers what one decode step produced for all its requests and sends it as
one frame; other threads (prompt preparation, embeddings, the vision path) send their few
events at once through the same channel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from llmlb.engine import wire
from llmlb.engine.base import Cancellable, GenStats, Piece
from llmlb.errors import LlmlbError

Send = Callable[[list[wire.Event]], None]


def error_info(error: BaseException | None) -> wire.ErrorInfo | None:
    if error is None:
        return None
    if isinstance(error, LlmlbError):
        return wire.ErrorInfo(error.status, error.message)
    return wire.ErrorInfo(500, f"the engine failed: {error!r}")


class Sink(Cancellable):
    def __init__(self, id: int, send: Send, on_end: Callable[[int], None] | None = None):
        super().__init__()  # on_cancel: the decode loop's
        self.id = id
        self.send = send
        self._on_end = on_end
        self._ended = False
        self._lock = threading.Lock()

    def claim_end(self) -> bool:
        """True once: the caller sends this request's Done."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
        if self._on_end is not None:
            self._on_end(self.id)
        return True

    def done(self, stats: GenStats | None = None, error: BaseException | None = None) -> None:
        """End the request now (off the decode loop)."""
        if self.claim_end():
            self.send([wire.Done(self.id, stats, error_info(error))])


class Outbox:
    """One decode step's events, sent in one frame. Used by the decode loop's thread only,
    except `now`."""

    def __init__(self, send: Send):
        self._send = send
        self._items: list[wire.Event] = []

    def put(self, sink: Sink, piece: Piece) -> None:
        self._items.append(wire.Piece(sink.id, piece.text, piece.logprobs))

    def note(self, event: wire.Event) -> None:
        """An event of the step that belongs to no request (what the cache holds)."""
        self._items.append(event)

    def now(self, items: list[wire.Event]) -> None:
        """Send at once, from any thread (the channel's send takes a lock)."""
        self._send(items)

    def finish(self, sink: Sink, stats: GenStats, error: BaseException | None = None) -> None:
        if sink.claim_end():
            self._items.append(wire.Done(sink.id, stats, error_info(error)))

    def flush(self, alive: bool = False) -> None:
        """Send what the step produced; with nothing to send, `alive` sends a Progress (a
        prompt chunk was decoded: the node's stall watch must hear from us)."""
        if self._items:
            items, self._items = self._items, []
            self._send(items)
        elif alive:
            self._send([wire.Progress()])
