"""Two routers, one cluster (issue 18): a real PostgreSQL and a real Redis (tests/support/
postgres.py, redis_server.py), two `llmlb router serve` processes sharing them, and three real
nodes with the tiny model.

What a node holds is read from the node itself: `llmlb_in_flight` (generating) plus
`llmlb_queue_depth` (waiting inside the node for its model). A node runs one generation per
model at a time, so a second request the routers send it shows up as queued there: the sum is
what the routers have on it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest

from tests.e2e.conftest import start_node
from tests.support.procs import ServerProcess, metric, run_cli, wait_for
from tests.support.services import new_postgres, new_redis

BEAT = {"LLMLB_HEARTBEAT_MS": "300", "LLMLB_THREADS": "1"}
LEASE_SECS = 2
NODE_CPUS = {min(os.sched_getaffinity(0))}  # equal nodes, as in test_router.py
TOKENS = 200  # long enough that six streams overlap


class Cluster:
    def __init__(self, routers: list[ServerProcess], nodes: list[ServerProcess]):
        self.routers, self.nodes = routers, nodes

    @property
    def a(self) -> ServerProcess:
        return self.routers[0]

    @property
    def b(self) -> ServerProcess:
        return self.routers[1]

    def stop(self) -> None:
        for p in [*self.nodes, *self.routers]:
            p.stop()


def start_cluster(
    tmp_path, database_url: str, redis_url: str | None, model, register_with: str, **env
) -> Cluster:
    """Routers A and B on one database (and Redis), three nodes registered through
    `register_with` ("a" or "a,b": the node's --router list)."""
    shared = {
        **BEAT,
        "LLMLB_DATABASE_URL": database_url,
        "LLMLB_NODE_MAX_IN_FLIGHT": "1",
        "LLMLB_CLAIM_LEASE_SECS": str(LEASE_SECS),
        "LLMLB_ROUTER_QUEUE_TIMEOUT": "120",
        **env,
    }
    if redis_url:
        shared["LLMLB_REDIS_URL"] = redis_url
    cluster = Cluster([], [])
    try:  # whatever was started is stopped, should the cluster not come up
        for name in ("a", "b"):
            cluster.routers.append(
                ServerProcess(tmp_path / f"router-{name}", kind="router", env=shared).start()
            )
        urls = {"a": cluster.a.url, "b": cluster.b.url}
        router_arg = ",".join(urls[r] for r in register_with.split(","))
        for i in range(3):
            cluster.nodes.append(
                start_node(
                    tmp_path / f"node{i}",
                    {"org/endless": model},
                    env=BEAT,
                    extra_args=("--router", router_arg),
                    cpus=NODE_CPUS,
                )
            )
        for router in cluster.routers:
            assert wait_for(lambda r=router: online(r) == 3, 60), router.log()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def get(router: ServerProcess, path: str) -> dict:
    """A cluster view, with the router's first API key when it requires one."""
    keys = router.env.get("LLMLB_API_KEYS")
    headers = {"Authorization": f"Bearer {keys.split(',')[0]}"} if keys else None
    return httpx.get(router.url + path, headers=headers, timeout=10).json()


def nodes_of(router: ServerProcess) -> list[dict]:
    return get(router, "/admin/cluster/nodes")["nodes"]


def online(router: ServerProcess) -> int:
    return sum(n["status"] == "online" for n in nodes_of(router))


def status(router: ServerProcess) -> dict:
    return get(router, "/admin/cluster/status")


def history(router: ServerProcess) -> list[dict]:
    return get(router, "/admin/cluster/requests?limit=500")["requests"]


def held_by_node(node: ServerProcess) -> int:
    """Requests the node has: generating, plus waiting inside it for its model."""
    return int(metric(node.url, "llmlb_in_flight") + metric(node.url, "llmlb_queue_depth"))


def ask(router: ServerProcess, tokens: int = 4) -> httpx.Response:
    return httpx.post(
        router.url + "/v1/chat/completions",
        json={
            "model": "endless",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": tokens,
        },
        timeout=120,
    )


def stream(urls: list[str], started: threading.Event | None = None, tokens: int = TOKENS) -> str:
    """A streamed chat that, like a client behind DNS, tries the next router when one fails
    (before or during the answer); the URL that completed it."""
    body = {
        "model": "org/endless",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": tokens,
        "stream": True,
    }
    errors = []
    for url in urls:
        try:
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=180) as r:
                if r.status_code != 200:
                    errors.append(f"{url}: HTTP {r.status_code} {r.read()[:200]!r}")
                    continue
                lines = []
                for line in r.iter_lines():
                    if started is not None and not started.is_set():
                        started.set()
                    if line.strip():
                        lines.append(line)
                if lines and lines[-1] == "data: [DONE]" and '"error"' not in "".join(lines):
                    return url
                errors.append(f"{url}: the stream ended early: {lines[-1:]}")
        except httpx.HTTPError as exc:
            errors.append(f"{url}: {exc!r}")
    raise AssertionError(f"no router completed the stream: {errors}")


class Watch:
    """Samples every node's own metrics in a thread: the most each node ever held."""

    def __init__(self, nodes: list[ServerProcess]):
        self.nodes = nodes
        self.most = {n.port: 0 for n in nodes}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            for n in self.nodes:
                # a node busy generating may answer a scrape slowly: the next sample counts
                with contextlib.suppress(httpx.HTTPError, AssertionError):
                    self.most[n.port] = max(self.most[n.port], held_by_node(n))

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(30)


def six_streams(cluster: Cluster) -> list[str]:
    """Six concurrent streams, three through each router."""
    urls = [[cluster.a.url], [cluster.b.url]] * 3
    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(stream, urls))


@pytest.fixture
def cluster(tmp_path, postgres_url, redis_url, endless_gguf):
    c = start_cluster(tmp_path, postgres_url, redis_url, endless_gguf, register_with="a")
    yield c
    c.stop()


def test_a_node_registered_through_one_router_is_served_through_the_other(cluster):
    a, b = cluster.a, cluster.b
    # the nodes know only router A; router B knows them from the shared database
    assert {n["port"] for n in nodes_of(b)} == {n.port for n in cluster.nodes}
    served = {ask(b).headers["x-llmlb-node"] for _ in range(3)}
    assert served <= {n["id"][:8] for n in nodes_of(b)} and served
    out = run_cli("router", "status", env=b.client_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Cluster Status: healthy\n\nNodes:      3 online / 0 offline\n")
    assert "Database:   postgresql, reachable" in out.stdout
    assert "In flight:  shared in Redis" in out.stdout
    assert status(a)["database"] == status(b)["database"] | {"shared": True, "status": "ok"}


def test_history_written_by_both_routers_is_listed_by_either(
    tmp_path, postgres_url, redis_url, endless_gguf
):
    c = start_cluster(
        tmp_path,
        postgres_url,
        redis_url,
        endless_gguf,
        register_with="a",
        LLMLB_API_KEYS="team-key",
    )
    key = {"Authorization": "Bearer team-key"}
    try:
        for router, tokens in ((c.a, 2), (c.a, 3), (c.b, 4), (c.b, 5), (c.b, 6)):
            r = httpx.post(
                router.url + "/v1/chat/completions",
                json={
                    "model": "endless",
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": tokens,
                },
                headers=key,
                timeout=120,
            )
            assert r.status_code == 200, r.text

        def listed(router) -> list[int]:
            rows = httpx.get(
                router.url + "/admin/cluster/requests?limit=50", headers=key, timeout=10
            ).json()["requests"]
            return sorted(r["tokens_out"] for r in rows)

        for router in (c.a, c.b):
            assert wait_for(lambda r=router: listed(r) == [2, 3, 4, 5, 6]), listed(router)
        rows = httpx.get(c.b.url + "/admin/cluster/requests", headers=key, timeout=10).json()
        # both routers name the key alike: they share the secret of key ids
        assert len({r["key_id"] for r in rows["requests"]}) == 1
        counted = httpx.get(c.a.url + "/admin/cluster/status", headers=key, timeout=10).json()
        assert counted["requests_last_hour"] == 5
    finally:
        c.stop()


def test_the_in_flight_limit_holds_across_routers(cluster):
    """LLMLB_NODE_MAX_IN_FLIGHT=1 and six streams, three through each router: no node ever
    holds two (the claims are in Redis), and all six complete."""
    with Watch(cluster.nodes) as watch:
        finished = six_streams(cluster)
    assert sorted(finished) == sorted([cluster.a.url, cluster.b.url] * 3)
    assert max(watch.most.values()) == 1, watch.most  # 1: the load did reach the nodes
    assert wait_for(lambda: all(n["cluster_in_flight"] == 0 for n in nodes_of(cluster.b)))


def test_without_redis_the_limit_is_per_router(tmp_path, postgres_url, endless_gguf):
    """The README's word: without Redis each router counts alone, so two routers can each
    send a node its one request. (What the test above rules out, seen happening.)"""
    c = start_cluster(tmp_path, postgres_url, None, endless_gguf, register_with="a")
    try:
        with Watch(c.nodes) as watch:
            six_streams(c)
        assert max(watch.most.values()) == 2, watch.most
        assert status(c.a)["claims"] == {"store": "local", "status": "ok", "scope": "router"}
    finally:
        c.stop()


def test_a_router_killed_mid_load_loses_no_claim_and_no_written_history(
    tmp_path, postgres_url, redis_url, endless_gguf
):
    c = start_cluster(tmp_path, postgres_url, redis_url, endless_gguf, register_with="a,b")
    try:
        for _ in range(3):
            assert ask(c.a).status_code == 200
        assert wait_for(lambda: len(history(c.b)) == 3)
        written = {r["id"] for r in history(c.b)}

        # A's three streams hold all three nodes; then B's three queue behind them
        with ThreadPoolExecutor(6) as pool:
            on_a = [pool.submit(stream, [c.a.url, c.b.url], None, 1000) for _ in range(3)]
            assert wait_for(lambda: sum(n["in_flight"] for n in nodes_of(c.a)) == 3, 120)
            on_b = [pool.submit(stream, [c.b.url], None, 1000) for _ in range(3)]
            assert wait_for(lambda: status(c.b)["queue_depth"] == 3, 60)
            c.a.kill()  # mid-stream: A's clients retry on B, whose queue waits out A's leases
            finished = [f.result(timeout=300) for f in on_a + on_b]
        assert finished.count(c.b.url) == 6  # A's three completed on B
        # A's claims were never released: they end with their lease, and nothing leaks
        assert wait_for(lambda: all(n["cluster_in_flight"] == 0 for n in nodes_of(c.b)))
        assert all(held_by_node(n) == 0 for n in c.nodes)
        redis = c_redis(c.b)
        now_ms = int(redis.time()[0]) * 1000
        ids = [n["id"] for n in nodes_of(c.b)]  # each node's claims, unexpired, in Redis itself
        assert all(redis.zcount(f"llmlb:{{claims}}:node:{i}", now_ms, "+inf") == 0 for i in ids)
        # the nodes moved their heartbeats to B: all online there, long after A died
        assert online(c.b) == 3
        assert written <= {r["id"] for r in history(c.b)}
    finally:
        c.stop()


def c_redis(router: ServerProcess):
    import redis

    return redis.Redis.from_url(router.env["LLMLB_REDIS_URL"], socket_timeout=5)


def test_postgres_down_proxying_goes_on_and_status_says_so(tmp_path, redis_url, endless_gguf):
    pg = new_postgres().start()
    c = start_cluster(
        tmp_path, pg.create_database("llmlb"), redis_url, endless_gguf, register_with="a"
    )
    try:
        assert ask(c.b).status_code == 200
        assert wait_for(lambda: len(history(c.a)) == 1)
        pg.stop()
        for router in (c.a, c.b):
            assert ask(router).status_code == 200  # noticed at its next read or write
            assert wait_for(lambda r=router: status(r)["database"]["status"] == "unreachable")

        # B hears no heartbeat (the nodes beat to A, and A cannot write them): once that has
        # lasted past the heartbeat timeout, B still serves, from what it knows and probes
        def down_for(router) -> float:
            since = datetime.fromisoformat(status(router)["database"]["down_since"])
            return (datetime.now(UTC) - since).total_seconds()

        assert wait_for(lambda: down_for(c.b) > 3 * 0.3 + 2, 30)
        with Watch(c.nodes) as watch:
            finished = six_streams(c)
        assert sorted(finished) == sorted([c.a.url, c.b.url] * 3)
        assert max(watch.most.values()) == 1  # Redis still shares the claims
        for router in (c.a, c.b):
            out = run_cli("router", "status", env=router.client_env())
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith("Cluster Status: degraded\n\nNodes:      3 online")
            assert "Database:   postgresql, UNREACHABLE" in out.stdout
            assert "Requests:   -" in out.stdout and "requests held in memory" in out.stdout
            assert metric(router.url, "llmlb_router_database_up") == 0
            assert metric(router.url, "llmlb_router_history_pending") >= 3

        pg.start()  # back: what was held is written, and the routers say so
        for router in (c.a, c.b):
            assert wait_for(lambda r=router: status(r)["database"]["status"] == "ok", 60)
        # 1 before, 2 + 6 during the outage: none lost
        assert wait_for(lambda: len(history(c.b)) == 9, 30), len(history(c.b))
        assert status(c.a)["status"] == "healthy"
    finally:
        c.stop()
        pg.close()


def test_redis_down_falls_back_to_local_counters(tmp_path, postgres_url, endless_gguf):
    redis = new_redis().start()
    c = start_cluster(tmp_path, postgres_url, redis.url, endless_gguf, register_with="a")
    try:
        assert metric(c.a.url, "llmlb_router_redis_up") == 1
        redis.stop()
        for router in (c.a, c.b):
            assert ask(router).status_code == 200
            assert wait_for(lambda r=router: metric(r.url, "llmlb_router_redis_up") == 0)
            assert metric(router.url, "llmlb_router_redis_errors_total") >= 1
            assert "cannot be reached" in router.log() and "own counters" in router.log()
            assert status(router)["claims"]["status"] == "unreachable"
            out = run_cli("router", "status", env=router.client_env()).stdout
            assert "In flight:  Redis UNREACHABLE" in out
        redis.start()
        for router in (c.a, c.b):
            assert wait_for(lambda r=router: metric(r.url, "llmlb_router_redis_up") == 1, 30)
            assert ask(router).status_code == 200
    finally:
        c.stop()
        redis.close()
