"""Connections bounded where they are accepted: uvicorn's HTTP protocol with deadlines and a cap.

uvicorn closes a connection that idles between requests (its keep-alive timeout), but not one
that never finishes its headers or pauses inside its body: 5,000 such (slowloris) connections
stayed open on the router for as long as their clients liked. Here each connection gets:

- a deadline for a request's headers (`read_secs` from its first byte, or from the
  connection's start), and at most MAX_HEAD bytes of them (431 past that);
- at most `read_secs` of silence inside a body (unless the server itself stopped reading:
  that is the app being slow, not the client);
- at most `max_connections` open at once: one more is answered 503 and closed.

A request that misses a deadline is answered 408 (when no answer has started) and closed.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("llmlb.server")
MAX_HEAD = 64 * 1024  # request line and headers; browsers and clients send a few KB


def _answer(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded (see the module's docstring)."""

    read_secs = 10.0
    max_connections = 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._in_head, self._head_bytes = True, 0
        if len(self.connections) > self.max_connections:
            log.warning("refused a connection: %d are open", len(self.connections) - 1)
            self._refuse(503, "Service Unavailable", "too many open connections; try again")
            return
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.read_secs, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: int, reason: str, text: str) -> None:
        """Answer (unless an answer is on its way: it is not cut into) and close."""
        self._disarm()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        # in the headers, the request before (if any) must be answered; in the body, this one
        # must not have begun its answer
        free = (
            (cycle is None or cycle.response_complete)
            if self._in_head
            else not cycle.response_started
        )
        if free:
            self.transport.write(_answer(status, reason, text))
        self.transport.close()

    def _expired(self) -> None:
        self._timer = None
        if not self._in_head and self.flow.read_paused:
            self._arm()  # the app is not reading the body yet: the client is not to blame
            return
        part = "headers" if self._in_head else "body"
        self._refuse(408, "Request Timeout", f"request {part} not received in time")

    def data_received(self, data: bytes) -> None:
        if self._in_head:  # counted up to the blank line: a body may come in the same read
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > MAX_HEAD:
                self._refuse(431, "Request Header Fields Too Large", "request headers too large")
                return
        elif self._timer is not None:
            self._arm()  # body bytes came: the silence starts again
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._timer is None:  # a later request on a kept-alive connection
            self._head_bytes = 0
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm()  # now: silence inside the body
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def guarded(read_secs: float, max_connections: int) -> type[GuardedHttp]:
    """The protocol class uvicorn is given, with this server's limits."""
    return type(
        "GuardedHttp",
        (GuardedHttp,),
        {"read_secs": read_secs, "max_connections": max_connections},
    )
