"""Claims shared by every router of a cluster, in Redis (LLMLB_REDIS_URL): the Claims of
balancer/claims.py whose counts hold across routers.

Each node has a sorted set of claims, scored by when each claim's lease ends. Claiming runs
one Lua script: it drops expired claims, and takes a place on the node the policy would pick
with every router's counts (balancer/policy.py, `ranked` and `tier`) among those below
LLMLB_NODE_MAX_IN_FLIGHT, and returns every candidate's count. Releasing is one more script,
which also publishes the release so that routers with requests waiting try again at once. So
a request costs two round trips, and the limit holds across all routers.

A router renews its claims' leases in the background; one that dies stops renewing, and its
claims end with their lease (LLMLB_CLAIM_LEASE_SECS). When Redis cannot be reached, the router
falls back to its own counters (the limit is then per router), says so in its log and in
/metrics, and goes back to Redis once it answers again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llmlb import tasks
from llmlb.balancer.claims import Claimed, LocalClaims
from llmlb.balancer.policy import NodeView, ranked, tier
from llmlb.balancer.resp import Pipe
from llmlb.errors import LlmlbError, Unavailable
from llmlb.prefix import Point
from llmlb.store.engine import shown_url

log = logging.getLogger("llmlb.router")

PREFIX = "llmlb:{claims}:"  # one hash tag: every key in one slot, as a script's keys must be
CHANNEL = PREFIX + "released"
TIMEOUT_SECS = 1.0  # a Redis slower than this counts as down for the request that waited

# KEYS: the candidates' claim sets, in the policy's order; with prefix routing (a chain in
# ARGV), then their `held` sets (what each node's heartbeat says its prompt cache holds) and
# their `recent` sets (prefixes of requests routers sent them lately, scored by expiry).
# ARGV: capacity, lease (ms), the claim's id, the chain's length, the balance threshold, how
# long a sent prefix counts (ms), then each candidate's tier (the policy's preference before
# in-flight counts: healthy before cooling down, loaded before not), then the chain's hashes
# and their lengths in characters. The claim goes to the best tier's least busy node with
# room, counted across all routers (ties keep the policy's order); with a chain, to the node
# of that tier with room holding the longest prefix, unless it has more than `balance`
# requests beyond the least busy one there (balancer/policy.py's rule, with Redis's counts).
CLAIM = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local capacity, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local n_chain, balance, recent = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local n = #KEYS
if n_chain > 0 then n = n / 3 end
local tiers, chain, chars = 6, 6 + n, 6 + n + n_chain
local best, best_tier, best_n, counts, matched = 0, 0, 0, {}, {}
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local c = redis.call('ZCARD', KEYS[i])
  local tier = tonumber(ARGV[tiers + i])
  counts[i], matched[i] = c, 0
  for j = n_chain, 1, -1 do
    local h = ARGV[chain + j]
    local until_ms = redis.call('ZSCORE', KEYS[2 * n + i], h)
    if redis.call('SISMEMBER', KEYS[n + i], h) == 1 or (until_ms and tonumber(until_ms) > now) then
      matched[i] = tonumber(ARGV[chars + j])
      break
    end
  end
  if c < capacity and (best == 0 or tier < best_tier or (tier == best_tier and c < best_n)) then
    best, best_tier, best_n = i, tier, c
  end
end
if n_chain > 0 and best > 0 then
  local holder = 0
  for i = 1, n do
    if counts[i] < capacity and tonumber(ARGV[tiers + i]) == best_tier and matched[i] > 0 and
       (holder == 0 or matched[i] > matched[holder] or
        (matched[i] == matched[holder] and counts[i] < counts[holder])) then
      holder = i
    end
  end
  if holder > 0 and counts[holder] - best_n <= balance then
    best = holder
  end
end
if best > 0 then
  redis.call('ZADD', KEYS[best], now + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[best], 2 * lease)
  counts[best] = counts[best] + 1
  if n_chain > 0 then
    local key = KEYS[2 * n + best]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    for j = 1, n_chain do
      redis.call('ZADD', key, now + recent, ARGV[chain + j])
    end
    redis.call('PEXPIRE', key, recent)
  end
end
return {best, counts, matched}
"""

# KEYS: a node's `held` set; ARGV: how long it lives (ms), then the hashes its heartbeat holds
PUBLISH_HELD = """
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 1000 do
  redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if #ARGV > 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 0
"""

RELEASE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PUBLISH', ARGV[2], KEYS[1])
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: every known node's set; ARGV: the lease, then (index into KEYS, claim id) pairs
RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local key = KEYS[tonumber(ARGV[i])]
  redis.call('ZADD', key, now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, 2 * lease)
end
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  counts[i] = redis.call('ZCARD', key)
end
return counts
"""


class ClaimsDown(Exception):
    """Redis did not answer: use this router's own counters for now."""


def node_key(node_id: str) -> str:
    return PREFIX + "node:" + node_id


def held_key(node_id: str) -> str:
    return PREFIX + "held:" + node_id


def recent_key(node_id: str) -> str:
    return PREFIX + "recent:" + node_id


class RedisClaims:
    """Claims counted in Redis; this router's own counters (LocalClaims) while it is down."""

    def __init__(self, url: str, capacity: int, lease_secs: float):
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise LlmlbError(
                "LLMLB_REDIS_URL is set, but the Redis client is not installed: "
                "pip install 'llmlb[cluster]' (redis)"
            ) from None
        self.url = url
        self.capacity = capacity
        self.lease_ms = int(lease_secs * 1000)
        self.router = uuid.uuid4().hex[:12]
        self._seq = 0
        self.redis = aioredis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT_SECS,
            socket_connect_timeout=TIMEOUT_SECS,
        )
        self.pipe = Pipe(url, TIMEOUT_SECS)  # the request path's two calls (balancer/resp.py)
        self._renew = self.redis.register_script(RENEW)
        self._publish = self.redis.register_script(PUBLISH_HELD)
        self._publishing: dict[str, asyncio.Task] = {}  # node id -> its set being written
        self.up = False
        self.errors = 0  # Redis calls that failed (each fell back to local counters)
        self.held: dict[str, str] = {}  # claim id -> node id: what this router holds now
        self.counts: dict[str, int] = {}  # node id -> claims on it across the cluster
        self.on_release: Callable[[], None] = lambda: None
        self.known_nodes: Callable[[], Sequence[str]] = list
        self._releasing: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self.local = LocalClaims()  # while Redis does not answer

    def describe(self) -> str:
        return f"Redis at {self.where}"

    def cluster_counts(self) -> Mapping[str, int] | None:
        return self.counts if self.up else None

    def status(self) -> dict[str, Any]:
        return {
            "store": "redis",
            "status": "ok" if self.up else "unreachable",
            "scope": "cluster" if self.up else "router",
            "lease_secs": self.lease_ms / 1000,
        }

    def gauges(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "llmlb_router_redis_up",
            "1 when in-flight claims are shared through Redis, 0 while it cannot be reached "
            "and this router counts on its own.",
            int(self.up),
        )
        yield CounterMetricFamily(
            "llmlb_router_redis_errors",
            "Redis calls that failed (the router then used its own counters).",
            self.errors,
        )
        shared = GaugeMetricFamily(
            "llmlb_router_cluster_in_flight",
            "Requests every router of the cluster has on each node now (Redis's count).",
            labels=["node"],
        )
        for node_id, count in sorted(self.counts.items()):
            shared.add_metric([node_id[:8]], count)
        yield shared

    @property
    def where(self) -> str:
        return shown_url(self.url)

    async def start(self) -> None:
        try:
            await self.redis.ping()
            self.up = True
            log.info("in-flight claims shared through Redis at %s", self.where)
        except Exception as exc:
            self._down(exc)
        self._loops = [
            tasks.start("claim leases", self._renew_forever),
            tasks.start("claim releases", self._listen_forever),
        ]

    async def stop(self) -> None:
        await tasks.stop(*self._loops)
        for task in self._publishing.values():
            task.cancel()
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        await self.pipe.close()
        await self.redis.aclose()

    def _down(self, exc: BaseException) -> None:
        self.errors += 1
        if self.up or self.errors == 1:
            log.warning(
                "Redis at %s cannot be reached (%s): each router now limits in-flight requests "
                "with its own counters, until Redis answers again",
                self.where,
                type(exc).__name__ if not str(exc) else exc,
            )
        self.up = False

    # -- the two calls of a request ------------------------------------------------------------
    async def claim(
        self,
        views: list[NodeView],
        model: str,
        exclude: frozenset[str],
        chain: Sequence[Point],
        balance: int | None,
        recent_secs: float,
    ) -> Claimed | None:
        """One script call takes the first candidate with room across all routers (with a
        `balance`, the holder of the longest prefix by the sets every router publishes
        there). This router's own counters decide while Redis does not answer."""
        if not self.up:
            return await self.local.claim(views, model, exclude, chain, balance, recent_secs)
        pool = ranked(views, model, exclude)
        if not pool:
            raise Unavailable(f"no online node has model '{model}'")
        try:
            index, claim_id, held = await self.claim_on(
                [v.id for v in pool],
                [tier(v, model) for v in pool],
                chain if balance is not None else [],
                balance or 0,
                recent_secs,
            )
        except ClaimsDown:
            return await self.local.claim(views, model, exclude, chain, balance, recent_secs)
        if claim_id is None:
            return None
        if held is not None:  # what every router knows, as Redis counted it
            pool = [dataclasses.replace(v, matched=m) for v, m in zip(pool, held, strict=True)]
        return Claimed(pool[index], pool, claim_id)

    async def claim_on(
        self,
        node_ids: Sequence[str],
        tiers: Sequence[int] | None = None,
        chain: Sequence[Point] = (),
        balance: int = 0,
        recent_secs: float = 0.0,
    ) -> tuple[int, str | None, list[int] | None]:
        """Claim a place on one of `node_ids` (the policy's order, with its `tiers`; with a
        `chain`, preferring the holder of its longest prefix): (its index, the claim id, how
        much of the chain each candidate holds, when a chain was given), or (-1, None, ...)
        when all are full. Raises ClaimsDown when Redis does not answer."""
        self._seq += 1
        member = f"{self.router}:{self._seq}"
        keys = [node_key(n) for n in node_ids]
        if chain:
            keys += [held_key(n) for n in node_ids] + [recent_key(n) for n in node_ids]
        args: list[Any] = [
            self.capacity,
            self.lease_ms,
            member,
            len(chain),
            balance,
            int(recent_secs * 1000),
            *(tiers or [0] * len(node_ids)),
            *(p.hash for p in chain),
            *(p.chars for p in chain),
        ]
        try:
            chosen, counts, matched = await self.pipe.evalsha(CLAIM, keys, args)
        except Exception as exc:
            self._down(exc)
            raise ClaimsDown() from exc
        for node_id, count in zip(node_ids, counts, strict=False):
            self.counts[node_id] = int(count)
        held = [int(m) for m in matched] if chain else None
        if not chosen:
            return -1, None, held
        node_id = node_ids[int(chosen) - 1]
        self.held[member] = node_id
        return int(chosen) - 1, member, held

    def publish_held(self, node_id: str, hashes: Sequence[int]) -> None:
        """What a node's heartbeat says its prompt cache holds, for every router (in a task:
        a heartbeat does not wait for it; one at a time per node, the newest wins)."""
        if not self.up:
            return
        running = self._publishing.get(node_id)
        if running is not None and not running.done():
            running.cancel()
        ttl = int(self.lease_ms * 2)
        task = asyncio.get_running_loop().create_task(
            self._publish(keys=[held_key(node_id)], args=[ttl, *hashes])
        )
        self._publishing[node_id] = task
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._down(task.exception() or Exception("publish failed"))

    def release(self, member: str | None) -> None:
        """Synchronous, for the `finally` of a cancelled request: the script runs in a task.
        Should it fail, the claim ends with its lease. (None: a claim LocalClaims made.)"""
        if member is None:
            return
        node_id = self.held.pop(member, None)
        if node_id is None or not self.up:
            return
        task = asyncio.get_running_loop().create_task(self._send_release(node_id, member))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _send_release(self, node_id: str, member: str) -> None:
        try:
            count = await self.pipe.evalsha(RELEASE, [node_key(node_id)], [member, CHANNEL])
            self.counts[node_id] = int(count)
        except Exception as exc:
            self._down(exc)

    # -- background ----------------------------------------------------------------------------
    async def renew(self) -> None:
        """Extend the lease of every claim this router holds; refresh every node's count."""
        nodes = list(dict.fromkeys([*self.known_nodes(), *self.held.values()]))
        if not nodes:
            return
        index = {n: i + 1 for i, n in enumerate(nodes)}
        held = dict(self.held)
        args: list[Any] = [self.lease_ms]
        for member, node_id in held.items():
            args += [index[node_id], member]
        counts = await self._renew(keys=[node_key(n) for n in nodes], args=args)
        for node_id, count in zip(nodes, counts, strict=False):
            self.counts[node_id] = int(count)
        for member, node_id in held.items():  # released while the renewal was on its way
            if member not in self.held:
                self.held[member] = node_id
                self.release(member)

    async def _renew_forever(self) -> None:
        every = max(0.2, self.lease_ms / 3000)
        while True:
            await asyncio.sleep(every if self.up else min(every, 1.0))
            try:
                if not self.up:
                    await self.redis.ping()
                    log.info(
                        "Redis at %s answers again: in-flight limits hold across routers",
                        self.where,
                    )
                    self.up = True
                await self.renew()
            except Exception as exc:
                if self.up:
                    self._down(exc)

    async def _listen_forever(self) -> None:
        """Wake this router's waiting requests when any router releases a claim."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                while True:
                    if await pubsub.get_message(timeout=1.0) is not None:
                        self.on_release()
            except Exception:
                await asyncio.sleep(1.0)  # the renewal loop reports the outage
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    log.debug("closing a Redis subscription failed", exc_info=True)
