"""A tiny OpenAI-compatible streaming server for load tests: fixed TTFT and token rate.

Plain asyncio and hand-written HTTP/1.1 so that the backend itself costs next to nothing.
Run: python -m tests.support.fake_backend PORT [--ttft-ms 20] [--tokens 32] [--tps 200] [--status 500]
(--status answers every POST with that HTTP status: a failing node.)
"""

from __future__ import annotations

import argparse
import asyncio
import json


async def handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ttft: float,
    tokens: int,
    gap: float,
    status: int,
) -> None:
    try:
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
                payload = (
                    b"ok"
                    if path == "/"
                    else json.dumps(
                        {
                            "object": "list",
                            "data": [{"id": "fake/model", "object": "model"}],
                            "models": [],
                        }
                    ).encode()
                )
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(payload)).encode()
                    + b"\r\n\r\n"
                    + payload
                )
                await writer.drain()
                continue
            if status != 200:
                payload = b'{"error":"failing on purpose"}'
                writer.write(
                    b"HTTP/1.1 %d Failing\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (status, len(payload), payload)
                )
                await writer.drain()
                continue
            req = json.loads(body or b"{}")
            n = int(req.get("max_tokens") or tokens)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            # Tokens go out on a fixed schedule from the request's arrival, not after a sleep each:
            # sleeps overshoot a little under load, and summed over a stream that drift would be
            # noise in every latency measured through this backend.
            loop = asyncio.get_running_loop()
            start = loop.time()

            async def until(offset: float, start: float = start, loop=loop) -> None:
                delay = start + offset - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)

            for i in range(n):
                await until(ttft + i * gap)
                event = b'data: {"choices":[{"index":0,"delta":{"content":"tok "}}]}\n\n'
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
            await until(ttft + n * gap)
            tail = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int, ttft_ms: float, tokens: int, tps: float, status: int = 200) -> None:
    gap = 1.0 / tps if tps else 0.0
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, ttft_ms / 1000, tokens, gap, status),
        "127.0.0.1",
        port,
        backlog=1024,
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
    a = ap.parse_args()
    asyncio.run(serve(a.port, a.ttft_ms, a.tokens, a.tps, a.status))


if __name__ == "__main__":
    main()
