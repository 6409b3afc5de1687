"""Admission: a request gets a node with room for it, or waits in a bounded queue for one.

The node table (balancer/registry.py) says which nodes there are and how they are; the claims
(balancer/claims.py, local or in Redis) take the place; this module counts the node's
requests, cools down a node that failed, keeps prefix routing's outcomes and wakes waiting
requests when a place comes free.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from llmlb.balancer import affinity
from llmlb.balancer.claims import Claimed, Claims
from llmlb.balancer.nodes import Held, NodeEntry
from llmlb.balancer.policy import outcome
from llmlb.balancer.registry import Registry
from llmlb.errors import TooManyRequests, Unavailable
from llmlb.prefix import Point

# A node that fails a request (unreachable, dropped or silent, 503/429) cools down: 1 s, doubling
# with each further failure in a row, up to 30 s. Without it, a dead node that is still "online"
# until its heartbeats time out has the fewest requests in flight and would be every request's
# first try.
COOL_FIRST, COOL_MAX = 1.0, 30.0


class Admission:
    def __init__(
        self,
        nodes: Registry,
        claims: Claims,
        max_queue: int,
        queue_timeout: float,
        balance: int | None = None,
    ):
        """`balance`: prefix routing's threshold (balancer/policy.py); None: no prefix routing."""
        self.nodes = nodes
        self.claims = claims
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.balance = balance
        self.recent_secs = 2 * nodes.timeout  # what a request leaves on its node, until beats tell
        self.prefix_outcomes = {"hit": 0, "balanced": 0, "miss": 0}
        self.waiting = 0
        self._generation = 0  # bumped by every release: a waiter that saw it change retries
        self._changed = asyncio.Condition()
        claims.on_release = self.wake
        claims.known_nodes = lambda: list(nodes.nodes)

    def heard(self, node: NodeEntry) -> None:
        """A heartbeat came: with prefix routing, the other routers learn what the node holds."""
        if self.balance is not None:
            self.claims.publish_held(node.id, list(node.prefixes))

    async def acquire(
        self, model: str, exclude: frozenset[str] = frozenset(), chain: list[Point] | None = None
    ) -> Held:
        """Claim a node for `model`, waiting in a bounded queue while every candidate is full.

        A waiter notes the release generation before it tries; when a release came in between
        (any router's, with Redis), it tries again at once instead of waiting, so a freed node
        is never missed.
        """
        chain = chain or []
        deadline = time.monotonic() + self.queue_timeout
        queued = False
        try:
            while True:
                seen = self._generation
                views = self.nodes.views(self.claims.cluster_counts(), chain)
                claimed = await self.claims.claim(
                    views, model, exclude, chain, self.balance if chain else None, self.recent_secs
                )
                if claimed is not None:
                    return self._held(claimed, chain)
                if not queued:
                    if self.waiting >= self.max_queue:
                        raise TooManyRequests(
                            f"every node with '{model}' is busy and the queue is full"
                        )
                    self.waiting += 1
                    queued = True
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(
                        f"every node with '{model}' stayed busy for {self.queue_timeout:.0f}s"
                    )
                async with self._changed:
                    if self._generation == seen:
                        # the timeout also covers nodes coming back online, which notify nobody
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._changed.wait(), timeout=min(left, 1.0))
        finally:
            if queued:
                self.waiting -= 1

    def _held(self, claimed: Claimed, chain: list[Point]) -> Held:
        node = self.nodes.nodes[claimed.chosen.id]
        node.in_flight += 1
        node.last_used = time.monotonic()
        if chain and self.balance is not None:
            self.prefix_outcomes[outcome(claimed.pool, claimed.chosen)] += 1
            affinity.remember(node, chain, self.recent_secs)
        return Held(node, claimed.claim_id)

    def release(self, held: Held, ok: bool, node_fault: bool = True) -> None:
        """Synchronous, so that it also runs in the `finally` of a cancelled request.

        A failed request (`ok` False) counts as the node's error; only a `node_fault` (it
        could not be reached, dropped the connection, went silent, was too busy) cools it
        down. A request that failed on a working node (a 500 for a model that crashed on
        it) is the request's doing: other requests keep going there."""
        if held.released:
            return
        held.released = True
        node = held.node
        node.in_flight = max(0, node.in_flight - 1)
        self.claims.release(held.claim_id)
        node.requests += 1
        if ok:
            node.failures, node.cool_until = 0, 0.0
        elif not node_fault:
            node.errors += 1
        else:
            node.errors += 1
            node.failures += 1
            node.cool_until = time.monotonic() + min(
                COOL_MAX, COOL_FIRST * 2 ** min(node.failures - 1, 8)
            )
        self.wake()

    def wake(self) -> None:
        """A place may have come free: waiting requests try again. (One that is about to
        wait sees the generation change and does not; so without waiters, no task.)"""
        self._generation += 1
        if self.waiting:
            asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()
