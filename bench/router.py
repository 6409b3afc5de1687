"""The router's cost: fake streaming backends hit directly, through llmlb's router, and
through LiteLLM's proxy, at 1, 16 and 128 concurrent streams.

Backends: tests/support/fake_backend.py (20 ms to first token, 32 tokens at 200 tokens/s).
Targets: added latency under 2 ms p50 and 10 ms p99 at 16 streams; throughput at least 2x
LiteLLM's. LiteLLM runs from its own venv if present: python3 -m venv /tmp/litellm-venv &&
/tmp/litellm-venv/bin/pip install 'litellm[proxy]'   (or pass --litellm PATH, or --no-litellm).
Run: .venv/bin/python bench/router.py

Cluster mode (issue 18): `--database postgres` adds a router whose state is in a real PostgreSQL
(tests/support/postgres.py), measured in the same run as the SQLite router (target: added
latency at 16 streams within 1 ms of it); `--redis` one more on PostgreSQL with its claims in
Redis. `--baseline PATH` adds a router run from another checkout (e.g. main), to compare the
default path with it in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fake_cluster import MODEL, keep_registered, start_backends  # noqa: E402
from tests.support.procs import ServerProcess, free_port  # noqa: E402

KEY = "sk-llmlb-bench-7f3c9a1e5b2d4c6a8e0f1a2b3c4d5e6f"  # LiteLLM refuses to start without a master key
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "max_tokens": 32,
}


def start_litellm(exe: str, ports: list[int], tmp: Path) -> tuple[subprocess.Popen, str] | None:
    port = free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        + "".join(
            f"  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
            f"      api_base: http://127.0.0.1:{p}/v1\n      api_key: none\n"
            for p in ports
        )
        + "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
    )
    with open(tmp / "litellm.log", "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [exe, "--config", str(cfg), "--port", str(port), "--num_workers", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "LITELLM_LOG": "ERROR",
                "LITELLM_TELEMETRY": "False",
                "LITELLM_MASTER_KEY": KEY,
            },
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health/liveliness", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    print(f"LiteLLM did not start; see {tmp / 'litellm.log'}")
    return None


async def load(urls: list[str], concurrency: int, total: int) -> tuple[float, list[float]]:
    """Run `total` streamed requests, `concurrency` at a time; (requests/s, latencies in ms).

    The client is aiohttp (a C HTTP parser) on uvloop: on two cores a pure-Python client would
    take most of a core at 128 streams and its own slowness would show up as everyone's latency.
    """
    latencies: list[float] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as client:

        async def worker(jobs) -> None:
            for i in jobs:
                url = urls[i % len(urls)]
                t = time.perf_counter()
                try:
                    async with client.post(
                        url + "/v1/chat/completions",
                        json=BODY,
                        headers={"Authorization": f"Bearer {KEY}"},
                    ) as r:
                        async for _ in r.content.iter_any():
                            pass
                        if r.status != 200:
                            raise aiohttp.ClientError(f"HTTP {r.status}")
                except (TimeoutError, aiohttp.ClientError) as exc:
                    errors.append(f"{url}: {type(exc).__name__} {exc}")
                    continue
                latencies.append((time.perf_counter() - t) * 1000)

        warm = iter(range(concurrency))  # open the connections first
        await asyncio.gather(*(worker(warm) for _ in range(concurrency)))
        latencies.clear()
        jobs = iter(range(total))
        start = time.perf_counter()
        await asyncio.gather(*(worker(jobs) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    if errors:
        print(
            f"  {len(errors)} of {total} requests failed at {concurrency} streams, e.g. {errors[0]}"
        )
    return len(latencies) / wall, latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


ROUTER_ENV = {"LLMLB_NODE_MAX_IN_FLIGHT": "1000", "LLMLB_ROUTER_MAX_QUEUE": "10000"}


def start_routers(opts, tmp: Path) -> tuple[dict[str, ServerProcess], list]:
    """The routers to measure, by name, and the servers they need (to close at the end)."""
    routers = {"llmlb router": ServerProcess(tmp / "sqlite", kind="router", env=ROUTER_ENV)}
    services: list = []
    if opts.database == "postgres" or opts.redis:
        from tests.support.postgres import Postgres

        pg = Postgres().start()
        services.append(pg)
        env = {**ROUTER_ENV, "LLMLB_DATABASE_URL": pg.create_database("bench")}
        routers["on postgres"] = ServerProcess(tmp / "pg", kind="router", env=env)
        if opts.redis:
            from tests.support.redis_server import RedisServer

            redis = RedisServer().start()
            services.append(redis)
            env = {
                **ROUTER_ENV,
                "LLMLB_DATABASE_URL": pg.create_database("bench_redis"),
                "LLMLB_REDIS_URL": redis.url,
            }
            routers["pg + redis"] = ServerProcess(tmp / "redis", kind="router", env=env)
    if opts.baseline:
        base = Path(opts.baseline).resolve()
        routers["baseline"] = ServerProcess(
            tmp / "baseline",
            kind="router",
            env={**ROUTER_ENV, "PYTHONPATH": str(base)},
            cwd=base,
        )
    for router in routers.values():
        router.start()
    return routers, services


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--backends", type=int, default=2)
    ap.add_argument("--streams", default="1,16,128", help="concurrency levels, comma-separated")
    ap.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="postgres: also a router on PostgreSQL, beside the SQLite one",
    )
    ap.add_argument("--redis", action="store_true", help="also PostgreSQL + Redis claims")
    ap.add_argument("--baseline", metavar="PATH", help="also a router from this checkout")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="targets take turns this many times; samples are pooled",
    )
    opts = ap.parse_args()
    levels = [int(x) for x in opts.streams.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ports, procs = start_backends(opts.backends)
        routers, services = start_routers(opts, tmp)
        stop = threading.Event()
        for router in routers.values():
            threading.Thread(
                target=keep_registered, args=(router.url, ports, stop), daemon=True
            ).start()
        time.sleep(1.0)
        targets = {"direct": [f"http://127.0.0.1:{p}" for p in ports]}
        targets.update({name: [router.url] for name, router in routers.items()})
        litellm = None
        if not opts.no_litellm and Path(opts.litellm).exists():
            litellm = start_litellm(opts.litellm, ports, tmp)
            if litellm:
                targets["LiteLLM proxy"] = [litellm[1]]
        results: dict[tuple[str, int], tuple[float, list[float]]] = {}
        try:
            for c in levels:
                total = max(50, c * 8)
                for _ in range(
                    opts.rounds
                ):  # taking turns spreads the machine's noise over every target
                    for name, urls in targets.items():
                        rps, lat = uvloop.run(load(urls, c, total))
                        before = results.get((name, c), (0.0, []))
                        results[(name, c)] = (before[0] + rps / opts.rounds, before[1] + lat)
        finally:
            stop.set()
            for router in routers.values():
                router.stop()
            for service in services:
                service.close()
            if litellm:
                litellm[0].terminate()
            for p in procs:
                p.terminate()
    print(
        f"backends: {opts.backends} fake streams of 32 tokens, 20 ms TTFT, 200 tokens/s (~180 ms each)"
    )
    print(
        f"{'streams':>7} {'target':14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}"
    )
    for c in levels:
        base = results[("direct", c)][1]
        for name in targets:
            rps, lat = results[(name, c)]
            added = (
                ""
                if name == "direct"
                else f"{pct(lat, 50) - pct(base, 50):+9.1f} {pct(lat, 99) - pct(base, 99):+10.1f}"
            )
            print(f"{c:>7} {name:14} {rps:8.1f} {pct(lat, 50):8.1f} {pct(lat, 99):8.1f} {added}")
        if ("LiteLLM proxy", c) in results:
            ratio = results[("llmlb router", c)][0] / results[("LiteLLM proxy", c)][0]
            print(f"{'':>7} router/LiteLLM throughput: {ratio:.2f}x")
        sqlite = results[("llmlb router", c)][1]
        for name in ("on postgres", "pg + redis", "baseline"):
            if (name, c) in results:
                lat = results[(name, c)][1]
                print(
                    f"{'':>7} {name} vs llmlb router (SQLite): p50 "
                    f"{pct(lat, 50) - pct(sqlite, 50):+.2f} ms, p99 {pct(lat, 99) - pct(sqlite, 99):+.2f} ms"
                )


if __name__ == "__main__":
    main()
