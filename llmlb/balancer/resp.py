"""One pipelined connection to Redis, for the two script calls on a proxied request's path.

redis-py's asyncio client takes a connection from its pool (or the lock on its single one) for
each command and waits for the answer before it hands the connection on: requests that start
together, as streams do, then queue behind each other's round trips, which cost about 3 ms a
request at 16 streams on two cores. Here each command is written as soon as it is made and
the answers, which Redis sends in order on one connection, are matched to their callers in
order: a burst of claims costs about one round trip. Everything else (leases, the release
channel, pings) uses redis-py, which also reads the URL for this connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import Any


class ReplyError(Exception):
    """Redis answered the command with an error."""


def encode(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def read_reply(reader: asyncio.StreamReader) -> Any:
    """One RESP2 reply; an error reply is returned (not raised) as a ReplyError."""
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b":":
        return int(rest)
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [await read_reply(reader) for _ in range(count)]
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return ReplyError(rest.decode(errors="replace"))
    raise ConnectionError(f"not a Redis reply: {line[:40]!r}")


class _Connection:
    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.waiting: deque[asyncio.Future] = deque()  # answers due, in the order sent

    def fail(self, exc: BaseException) -> None:
        self.writer.close()
        while self.waiting:
            answer = self.waiting.popleft()
            if not answer.done():
                answer.set_exception(exc)


class Pipe:
    """Commands on one connection, answers matched in order; reconnects on the next call after
    a failure. A call that gets no answer within `timeout` fails, and so does the connection
    (the answers behind it could no longer be trusted to be in step)."""

    def __init__(self, url: str, timeout: float):
        from redis.asyncio.connection import SSLConnection, parse_url

        opts = parse_url(url)
        self.path: str | None = opts.get("path")
        self.host: str = opts.get("host") or "localhost"
        self.port = int(opts.get("port") or 6379)
        self.tls = opts.get("connection_class") is SSLConnection
        self.db = int(opts.get("db") or 0)
        self.username: str | None = opts.get("username")
        self.password: str | None = opts.get("password")
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._readers: set[asyncio.Task] = set()
        self._connecting = asyncio.Lock()
        self._shas: dict[str, str] = {}

    async def call(self, *args: Any) -> Any:
        conn = self._conn
        if conn is None or conn.writer.is_closing():
            async with self._connecting:
                if self._conn is None or self._conn.writer.is_closing():
                    self._conn = await self._connect()
            conn = self._conn
        return await self._send(conn, args)

    async def evalsha(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script by its digest; the first time on a server, by its text."""
        sha = self._shas.get(script) or self._shas.setdefault(
            script, hashlib.sha1(script.encode()).hexdigest()
        )
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.call("EVAL", script, len(keys), *keys, *args)  # caches it too

    async def _connect(self) -> _Connection:
        if self.path:
            opening = asyncio.open_unix_connection(self.path)
        else:
            context = ssl.create_default_context() if self.tls else None
            opening = asyncio.open_connection(self.host, self.port, ssl=context)
        reader, writer = await asyncio.wait_for(opening, self.timeout)
        conn = _Connection(writer)
        task = asyncio.create_task(self._read_forever(reader, conn))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)
        if self.password is not None:
            auth = (self.username, self.password) if self.username else (self.password,)
            await self._send(conn, ("AUTH", *auth))
        if self.db:
            await self._send(conn, ("SELECT", self.db))
        return conn

    async def _send(self, conn: _Connection, args: tuple[Any, ...]) -> Any:
        if conn.writer.is_closing():
            raise ConnectionError("the connection to Redis is closed")
        answer = asyncio.get_running_loop().create_future()
        conn.waiting.append(answer)
        conn.writer.write(encode(args))
        try:
            reply = await asyncio.wait_for(answer, self.timeout)
        except TimeoutError:
            conn.fail(TimeoutError("Redis did not answer in time"))
            raise
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def _read_forever(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        try:
            while True:
                reply = await read_reply(reader)
                answer = conn.waiting.popleft()
                if not answer.done():
                    answer.set_result(reply)
        except (OSError, EOFError, IndexError, ValueError, asyncio.IncompleteReadError) as exc:
            conn.fail(ConnectionError(f"the connection to Redis failed: {exc!r}"))

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.fail(ConnectionError("closed"))
            self._conn = None
        for task in list(self._readers):
            task.cancel()
        if self._readers:
            await asyncio.gather(*self._readers, return_exceptions=True)
