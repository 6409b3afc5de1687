"""The pipelined Redis connection of the claims' hot path (balancer/resp.py), on a real Redis:
answers reach their callers in order, the database of the URL is used, scripts load
themselves, errors are errors, and a lost server is a ConnectionError, then a reconnect."""

from __future__ import annotations

import asyncio

import pytest

from llmlb.balancer.resp import Pipe, ReplyError
from tests.support.services import new_redis


def test_a_burst_of_commands_gets_each_its_own_answer(redis_url, redis_service):
    async def scenario() -> None:
        pipe = Pipe(redis_url.rsplit("/", 1)[0] + "/2", timeout=5)
        try:
            answers = await asyncio.gather(*(pipe.call("ECHO", f"m{i}") for i in range(200)))
            assert answers == [f"m{i}".encode() for i in range(200)]
            assert await pipe.call("SET", "k", "in-db-2") == "OK"
            with pytest.raises(ReplyError, match="WRONGTYPE"):
                await pipe.call("LPUSH", "k", "x")
            script = "return {tonumber(ARGV[1]) + 1, KEYS[1]}"
            assert await pipe.evalsha(script, ["key"], [41]) == [42, b"key"]  # NOSCRIPT, then EVAL
            assert await pipe.evalsha(script, ["key"], [1]) == [2, b"key"]  # cached now
        finally:
            await pipe.close()

    asyncio.run(scenario())
    client = redis_service.client()
    client.select(2)
    assert client.get("k") == b"in-db-2"


def test_a_lost_server_fails_the_call_and_the_next_call_reconnects():
    server = new_redis()
    server.start()

    async def scenario() -> None:
        pipe = Pipe(server.url, timeout=2)
        try:
            assert await pipe.call("PING") == "PONG"
            server.stop()
            with pytest.raises((ConnectionError, OSError, TimeoutError)):
                await pipe.call("PING")
            server.start()
            assert await pipe.call("PING") == "PONG"
        finally:
            await pipe.close()

    try:
        asyncio.run(scenario())
    finally:
        server.close()
