"""A tiny OpenAI-compatible streaming server for load tests: fixed TTFT and token rate.

Plain asyncio and hand-written HTTP/1.1 so that the backend itself costs next to nothing.
Run: python -m tests.support.fake_backend PORT [--ttft-ms 20] [--tokens 32] [--tps 200] [--status 500]
(--status answers every POST with that HTTP status: a failing node.)

Misbehaving nodes, for the router's tests: `--drop` reads each POST and closes the connection
without a word; `--silent` accepts connections and never answers anything, not even `/`;
`--listing FILE` answers GET /api/tags and /api/ps with the file's bytes; `--answer-bytes N`
answers a non-streamed POST with N bytes of JSON, the first half at once and the rest after
a GET /release; `--claim-length N` answers headers that promise N bytes and sends none.
GET /seen says how many POSTs arrived (`{"posts": n}`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Behaviour:
    ttft: float = 0.02
    tokens: int = 32
    gap: float = 0.005
    status: int = 200
    drop: bool = False
    silent: bool = False
    listing: bytes | None = None
    answer_bytes: int = 0
    claim_length: int = 0
    posts: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)


def _plain(status: int, payload: bytes, ctype: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %d Fake\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        ctype,
        len(payload),
        payload,
    )


def _get(path: str, how: Behaviour) -> bytes:
    if path == "/":
        return _plain(200, b"ok", b"text/plain")
    if path == "/seen":
        return _plain(200, json.dumps({"posts": how.posts}).encode())
    if path == "/release":
        how.released.set()
        return _plain(200, b"{}")
    if how.listing is not None and path in ("/api/tags", "/api/ps"):
        return _plain(200, how.listing)
    listing = {"object": "list", "data": [{"id": "fake/model", "object": "model"}], "models": []}
    return _plain(200, json.dumps(listing).encode())


async def _answer_bytes(writer: asyncio.StreamWriter, how: Behaviour) -> None:
    """A non-streamed answer of how.answer_bytes bytes: half now, the rest once released."""
    n = how.answer_bytes
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % n
    )
    filler = n - len(b'{"x":""}')
    body = b'{"x":"' + b"a" * filler + b'"}'
    writer.write(body[: n // 2])
    await writer.drain()
    await how.released.wait()
    for at in range(n // 2, n, 1 << 20):
        writer.write(body[at : at + (1 << 20)])
        await writer.drain()


async def _stream(writer: asyncio.StreamWriter, body: bytes, how: Behaviour) -> None:
    req = json.loads(body or b"{}")
    n = int(req.get("max_tokens") or how.tokens)
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    # Tokens go out on a fixed schedule from the request's arrival, not after a sleep each:
    # sleeps overshoot a little under load, and summed over a stream that drift would be
    # noise in every latency measured through this backend.
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def until(offset: float) -> None:
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    for i in range(n):
        await until(how.ttft + i * how.gap)
        event = b'data: {"choices":[{"index":0,"delta":{"content":"tok "}}]}\n\n'
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
    await until(how.ttft + n * how.gap)
    tail = b"data: [DONE]\n\n"
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
    await writer.drain()


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, how: Behaviour
) -> None:
    try:
        if how.silent:  # takes the connection, reads what comes, answers nothing ever
            while await reader.read(65536):
                pass
            return
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            if method == "GET":
                writer.write(_get(path, how))
                await writer.drain()
                continue
            how.posts += 1
            if how.drop:
                return
            if how.status != 200:
                writer.write(_plain(how.status, b'{"error":"failing on purpose"}'))
                await writer.drain()
                continue
            if how.claim_length:
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n" % how.claim_length
                )
                await writer.drain()
                await asyncio.Event().wait()  # and never a byte of it
            if how.answer_bytes and not json.loads(body or b"{}").get("stream", True):
                await _answer_bytes(writer, how)
                continue
            await _stream(writer, body, how)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int, how: Behaviour) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, how), "127.0.0.1", port, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--ttft-ms", type=float, default=20)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--tps", type=float, default=200)
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--drop", action="store_true")
    ap.add_argument("--silent", action="store_true")
    ap.add_argument("--listing", type=Path)
    ap.add_argument("--answer-bytes", type=int, default=0)
    ap.add_argument("--claim-length", type=int, default=0)
    a = ap.parse_args()

    async def run() -> None:  # the Event belongs to the loop that serves
        how = Behaviour(
            ttft=a.ttft_ms / 1000,
            tokens=a.tokens,
            gap=1.0 / a.tps if a.tps else 0.0,
            status=a.status,
            drop=a.drop,
            silent=a.silent,
            listing=a.listing.read_bytes() if a.listing else None,
            answer_bytes=a.answer_bytes,
            claim_length=a.claim_length,
        )
        await serve(a.port, how)

    asyncio.run(run())


if __name__ == "__main__":
    main()
