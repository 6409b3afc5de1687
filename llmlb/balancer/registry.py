"""Registered nodes, their health, and the router's claims on them.

Node states follow the contract: a heartbeat makes a node Running (also from Stopped or
Error: a restart), a goodbye makes it Stopped, and a Running node that stops sending
heartbeats and no longer answers probes ends in Error (it crashed). A Running node whose
heartbeats are late is shown offline and gets no traffic until they resume.

The registry in memory is what requests use; the database holds it for restarts and, when
several routers share one database, for each other (writes and reads: balancer/shared.py).
Claims on nodes are this router's counters, or Redis's when LLMLB_REDIS_URL is set
(balancer/claims.py), so that LLMLB_NODE_MAX_IN_FLIGHT holds across routers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from datetime import datetime
from typing import Any

import msgspec

from llmlb import prefix
from llmlb.balancer import affinity
from llmlb.balancer.claims import ClaimsDown, SharedClaims
from llmlb.balancer.nodes import Held, NodeEntry, heartbeat_of, now_utc
from llmlb.balancer.policy import (
    NodeView,
    Saturated,
    any_node,
    candidates,
    choose,
    outcome,
    ranked,
    tier,
)
from llmlb.balancer.wire import Heartbeat
from llmlb.errors import ModelNotFound, TooManyRequests, Unavailable
from llmlb.prefix import Point
from llmlb.store.router_models import RouterNode
from llmlb.store.router_state import NodeWrite

log = logging.getLogger("llmlb.router")
PROBE_FAILURES_FOR_ERROR = 2
# A node that fails a request (unreachable, dropped or silent, 503/429) cools down: 1 s, doubling
# with each further failure in a row, up to 30 s. Without it, a dead node that is still "online" until its
# heartbeats time out has the fewest requests in flight and would be every request's first try.
COOL_FIRST, COOL_MAX = 1.0, 30.0


class Registry:
    def __init__(
        self,
        capacity: int,
        timeout: float,
        max_queue: int,
        queue_timeout: float,
        claims: SharedClaims | None = None,
        balance: int | None = None,
    ):
        """`balance`: prefix routing's threshold (balancer/policy.py); None: no prefix routing."""
        self.capacity = capacity
        self.balance = balance
        self.recent_secs = 2 * timeout  # what a request leaves on its node, until beats tell
        self.prefix_outcomes = {"hit": 0, "balanced": 0, "miss": 0}
        self.timeout = timeout
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.claims = claims
        self.nodes: dict[str, NodeEntry] = {}
        self.waiting = 0
        # rows to write: node id -> "beat" (a heartbeat came), "state" or "error"
        self.unwritten: dict[str, str] = {}
        self._skipped: set[tuple[str, Any]] = set()  # bad rows already reported
        self._generation = 0  # bumped by every release: a waiter that saw it change retries
        self._changed = asyncio.Condition()
        if claims is not None:
            claims.on_release = self.wake
            claims.known_nodes = lambda: list(self.nodes)

    # -- views ----------------------------------------------------------------
    def online(self, node: NodeEntry) -> bool:
        return node.status == "Running" and time.monotonic() - node.last_seen <= self.timeout

    def label(self, node: NodeEntry) -> str:
        if self.online(node):
            return "online"
        return "error" if node.status == "Error" else "offline"

    def cooling(self, node: NodeEntry) -> bool:
        return node.cool_until > time.monotonic()

    def cluster_in_flight(self, node: NodeEntry) -> int | None:
        """Claims on the node across every router (Redis's count), None without Redis."""
        if self.claims is None:
            return None
        return self.claims.counts.get(node.id, 0)

    def views(self, shared: bool = False, chain: list[Point] | None = None) -> list[NodeView]:
        counts = self.claims.counts if shared and self.claims is not None else None
        now = time.monotonic()
        return [
            NodeView(
                n.id,
                self.online(n),
                frozenset(n.names().values()),
                frozenset(n.loaded),
                max(n.in_flight, counts.get(n.id, 0)) if counts is not None else n.in_flight,
                self.capacity,
                n.last_used,
                max(0, n.vram_total_bytes - n.vram_used_bytes),
                self.cooling(n),
                affinity.matched(n, chain, now) if chain else 0,
            )
            for n in self.nodes.values()
        ]

    def any_node(self, model: str, exclude: frozenset[str] = frozenset()) -> NodeEntry:
        """An online node with the model, without a claim: for cheap reads such as /api/show."""
        view = any_node(self.views(), model, exclude)
        if view is None:
            raise Unavailable(f"no online node has model '{model}'")
        return self.nodes[view.id]

    def canonical(self, model: str) -> str:
        """A model's full name from any node's names and aliases; online nodes first."""
        for node in sorted(self.nodes.values(), key=lambda n: not self.online(n)):
            full = node.names().get(model)
            if full:
                return full
        raise ModelNotFound(model)

    # -- node lifecycle ---------------------------------------------------------
    def load(self, rows: list[RouterNode]) -> None:
        """Nodes known from the last run: offline until they send a heartbeat."""
        for row in rows:
            node = self._from_row(row)
            if node is not None:
                node.last_seen = 0.0

    def apply_rows(self, rows: list[RouterNode], db_now: datetime, read_at: float) -> None:
        """Rows read from the database that routers share (at `read_at`, monotonic): take
        those another router changed. A node this router has changed since is kept as it is
        here: its own write is on the way, or landed after the read."""
        now = time.monotonic()
        for row in rows:
            node = self.nodes.get(row.id)
            if node is not None and (
                node.updated_at == row.updated_at
                or node.id in self.unwritten
                or node.written_at >= read_at
            ):
                continue
            was = node.status if node is not None else None
            node = self._from_row(row)
            if node is None:
                continue
            node.last_seen = now - max(0.0, (db_now - row.last_seen).total_seconds())
            if self.online(node):
                node.failed_probes = 0  # another router hears it: our failed probes are moot
            if was is None:
                log.info(
                    "node %s at %s:%s known from the shared database",
                    node.id[:8],
                    node.host,
                    node.port,
                )
            elif node.status == "Running" and was != "Running":
                node.failures, node.cool_until = 0, 0.0  # restarted: a fresh start
            elif node.status == "Error" and was == "Running":
                log.warning("node %s is in Error (another router's probes)", node.id[:8])

    def _from_row(self, row: RouterNode) -> NodeEntry | None:
        """A stored node into the registry; a row that does not hold a valid node (written by
        an older version, or edited by hand) is skipped, and said so once."""
        try:
            beat = heartbeat_of(row)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            if (row.id, row.updated_at) not in self._skipped:
                self._skipped.add((row.id, row.updated_at))
                log.warning(
                    "skipping node %r from the router's database: it is not a valid node (%s)",
                    row.id,
                    exc,
                )
            return None
        node = self.nodes.get(beat.id) or NodeEntry(id=beat.id, host=beat.host, port=beat.port)
        self._apply(node, beat)
        node.status = row.status
        node.last_seen_at, node.registered_at = row.last_seen, row.registered_at
        node.updated_at = row.updated_at
        self.nodes[node.id] = node
        return node

    def heartbeat(self, beat: Heartbeat) -> NodeEntry:
        """A validated heartbeat (wire.Heartbeat) makes its node Running."""
        node = self.nodes.get(beat.id)
        if node is None:
            node = NodeEntry(id=beat.id, host=beat.host, port=beat.port, registered_at=now_utc())
            self.nodes[beat.id] = node
            log.info("node %s registered from %s:%s", beat.id[:8], beat.host, beat.port)
        elif node.status != "Running" or not self.online(node):
            log.info("node %s is back (%s -> Running)", beat.id[:8], node.status)
            node.failures, node.cool_until = 0, 0.0  # restarted: a fresh start
        self._apply(node, beat)
        node.status = "Running"
        node.last_seen, node.last_seen_at, node.failed_probes = time.monotonic(), now_utc(), 0
        self.unwritten[node.id] = "beat"
        held = prefix.unpack(beat.prefixes)
        node.prefixes = frozenset(held)
        node.prompt_tokens = (
            beat.prompt_tokens_cached,
            beat.prompt_tokens_restored,
            beat.prompt_tokens_computed,
        )
        if self.claims is not None and self.balance is not None:
            self.claims.publish_held(node.id, held)
        return node

    def alive(self, node: NodeEntry) -> None:
        """The node answered a probe while its heartbeats cannot be known (the shared database
        is down, and they may go to another router): keep it online."""
        node.last_seen, node.failed_probes = time.monotonic(), 0

    @staticmethod
    def _apply(node: NodeEntry, beat: Heartbeat) -> NodeEntry:
        node.host, node.port = beat.host, beat.port
        node.models = [
            {"name": m.name, "alias": m.alias, "created": m.created} for m in beat.models
        ]
        node.loaded = list(beat.loaded_models)
        node.node_in_flight, node.node_queued = beat.in_flight, beat.queued
        node.vram_total_bytes, node.vram_used_bytes = beat.vram_total_bytes, beat.vram_used_bytes
        node.gpu_name, node.gpu_temperature = beat.gpu_name, beat.gpu_temperature
        node.uptime_secs = beat.uptime_secs
        return node

    def stopped(self, node_id: str) -> None:
        node = self.nodes.get(node_id)
        if node is not None:
            node.status = "Stopped"
            log.info("node %s stopped", node_id[:8])
            if self.unwritten.get(node_id) != "beat":  # a pending beat writes the status too
                self.unwritten[node_id] = "state"

    def take_writes(self) -> tuple[list[NodeWrite], list[str], dict[str, str]]:
        """The rows to write now (heartbeats and states), the nodes to mark Error, and what
        was taken (to give back with `untake` should the write fail)."""
        taken, self.unwritten = self.unwritten, {}
        rows, errors = [], []
        for node_id, kind in taken.items():
            node = self.nodes.get(node_id)
            if node is None:
                continue
            if kind == "error":
                errors.append(node_id)
                continue
            rows.append(
                NodeWrite(
                    id=node.id,
                    fields={
                        "host": node.host,
                        "port": node.port,
                        "status": node.status,
                        "gpu_name": node.gpu_name,
                        "vram_total_bytes": node.vram_total_bytes,
                        "vram_used_bytes": node.vram_used_bytes,
                        "gpu_temperature": node.gpu_temperature,
                        "uptime_secs": node.uptime_secs,
                        "models": node.models,
                        "loaded_models": node.loaded,
                    },
                    registered_at=node.registered_at or now_utc(),
                    heartbeat=kind == "beat",
                )
            )
        return rows, errors, taken

    def untake(self, taken: dict[str, str]) -> None:
        """Writes that failed: owed again, unless something newer is owed for the node."""
        for node_id, kind in taken.items():
            self.unwritten.setdefault(node_id, kind)

    def written(self, taken: dict[str, str]) -> None:
        now = time.monotonic()
        for node_id in taken:
            node = self.nodes.get(node_id)
            if node is not None:
                node.written_at = now

    def quiet(self, secs: float) -> list[NodeEntry]:
        """Running nodes not heard from for `secs`, whether or not yet offline."""
        since = time.monotonic() - secs
        return [n for n in self.nodes.values() if n.status == "Running" and n.last_seen < since]

    def stale(self) -> list[NodeEntry]:
        return [n for n in self.nodes.values() if n.status == "Running" and not self.online(n)]

    def probe_failed(self, node: NodeEntry) -> bool:
        """Count a failed probe; True when the node just moved to Error."""
        node.failed_probes += 1
        if node.failed_probes >= PROBE_FAILURES_FOR_ERROR and node.status == "Running":
            node.status = "Error"
            log.warning(
                "node %s at %s:%s stopped answering: Error", node.id[:8], node.host, node.port
            )
            self.unwritten.setdefault(node.id, "error")
            return True
        return False

    # -- claims -------------------------------------------------------------
    def _claim_here(self, model: str, exclude: frozenset[str], chain: list[Point]) -> Held | None:
        """Claim with this router's counters: synchronous, so the check and the claim are one
        step on the event loop. None when every candidate is full."""
        views = self.views(chain=chain)
        balance = self.balance if chain else None
        try:
            view = choose(views, model, exclude, balance)
        except Saturated:
            return None
        if view is None:
            raise Unavailable(f"no online node has model '{model}'")
        return self._held(view.id, chain, candidates(views, model, exclude), view)

    def _held(
        self, node_id: str, chain: list[Point], pool: list[NodeView], chosen: NodeView
    ) -> Held:
        node = self.nodes[node_id]
        node.in_flight += 1
        node.last_used = time.monotonic()
        if chain and self.balance is not None:
            self.prefix_outcomes[outcome(pool, chosen)] += 1
            affinity.remember(node, chain, self.recent_secs)
        return Held(node)

    async def _claim_shared(
        self, model: str, exclude: frozenset[str], chain: list[Point]
    ) -> Held | None:
        """Claim in Redis: one script call takes the first candidate with room across all
        routers (with prefix routing, the holder of the longest prefix by the sets every
        router publishes there). Falls back to this router's counters when Redis does not
        answer."""
        assert self.claims is not None
        pool = ranked(self.views(shared=True, chain=chain), model, exclude)
        if not pool:
            raise Unavailable(f"no online node has model '{model}'")
        balance = self.balance if chain else None
        try:
            index, claim_id, held = await self.claims.claim(
                [v.id for v in pool],
                [tier(v, model) for v in pool],
                chain if balance is not None else [],
                balance or 0,
                self.recent_secs,
            )
        except ClaimsDown:
            return self._claim_here(model, exclude, chain)
        if claim_id is None:
            return None
        if held is not None:  # what every router knows, as Redis counted it
            pool = [dataclasses.replace(v, matched=m) for v, m in zip(pool, held, strict=True)]
        result = self._held(pool[index].id, chain if balance is not None else [], pool, pool[index])
        result.claim_id = claim_id
        return result

    async def acquire(
        self, model: str, exclude: frozenset[str] = frozenset(), chain: list[Point] | None = None
    ) -> Held:
        """Claim a node for `model`, waiting in a bounded queue while every candidate is full.

        A waiter notes the release generation before it tries; when a release came in between
        (any router's, with Redis), it tries again at once instead of waiting, so a freed node
        is never missed.
        """
        deadline = time.monotonic() + self.queue_timeout
        queued = False
        try:
            while True:
                seen = self._generation
                if self.claims is not None and self.claims.up:
                    held = await self._claim_shared(model, exclude, chain or [])
                else:
                    held = self._claim_here(model, exclude, chain or [])
                if held is not None:
                    return held
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
        if held.claim_id is not None and self.claims is not None:
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
