"""The balancer's spread with equally fast nodes: a real router in front of fake streaming
backends (tests/support/fake_backend.py) registered as three nodes."""

import asyncio
import threading
import time
from collections import Counter

import httpx

from bench.router import MODEL, keep_registered, start_backends
from tests.support.procs import ServerProcess


def test_sixty_concurrent_streams_spread_evenly(tmp_path):
    ports, procs = start_backends(3)
    router = ServerProcess(tmp_path / "router", kind="router").start()
    stop = threading.Event()
    threading.Thread(target=keep_registered, args=(router.url, ports, stop), daemon=True).start()
    try:
        deadline = time.time() + 10
        while len(httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]) < 3 and time.time() < deadline:
            time.sleep(0.05)

        async def burst(n):
            async with httpx.AsyncClient(timeout=60) as client:
                async def one(i):
                    r = await client.post(router.url + "/v1/chat/completions", json={
                        "model": MODEL, "messages": [], "max_tokens": 8, "stream": True})
                    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
                    return r.headers["x-llmlb-node"]
                return Counter(await asyncio.gather(*(one(i) for i in range(n))))

        spread = asyncio.run(burst(60))
        assert len(spread) == 3 and max(spread.values()) <= 30, spread
        nodes = httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
        assert all(n["in_flight"] == 0 for n in nodes)  # every claim was released
    finally:
        stop.set()
        router.stop()
        for p in procs:
            p.terminate()
