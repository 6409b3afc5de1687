"""In-flight claims in a real Redis (balancer/redis_claims.py), as two routers in one process use
them: the limit across both, releases that wake the other, leases that end, and the fall-back
to local counters while Redis is down."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from llmlb import prefix
from llmlb.balancer.admission import Admission
from llmlb.balancer.redis_claims import RedisClaims, node_key
from llmlb.balancer.registry import Registry
from llmlb.balancer.wire import Heartbeat
from llmlb.errors import Unavailable
from tests.support.procs import free_port
from tests.support.services import new_redis


class Router:
    """A router's node table and admission, with claims in Redis, as build_cluster wires them."""

    def __init__(self, url: str, capacity: int, lease: float, timeout: float, balance=None):
        self.nodes = Registry(capacity, 30.0)
        self.claims = RedisClaims(url, capacity, lease)
        self.admission = Admission(self.nodes, self.claims, 10, timeout, balance=balance)
        self.acquire, self.release = self.admission.acquire, self.admission.release

    def heartbeat(self, beat: Heartbeat) -> None:
        self.admission.heard(self.nodes.heartbeat(beat))


def beat(registry: Router, node_id: str) -> None:
    registry.heartbeat(
        msgspec.convert(
            {"id": node_id, "host": "127.0.0.1", "port": 1, "models": [{"name": "org/m"}]},
            Heartbeat,
        )
    )


async def until(condition, timeout: float = 10.0) -> bool:
    """Wait for `condition()` to hold (True), or give up after `timeout` seconds (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def until_async(condition, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def router(url: str, lease: float = 30, timeout: float = 5) -> Router:
    """A router with capacity 1 per node."""
    return Router(url, 1, lease, timeout)


def test_the_limit_holds_across_two_routers_and_a_release_wakes_the_other(redis_url):
    a, b = router(redis_url), router(redis_url)
    for r in (a, b):
        beat(r, "n1")
        beat(r, "n2")

    async def scenario() -> None:
        await a.claims.start()
        await b.claims.start()
        try:
            first = await a.acquire("org/m")
            second = await b.acquire("org/m")  # n1 is taken in Redis, whatever b counts
            assert {first.node.id, second.node.id} == {"n1", "n2"}
            assert b.claims.counts == {"n1": 1, "n2": 1}  # what b's claim found in Redis
            waiter = asyncio.create_task(b.acquire("org/m"))
            # it queues, since both nodes are full across the routers (it cannot be done
            # once it waits: only a release wakes it, and none has come)
            assert await until(lambda: b.admission.waiting == 1)
            assert not waiter.done()
            woken = b.admission._generation
            a.release(first, ok=True)  # a's release, published: b's waiter tries at once
            third = await asyncio.wait_for(waiter, 10)
            assert b.admission._generation > woken  # b heard of a's release through Redis
            assert third.node.id == first.node.id
            b.release(second, ok=True)
            b.release(third, ok=True)

            async def all_released() -> bool:  # the release scripts run in tasks
                await a.claims.renew()
                return a.claims.counts == {"n1": 0, "n2": 0}

            assert await until_async(all_released)
        finally:
            await a.claims.stop()
            await b.claims.stop()

    asyncio.run(scenario())


def test_a_claim_that_is_not_renewed_ends_with_its_lease(redis_url):
    """A router that dies stops renewing: its claims end after the lease, and the node takes
    requests again."""
    dead, alive = router(redis_url, lease=1), router(redis_url)
    for r in (dead, alive):
        beat(r, "n1")

    async def scenario() -> None:
        held = await dead.claims.claim_on(["n1"])  # claimed, and never renewed nor released
        assert held[1] is not None
        await alive.claims.start()
        try:
            got = await asyncio.wait_for(alive.acquire("org/m"), 10)  # waits out the lease
            assert got.node.id == "n1" and got.claim_id is not None
            alive.release(got, ok=True)
        finally:
            await alive.claims.stop()
            await dead.claims.redis.aclose()

    asyncio.run(scenario())


def test_keys_live_in_one_hash_slot():
    assert node_key("a").startswith("llmlb:{claims}:") and node_key("b") != node_key("a")


def test_redis_down_falls_back_to_local_counters_and_comes_back(caplog):
    server = new_redis()
    server.start()
    r = router(server.url, timeout=0.3)
    beat(r, "n1")

    async def scenario() -> None:
        await r.claims.start()
        try:
            shared = await r.acquire("org/m")
            assert shared.claim_id is not None and r.claims.up
            server.stop()
            local = None
            with pytest.raises(Unavailable, match="stayed busy"):  # local counters: n1 is full
                local = await r.acquire("org/m")
            assert local is None and not r.claims.up and r.claims.errors >= 1
            r.release(shared, ok=True)  # Redis is down: only the local counter moves
            local = await r.acquire("org/m")
            assert local.claim_id is None and local.node.in_flight == 1
            r.release(local, ok=True)
            server.start()
            for _ in range(100):  # the lease loop pings once a second while Redis is down
                if r.claims.up:
                    break
                await asyncio.sleep(0.1)
            assert r.claims.up
            back = await r.acquire("org/m")
            assert back.claim_id is not None
            r.release(back, ok=True)
        finally:
            await r.claims.stop()

    try:
        asyncio.run(scenario())
    finally:
        server.close()
    assert "own counters" in caplog.text and "answers again" in caplog.text


def test_an_unreachable_redis_at_start_is_a_warning_not_a_failure(caplog):
    pytest.importorskip("redis")  # the cluster extra; without it LLMLB_REDIS_URL is refused
    r = router(f"redis://127.0.0.1:{free_port()}/0")
    beat(r, "n1")

    async def scenario() -> None:
        await r.claims.start()
        try:
            held = await r.acquire("org/m")
            assert held.claim_id is None and held.node.id == "n1"
        finally:
            await r.claims.stop()

    asyncio.run(scenario())
    assert "cannot be reached" in caplog.text


# -- prefix routing across routers ---------------------------------------------------------------
def prefix_router(url: str) -> Router:
    """A router with prefix routing on (capacity 4 per node, balance 2)."""
    return Router(url, 4, 30, 5, balance=2)


def beat_holding(registry: Router, node_id: str, held: bytes = b"") -> None:
    body = {"id": node_id, "host": "127.0.0.1", "port": 1, "models": [{"name": "org/m"}]}
    registry.heartbeat(
        msgspec.convert({**body, "prefixes": held}, Heartbeat, builtin_types=(bytes,))
    )


def test_a_router_that_heard_no_heartbeat_sends_a_prefix_to_the_node_holding_it(redis_url):
    """Node n3's heartbeats go to router a; router b, which hears only that the nodes exist,
    still sends the conversation to n3: a published what n3 holds in Redis."""
    chain = prefix.chat_chain("org/m", [("user", "x" * 3000)])
    a, b = prefix_router(redis_url), prefix_router(redis_url)
    for node_id in ("n1", "n2"):
        beat_holding(a, node_id)
        beat_holding(b, node_id)
    beat_holding(b, "n3")

    async def scenario() -> None:
        await a.claims.start()
        await b.claims.start()
        try:
            beat_holding(a, "n3", prefix.pack(p.hash for p in chain[:2]))
            assert await until(lambda: all(t.done() for t in a.claims._publishing.values()))
            got = await b.acquire("org/m", chain=chain)
            assert got.node.id == "n3"  # without the prefix: n1, the first of equals
            assert b.admission.prefix_outcomes == {"hit": 1, "balanced": 0, "miss": 0}
            b.release(got, ok=True)
            plain = await b.acquire("org/m")
            assert plain.node.id == "n1"
            b.release(plain, ok=True)
        finally:
            await a.claims.stop()
            await b.claims.stop()

    asyncio.run(scenario())


def test_the_next_turn_finds_the_node_another_router_sent_the_last_one_to(redis_url):
    """Before any heartbeat can tell, the claim script remembers where a prefix went."""
    turn1 = [("user", "y" * 3000)]
    turn2 = [*turn1, ("assistant", "ok"), ("user", "and then?")]
    a, b = prefix_router(redis_url), prefix_router(redis_url)
    for r in (a, b):
        for node_id in ("n1", "n2", "n3"):
            beat_holding(r, node_id)

    async def scenario() -> None:
        await a.claims.start()
        await b.claims.start()
        try:
            first = await a.acquire("org/m", frozenset({"n1"}), prefix.chat_chain("org/m", turn1))
            assert first.node.id == "n2"
            a.release(first, ok=True)
            again = await b.acquire("org/m", chain=prefix.chat_chain("org/m", turn2))
            assert again.node.id == "n2"  # b never sent anything there itself
            b.release(again, ok=True)
        finally:
            await a.claims.stop()
            await b.claims.stop()

    asyncio.run(scenario())
